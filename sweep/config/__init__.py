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
    parse_yaml,
    read_yaml,
    set_path,
    trial_config,
)
from sweep.config.plugins import FAMILIES, SCORERS, SOURCES, PluginError, Registry
from sweep.config.schema import ChainConfig, CollapseConfig, FamilyConfig, Section, SourceConfig

__all__ = [
    "FAMILIES", "SCORERS", "SOURCES", "ChainConfig", "CollapseConfig", "ConfigError",
    "FamilyConfig", "PluginError", "Registry", "Section", "SourceConfig", "base_tree", "dump_config",
    "format_validation_error", "load_config", "parse_override", "parse_yaml", "read_yaml",
    "set_path",
    "trial_config",
]
