"""The typed configuration of a chain or a sweep: schema, loading, one-line errors.

    from sweep.config import load_config
    cfg = load_config("configs/quick.yaml", ["recursion.regime=accumulate"])
"""

from __future__ import annotations

from sweep.config.errors import ConfigError, format_validation_error
from sweep.config.load import (
    base_tree,
    dump_config,
    load_config,
    parse_override,
    read_yaml,
    set_path,
    trial_config,
)
from sweep.config.schema import GPT_SIZES, LM_SAMPLES, ChainConfig, CollapseConfig

__all__ = [
    "GPT_SIZES", "LM_SAMPLES", "ChainConfig", "CollapseConfig", "ConfigError", "dump_config",
    "base_tree", "format_validation_error", "load_config", "parse_override", "read_yaml",
    "set_path", "trial_config",
]
