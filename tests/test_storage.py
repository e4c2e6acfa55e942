"""Storage without a shared disk: ``--storage s3://bucket/prefix`` against a local S3 (moto).

A ``moto_server`` on 127.0.0.1 is the S3; endpoint and dummy keys reach pyarrow (and Ray
Tune) through the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...).
The fast tests cover the storage helpers and a trial's uploads without Ray; the slow ones
are issue 13's "Done when": a sweep through the CLI whose driver is SIGKILLed and resumed
from the URI, then analyzed and reported from it, with nothing written under the working
directory; and a two-node sweep whose worker node runs in its own mount namespace (a
private tmpfs over the run's cache), so that it cannot see the driver's run directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest

from sweep.config import dump_config, load_config
from sweep.files.atomic import write_text
from sweep.files.study import load_study
from sweep.rundir.ledger import Ledger
from sweep.rundir.storage import CACHE_ENV, RunStorage, cache_dir, is_uri, join, pull_run, push_run
from tests.processes import free_ports, kill_session, own_processes, stop_processes

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "collapse-test"


@contextlib.contextmanager
def _moto() -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 with the bucket made; yields the client environment."""
    port = free_ports(1)[0]
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.time() < deadline, "moto_server did not start"
            time.sleep(0.1)
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    with _moto() as env:
        yield env


@pytest.fixture
def s3_env(s3, monkeypatch, tmp_path):
    """This process as a client of the moto S3, with its cache under tmp_path."""
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return s3


def tiny(name: str, *, trials: int = 4, generations: int = 6, seeds: int = 1):
    return load_config({
        "name": name, "seed": 3, "model": {"family": "gaussian"},
        "recursion": {"generations": generations, "samples_per_generation": 50},
        "curation": {"scorer": "self"},
        "collapse": {"metric": "real_nll", "tolerance": 0.05},
        "search": {"sampler": "grid", "trials": trials, "concurrency": 2, "seeds": seeds,
                   "check": False,  # the health check is tested elsewhere; not storage
                   "confirm": {"top": 0}, "space": {
                       "recursion.regime": {"choice": ["replace", "accumulate"]},
                       "recursion.real_fraction": {"grid": [0.0, 0.5]}}},
        "resources": {"cpu": 1, "gpu": 0},
    })


# --------------------------------------------------------------------------- fast units
def test_uri_and_cache_paths(monkeypatch, tmp_path):
    assert is_uri("s3://b/p") and is_uri("gs://b") and not is_uri("runs") and not is_uri("/mnt/x")
    assert join("s3://b/p/", "name") == "s3://b/p/name"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    a, b = cache_dir("s3://b/p/one"), cache_dir("s3://b/q/one")
    assert a.name == b.name == "one" and a.parent != b.parent and a.parent.parent == tmp_path


def test_storage_round_trip_and_pull_skips_finished_checkpoints(s3_env, tmp_path):
    storage = RunStorage(f"s3://{BUCKET}/unit/run")
    storage.check_writable()
    local = tmp_path / "local"
    for rel in ("sweep.yaml", "results.parquet", "trials/a/generations.parquet",
                "trials/a/ckpt/chain.pt", "trials/b/ckpt/chain.pt", "cache/k/chain.pt",
                "tune/state.pkl"):
        write_text(local / rel, rel)
    Ledger(local).append("done", key="k", trial_id="a")
    assert push_run(local, storage) == 3  # sweep.yaml, results.parquet, ledger.jsonl
    assert push_run(local, storage) == 0  # unchanged: nothing sent again
    assert storage.put_tree(local / "trials", "trials") == 3
    assert not storage.exists("cache/k/chain.pt") and not storage.exists("tune/state.pkl")

    fresh = tmp_path / "fresh"
    pull_run(storage, fresh, checkpoints="unfinished")
    got = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file())
    assert got == ["ledger.jsonl", "results.parquet", "sweep.yaml",
                   "trials/a/generations.parquet", "trials/b/ckpt/chain.pt"]
    assert (fresh / "trials/a/generations.parquet").read_text() == "trials/a/generations.parquet"
    assert storage.get_tree("", fresh, keep=lambda sub: "ckpt" not in sub) == 0  # unchanged
    storage.delete()
    assert storage.files() == []


