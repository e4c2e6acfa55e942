"""cluster.yaml validates offline against Ray's autoscaler schema and keeps our rules.

What is checked without AWS: Ray's own schema; the AMI and instance types have a real
shape (and the worker's declared CPU/GPU match its instance type); the head runs no trial;
the Ray token is generated on the head, copied to the workers and required everywhere;
the dashboard binds 127.0.0.1; the security group is the one deploy/aws_setup.py makes
and nothing is open to the world; torch comes from PyPI (no other index); the cluster
extra installs ray[default] + boto3; the documented sweep stores to S3.
(tests/test_aws_setup.py runs the group / IAM / bucket setup against a local moto.)
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "cluster.yaml").read_text()

# (vCPUs, GPUs) of the EC2 instance types a worker may declare; Ray's `resources` must
# match what the instance has, or the autoscaler launches nodes that cannot host a trial.
INSTANCE_SHAPES = {
    "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g5.4xlarge": (16, 1), "g5.12xlarge": (48, 4),
    "g5.48xlarge": (192, 8), "g6.xlarge": (4, 1), "g6.2xlarge": (8, 1), "g6e.xlarge": (4, 1),
    "g4dn.xlarge": (4, 1), "p4d.24xlarge": (96, 8), "p5.48xlarge": (192, 8),
    "m5.large": (2, 0), "m5.xlarge": (4, 0), "m6i.large": (2, 0),
}
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.(nano|micro|small|medium|large|metal|\d*xlarge)$")
AMI_ID = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")
DLAMI_SSM = re.compile(r"^resolve:ssm:/aws/service/deeplearning/ami/x86_64/"
                       r"base-oss-nvidia-driver-gpu-ubuntu-\d\d\.\d\d/latest/ami-id$")


def _load() -> dict:
    return yaml.safe_load(TEXT)


def _validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def _nodes(cfg: dict) -> tuple[dict, list[dict]]:
    nodes = cfg["available_node_types"]
    head = nodes[cfg["head_node_type"]]
    return head, [n for k, n in nodes.items() if k != cfg["head_node_type"]]


def test_cluster_yaml_validates():
    _validate(_load())


def test_validator_catches_misspelled_key():
    cfg = _load()
    cfg["max_worker"] = cfg.pop("max_workers")
    with pytest.raises(Exception):  # noqa: B017 - jsonschema's ValidationError
        _validate(cfg)


def test_amis_and_instance_types_have_a_real_shape():
    cfg = _load()
    for key, node in cfg["available_node_types"].items():
        nc = node["node_config"]
        assert INSTANCE_TYPE.match(nc["InstanceType"]), (key, nc["InstanceType"])
        assert nc["InstanceType"] in INSTANCE_SHAPES, f"{key}: add {nc['InstanceType']} to the table"
        ami = nc["ImageId"]
        assert AMI_ID.match(ami) or DLAMI_SSM.match(ami), (key, ami)
        # x86_64 image: every listed family (g4dn, g5, g6, p4d, p5, m5, m6i) is x86_64
        assert "arm64" not in ami and not re.match(r"^[a-z]+\dg", nc["InstanceType"])
    # one image everywhere: Ray needs the same Python on every node
    assert len({n["node_config"]["ImageId"] for n in cfg["available_node_types"].values()}) == 1


def test_worker_resources_match_their_instance_type():
    head, workers = _nodes(_load())
    assert workers
    for w in workers:
        vcpus, gpus = INSTANCE_SHAPES[w["node_config"]["InstanceType"]]
        assert gpus >= 1 and w["resources"] == {"CPU": vcpus, "GPU": gpus}
    assert any(w["node_config"]["InstanceType"] == "g5.xlarge"
               and w["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
               for w in workers)


def test_head_runs_no_trial():
    cfg = _load()
    head, _ = _nodes(cfg)
    assert head["resources"] == {"CPU": 0}
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "--autoscaling-config=~/ray_bootstrap_config.yaml" in start


def test_token_made_on_head_copied_to_workers_required_everywhere():
    cfg = _load()
    assert any("ray get-auth-token --generate" in c and "chmod 600 ~/.ray/auth_token" in c
               for c in cfg["head_setup_commands"])
    assert "~/.ray/auth_token" in cfg["cluster_synced_files"]
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert any("test -s ~/.ray/auth_token" in c for c in cfg["worker_start_ray_commands"])
    assert any("RAY_AUTH_MODE=token" in c for c in cfg["setup_commands"])  # drivers, shells
    assert "RAY_AUTH_MODE=disabled" not in TEXT


def test_trial_processes_start_with_the_worker_environment():
    """A worker's `ray start` sets sweep.engine.allocator.WORKER_ENV (one malloc arena):
    the trial processes it starts inherit it, as a local Ray's do."""
    from sweep.engine.allocator import WORKER_ENV

    (start,) = [c for c in _load()["worker_start_ray_commands"] if "ray start" in c]
    assert all(f"{k}={v} " in start for k, v in WORKER_ENV.items()), start


def test_dashboard_binds_loopback():
    cfg = _load()
    head_start = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    assert all("--dashboard-host=127.0.0.1" in c for c in head_start)
    settings = yaml.safe_dump(cfg)  # the settings, not the comments
    assert "0.0.0.0" not in settings and "::/0" not in settings  # nothing world-open


def test_security_group_is_the_prepared_one():
    cfg = _load()
    sg = cfg["provider"]["security_group"]
    assert sg["GroupName"] == "collapse-sweep"
    assert "IpPermissions" not in sg  # extra rules would be added next to Ray's defaults
    for node in cfg["available_node_types"].values():
        # ids would be account-specific; the group is found by name (deploy/aws_setup.py)
        assert "SecurityGroupIds" not in node["node_config"]
        assert node["node_config"]["IamInstanceProfile"]["Name"].startswith("collapse-sweep-")


def test_setup_installs_a_torch_and_extras_that_exist():
    cfg = _load()
    setup = cfg["setup_commands"]
    torch_cmd = [c for c in setup if "torch==" in c]
    assert torch_cmd == ["~/venv/bin/pip install -q torch==2.13.0"]  # PyPI: the CUDA 13.0 wheel
    assert not any("--index-url" in c or "--extra-index-url" in c for c in setup)
    assert any('-e "$HOME/collapse-sweep[cluster]"' in c for c in setup)
    assert any("torch.version.cuda" in c for c in setup)  # a CPU-only torch stops the setup
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is 3.11+, we support 3.10)
    cluster = re.search(r"^cluster = \[(.*)\]$", pyproject, re.M).group(1)
    ray_pin = re.search(r'"ray\[tune\]==([\d.]+)"', pyproject).group(1)
    assert f'"ray[default]=={ray_pin}"' in cluster and '"boto3' in cluster


def test_rsync_keeps_local_state_off_the_nodes():
    cfg = _load()
    assert {".venv", "runs"} <= set(cfg["rsync_exclude"])
    assert cfg["file_mounts"] == {"/home/ubuntu/collapse-sweep": "."}


def test_documented_sweep_stores_to_s3():
    submit = re.search(r"collapse-sweep run configs/cluster-gpu\.yaml .*", TEXT)
    assert submit and "--storage s3://" in submit.group(0)
