"""cluster.yaml validates offline against Ray's autoscaler schema, with our security rules."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_validates():
    _validate(_load())


def test_cluster_yaml_rules():
    cfg = _load()
    nodes = cfg["available_node_types"]
    head = nodes[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # no trial on the head
    workers = [n for name, n in nodes.items() if name != cfg["head_node_type"]]
    assert workers and all(n["resources"].get("GPU", 0) >= 1 for n in workers)
    assert any(n["node_config"]["InstanceType"] == "g5.xlarge"
               and n["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for n in workers)
    assert any("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])
    setup = " ".join(cfg["setup_commands"])
    assert "pip install" in setup and "cu12" in setup and "-e ~/collapse-sweep" in setup
    assert "RAY_AUTH_MODE=disabled" not in (ROOT / "cluster.yaml").read_text()


def test_validator_catches_misspelled_key():
    cfg = _load()
    cfg["max_worker"] = cfg.pop("max_workers")
    with pytest.raises(Exception):  # noqa: B017 - jsonschema's ValidationError
        _validate(cfg)