def test_unreachable_bucket_is_one_line(s3_env, tmp_path, capsys):
    from sweep.cli.main import main

    cfg = write_text(tmp_path / "c.yaml", dump_config(tiny("nobucket")))
    code = main(["run", str(cfg), "--storage", "s3://no-such-bucket/runs", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("collapse-sweep: error: --storage: s3://no-such-bucket")
    code = main(["analyze", f"s3://{BUCKET}/nothing/here"])
    assert code == 2 and "not a sweep directory" in capsys.readouterr().err


def test_trial_uploads_its_files_and_resumes_from_the_storage(s3_env, tmp_path, monkeypatch):
    """No Ray: a trial given the storage uploads config, checkpoint, table and events before
    its done record; a rerun on a node whose cache is empty resumes from the storage."""
    import sweep.search.trial
    from sweep.search.trial import run_trial

    cfg = tiny("upload", generations=4)
    uri = f"s3://{BUCKET}/unit/upload"
    storage = RunStorage(uri)
    local = cache_dir(uri)
    params = {"recursion.regime": "replace", "recursion.real_fraction": 0.5}
    done_seen: list[bool] = []
    ledger = Ledger(local)

    class Checking:  # the keeper's view: at `done`, the trial's files are in the storage
        def append(self, event, **fields):
            if event == "done":
                done_seen.append(storage.exists("trials/t1/generations.parquet")
                                 and storage.exists("trials/t1/ckpt/chain.pt"))
            ledger.append(event, **fields)

        def done(self, key):
            return ledger.done(key)

        def started(self, key):
            return ledger.started(key)

        def claim(self, key, **fields):
            return ledger.claim(key, **fields)

    record = run_trial(local, params, trial_id="t1", number=0, node="n", base=cfg,
                       report=lambda m, c: None, ledger=Checking(), storage=storage)
    assert done_seen == [True] and record["status"] in ("finished", "stopped_collapsed")
    names = {sub for sub, _, _ in storage.files("trials/t1")}
    assert {"config.yaml", "generations.parquet", "ckpt/chain.pt"} <= names
    assert any(n.startswith("tb/") for n in names)
    assert any(sub.endswith("chain.pt") for sub, _, _ in storage.files("cache"))

    # the chain was cut short before its end record on another node: only the storage has it
    lines = ledger.path.read_text().splitlines()
    ledger.path.write_text("\n".join(line for line in lines if '"done"' not in line) + "\n")
    shutil.rmtree(local / "trials")
    calls = []
    def no_step(self, **kwargs):
        calls.append(1)
        raise AssertionError("a finished chain ran a generation again")

    monkeypatch.setattr(sweep.search.trial.Chain, "step", no_step)
    again = run_trial(local, params, trial_id="t1", number=0, node="m", base=cfg,
                      report=lambda m, c: None, ledger=ledger, storage=storage)
    assert calls == [] and again["quality_gap"] == record["quality_gap"]
    assert [r["event"] for r in ledger.records()] == ["start", "resume", "done"]


# --------------------------------------------------------------------------- slow: the CLI
def _cli(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 240
         ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_s3_sweep_killed_resumed_analyzed_from_the_uri(s3, tmp_path, monkeypatch):
    """Done-when 1: run on s3://, SIGKILL the driver mid-sweep, resume from the URI, analyze
    and report from it: every trial once, results complete, nothing under the cwd."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    cfg_path = write_text(tmp_path / "s3sweep.yaml", dump_config(tiny("s3sweep", generations=60)))
    env = {**os.environ, **s3, "PYTHONPATH": str(ROOT), CACHE_ENV: str(tmp_path / "cache")}
    uri = f"s3://{BUCKET}/runs/s3sweep"
    for key in (*s3, CACHE_ENV):  # this process reads the storage too
        monkeypatch.setenv(key, env[key])
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", str(cfg_path), "--storage", f"s3://{BUCKET}/runs",
         "--quiet"], cwd=cwd, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stored = RunStorage(uri)
    try:
        # Wait for a done record in the *storage*: the keeper writes the local line first and
        # uploads it next, so a kill timed on the local ledger could land between the two.
        deadline = time.time() + 120
        while not any(r["event"] == "done" for r in _stored_ledger(stored, missing_ok=True)):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "no trial finished within 120 s"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_session(proc.pid)
    done_before = {r["key"] for r in _stored_ledger(stored) if r["event"] == "done"}
    print(f"killed after {time.time() - started:.1f} s with {len(done_before)} trial(s) done")
    assert 1 <= len(done_before) < 4  # the storage has what finished, not more

    shutil.rmtree(tmp_path / "cache")  # resume on a machine that never saw the run
    for command in (["resume", uri, "--quiet"], ["analyze", uri], ["report", uri]):
        t0 = time.time()
        out = _cli(command, cwd=cwd, env=env)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        assert command[0] != "analyze" or "cheapest non-collapsing" in out.stdout
        print(f"{command[0]}: {time.time() - t0:.1f} s")

    records = _stored_ledger(stored)
    starts: dict[str, int] = {}
    for r in records:
        if r["event"] == "start":
            starts[r["key"]] = starts.get(r["key"], 0) + 1
    assert len(starts) == 4 and all(n == 1 for n in starts.values()), starts  # each once
    assert done_before <= {r["key"] for r in records if r["event"] == "done"}
    with tempfile.TemporaryDirectory() as tmp:
        assert stored.get("results.parquet", Path(tmp) / "r.parquet")
        df = pd.read_parquet(Path(tmp) / "r.parquet")
        assert sorted(df["number"]) == [0, 1, 2, 3]
        assert df["status"].isin(["finished", "stopped_collapsed"]).all()
        assert stored.get("optuna.journal", Path(tmp) / "optuna.journal")
        study = load_study(tmp, "s3sweep")
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    files = {sub for sub, _, _ in stored.files()}
    for trial_id in df["trial_id"]:
        assert f"trials/{trial_id}/generations.parquet" in files
        assert any(f.startswith(f"trials/{trial_id}/tb/") for f in files)
    assert {"report/index.html", "analysis.json", "sweep_summary.json"} <= files
    assert os.listdir(cwd) == []  # nothing under the working directory


def _stored_ledger(storage: RunStorage, *, missing_ok: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        got = storage.get("ledger.jsonl", Path(tmp) / "ledger.jsonl")
        if missing_ok and not got:
            return []
        assert got
        return Ledger(tmp).records()


# --------------------------------------------------------------------------- slow: two nodes
TWO_NODES = """
import os, pathlib, sys
import pandas as pd
import ray
from sweep.config import load_config
from sweep.search.driver import run_sweep
from tests.faults import ENV, Faults

cfg = load_config(sys.argv[1])
# A Gaussian generation takes microseconds: without a pause the head, whose trial actor is
# reused, finished all four trials before the worker node's first actor had started (a
# fresh process importing torch; 0.1 s per generation was not enough on a loaded machine).
Faults(pathlib.Path(sys.argv[3])).slow(cfg.name, seconds_per_generation=0.4)
ray.init(address=sys.argv[2], include_dashboard=False, log_to_driver=False,
         runtime_env={"worker_process_setup_hook": "tests.faults.install",
                      "env_vars": {ENV: sys.argv[3], "PYTHONPATH": os.environ["PYTHONPATH"]}})
try:
    run_dir = run_sweep(cfg, storage=sys.argv[4], address=sys.argv[2], progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    tables = sum((run_dir / "trials" / t / "generations.parquet").is_file() for t in df.trial_id)
    print(df[["node", "trial_id", "seconds"]].to_string())
    print("NODES", df["node"].nunique(), "ROWS", len(df), "FINISHED",
          int(df.status.isin(["finished", "stopped_collapsed"]).sum()), "TABLES", tables)
finally:
    ray.shutdown()
"""


def _can_unshare(probe: Path) -> str | None:
    """None when a private tmpfs can be mounted in a new mount namespace, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f"mount -t tmpfs tmpfs {probe} && touch {probe}/inside"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return f"cannot mount a private tmpfs (needs root / CAP_SYS_ADMIN): {out.stderr.strip()}"
    if (probe / "inside").exists():
        return "the tmpfs mount leaked out of its namespace"
    return None


def _node_ports() -> str:
    """Every port a node binds, each picked free (a ``--min/max-worker-port`` range of 16
    consecutive ports could hold one already in use, by the other node or an S3 server), and a
    small object store (two nodes at the default 30% of memory each ask for 14 GiB of shm)."""
    flags = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port")
    ports = free_ports(len(flags) + 8)
    workers = ",".join(str(p) for p in ports[len(flags):])
    return " ".join(f"{f}={p}" for f, p in zip(flags, ports, strict=False)) + (
        f" --worker-port-list={workers} --object-store-memory={200 * 2**20}")


def _node_logs(worker_log: Path, temp: str) -> str:
    """What a worker node that did not join said: its ``ray start`` output and raylet logs."""
    parts = [f"== {worker_log.name}\n{worker_log.read_text(errors='replace')[-3000:]}"]
    for log in sorted(Path(temp).glob("session_*/logs/raylet*"))[:6]:
        parts.append(f"== {log.name}\n{log.read_text(errors='replace')[-1500:]}")
    return "\n".join(parts)


@pytest.mark.slow
def test_two_node_sweep_worker_cannot_see_the_driver_disk(s3, tmp_path):
    """Done-when 2: a worker node in its own mount namespace (a private tmpfs over the run
    cache, where the driver's run directory is) runs trials; every trial's results reach the
    driver's results, and trials ran on both nodes."""
    base = Path(tempfile.mkdtemp(prefix="s3n", dir="/tmp"))  # short: Ray's socket paths
    try:
        cache = base / "cache"
        cache.mkdir()
        reason = _can_unshare(base / "probe")
        if reason:
            pytest.skip(reason)
        home = base / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(s3, HOME=str(home), PYTHONPATH=str(ROOT), RAY_AUTH_MODE="token",
                   **{CACHE_ENV: str(cache)})
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True,
                       capture_output=True)  # the head's token, as cluster.yaml makes it
        port, client = free_ports(2)
        temp = str(base / "ray")
        head = subprocess.run(
            f"{BIN}/ray start --head --port={port} --ray-client-server-port={client} "
            f"--num-cpus=1 --include-dashboard=false --disable-usage-stats --temp-dir={temp} "
            f"{_node_ports()}", shell=True, env=env, capture_output=True, text=True, timeout=120)
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        address = f"127.0.0.1:{port}"
        worker, worker_log = _start_worker_node(cache, address, temp, env, base / "worker.log")
        try:
            joined = _wait_for_nodes(env, address, 2)
            if joined and worker.poll() is not None:  # it exited: a port taken since picked
                first = _node_logs(worker_log, temp)
                worker, worker_log = _start_worker_node(cache, address, temp, env,
                                                        base / "worker-2.log")
                again = _wait_for_nodes(env, address, 2)
                joined = again and f"{first}\n== started again:\n{again}"
            assert joined == "", joined + "\n" + _node_logs(worker_log, temp)
            faults = base / "faults"
            faults.mkdir()
            cfg = tiny("nodes", trials=4, generations=20)
            cfg_path = write_text(base / "nodes.yaml", dump_config(cfg))
            out = subprocess.run(
                [sys.executable, "-c", TWO_NODES, str(cfg_path), address, str(faults),
                 f"s3://{BUCKET}/twonode"], cwd=ROOT, env=env, capture_output=True, text=True,
                timeout=240)
            assert "NODES 2 ROWS 4 FINISHED 4 TABLES 4" in out.stdout, (
                out.stdout[-2000:] + out.stderr[-4000:])
            own = os.readlink("/proc/self/ns/mnt")
            raylets = [p for p in own_processes(temp) if "raylet" in p.name()]
            spaces = {os.readlink(f"/proc/{p.pid}/ns/mnt") for p in raylets}
            assert len(raylets) == 2 and own in spaces and len(spaces) == 2
        finally:
            stop_processes(temp)
            worker.kill()
            worker.wait()
            kill_session(worker.pid)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _start_worker_node(cache: Path, address: str, temp: str, env: dict[str, str],
                       log_path: Path) -> tuple[subprocess.Popen, Path]:
    """A worker node in its own mount namespace, a private tmpfs over ``cache``."""
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs tmpfs {cache} && exec {BIN}/ray start --address={address} "
             f"--num-cpus=1 --block --disable-usage-stats --temp-dir={temp} {_node_ports()}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return worker, log_path


def _wait_for_nodes(env: dict[str, str], address: str, n: int) -> str:
    """'' once ``n`` nodes are alive (up to 120 s), else what the cluster said."""
    code = ("import ray, time, sys\n"
            f"ray.init(address='{address}', include_dashboard=False, log_to_driver=False)\n"
            "t = time.time()\n"
            f"while len([x for x in ray.nodes() if x['Alive']]) < {n}:\n"
            "    assert time.time() - t < 120, ray.nodes()\n"
            "    time.sleep(0.5)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=180)
    return "" if out.returncode == 0 else out.stderr[-3000:]
