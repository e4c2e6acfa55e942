"""collapse-sweep: recursive-training (model collapse) experiments, from one chain to a
distributed Optuna search on Ray Tune.

    from sweep import load_config, run_chain, run_chains
    df = run_chain(load_config({"recursion": {"regime": "accumulate"}}))
"""

from __future__ import annotations

from sweep.config import ChainConfig, ConfigError, load_config
from sweep.engine.chain import Chain, run_chain, run_chains

__all__ = ["Chain", "ChainConfig", "ConfigError", "load_config", "run_chain", "run_chains"]
