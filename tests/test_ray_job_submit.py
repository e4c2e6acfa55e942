"""The README's cluster walkthrough, as far as one machine allows.

A head is started exactly as cluster.yaml starts one: its head_setup_commands make the
token (in a throwaway HOME, the head's), its head_start_ray_commands start Ray (token auth,
no CPUs, dashboard on 127.0.0.1), with only the ports, the temp dir (so that no other
Ray on this machine is touched) and the autoscaler config (no cloud here) replaced. Then
the laptop side (another HOME, the token copied as `ray rsync-down` would) submits a job:
accepted with the token, refused without it or with a wrong one. Clean-up stops only the
processes of this head (found by its temp dir), never `ray stop`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import yaml

from tests.processes import free_ports, stop_processes

pytestmark = pytest.mark.slow  # a real head and three job submissions: ~30-60 s

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--node-manager-port",
              "--object-manager-port", "--metrics-export-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port")

#: Ports for the head's worker processes (Ray's driver, job supervisors and their workers).
WORKER_PORTS = 21


def _local(cmd: str) -> str:
    """A cluster.yaml command with the node's venv replaced by this interpreter's."""
    return cmd.replace("~/venv/bin/", f"{BIN}/")


def _head_start(temp_dir: str, ports: dict[str, int], workers: list[int]) -> str:
    (cmd,) = [c for c in CLUSTER["head_start_ray_commands"] if "ray start" in c]
    cmd = _local(cmd)
    for flag in ("--head", "--num-cpus=0", "--dashboard-host=127.0.0.1"):
        assert flag in cmd.split()
    cmd = cmd.replace(" --autoscaling-config=~/ray_bootstrap_config.yaml", "")
    cmd = re.sub(r"--port=\d+", "", cmd)
    extra = " ".join(f"{flag}={port}" for flag, port in ports.items())
    # the workers' ports picked free with the others (a --min/max-worker-port range of
    # consecutive ports once held the metrics port picked for this very head)
    return (f"{cmd} {extra} --worker-port-list={','.join(map(str, workers))} "
            f"--temp-dir={temp_dir} --disable-usage-stats")


@pytest.fixture(scope="module")
def head():
    temp_dir = tempfile.mkdtemp(prefix="rjs", dir="/tmp")  # short: Ray's socket paths
    head_home = Path(temp_dir) / "head-home"
    head_home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_") or k in ("RAY_DEDUP_LOGS",)}
    env["HOME"] = str(head_home)
    env["PYTHONPATH"] = str(ROOT)
    for cmd in CLUSTER["head_setup_commands"]:  # the token, as on the head
        subprocess.run(_local(cmd), shell=True, check=True, env=env, capture_output=True)
    token = head_home / ".ray" / "auth_token"
    names = [f.lstrip("-").replace("-", "_") for f in PORT_FLAGS]
    picked = free_ports(len(PORT_FLAGS) + WORKER_PORTS)
    ports = dict(zip(PORT_FLAGS, picked, strict=False))
    try:
        start = subprocess.run(["bash", "-c", _head_start(temp_dir, ports,
                                                          picked[len(PORT_FLAGS):])], env=env,
                               capture_output=True, text=True, timeout=180)
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        yield {"temp_dir": temp_dir, "token": token, "ports": dict(zip(names, ports.values(),
                                                                         strict=True)),
               "address": f"http://127.0.0.1:{ports['--dashboard-port']}"}
    finally:
        stop_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _laptop_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "laptop-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), **extra)
    return env


def _submit(head, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import ray; ray.init(); print('JOB-OK', ray.cluster_resources().get('CPU', 0.0))"
    return subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", head["address"], "--",
         sys.executable, "-c", code],
        env=env, capture_output=True, text=True, timeout=180)


def test_token_is_private_and_dashboard_on_loopback(head):
    assert head["token"].stat().st_mode & 0o777 == 0o600
    assert len(head["token"].read_text().strip()) >= 32
    port = head["ports"]["dashboard_port"]
    listening = [c for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}


def test_job_submit_with_the_token_runs(head, tmp_path):
    copy = tmp_path / "collapse-sweep.token"  # what `ray rsync-down` leaves on the laptop
    shutil.copyfile(head["token"], copy)
    env = _laptop_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(copy))
    out = _submit(head, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "JOB-OK 0.0" in out.stdout  # ran on the head, which offers trials no CPU
    assert "succeeded" in (out.stdout + out.stderr)


def test_job_submit_without_the_token_is_refused(head, tmp_path):
    for env in (_laptop_env(tmp_path, RAY_AUTH_MODE="token"),  # no token anywhere
                _laptop_env(tmp_path),  # auth mode not set either
                _laptop_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32)):  # wrong
        out = _submit(head, env)
        text = out.stdout + out.stderr
        assert out.returncode != 0, text[-3000:]
        assert "JOB-OK" not in text
        assert re.search(r"401|[Aa]uthenticat|[Uu]nauthori", text), text[-3000:]
