"""collapse-sweep: recursive-training (model collapse) experiments, from one chain to a
distributed Optuna search on Ray Tune.

    from sweep import load_config, run_chain, run_chains, run_sweep, load_sweep
    df = run_chain(load_config({"recursion": {"regime": "accumulate"}}))
    result = run_sweep("configs/analytic-sweep.yaml")   # a SweepResult; Ray starts here
    result.results, result.answer_text, result.run_dir

The names load on first use (PEP 562): ``import sweep`` imports neither Ray nor torch, so
the CLI and a notebook that only reads results start fast; ``run_sweep`` / ``resume_sweep``
import Ray when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SweepResult": "sweep.api", "load_sweep": "sweep.api", "resume_sweep": "sweep.api",
    "run_sweep": "sweep.api",
    "ChainConfig": "sweep.config", "ConfigError": "sweep.config", "load_config": "sweep.config",
    "Chain": "sweep.engine.chain", "run_chain": "sweep.engine.chain",
    "run_chains": "sweep.engine.chain",
}
__all__ = ["Chain", "ChainConfig", "ConfigError", "SweepResult", "load_config", "load_sweep",
           "resume_sweep", "run_chain", "run_chains", "run_sweep"]

if TYPE_CHECKING:
    from sweep.api import SweepResult, load_sweep, resume_sweep, run_sweep
    from sweep.config import ChainConfig, ConfigError, load_config
    from sweep.engine.chain import Chain, run_chain, run_chains


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
