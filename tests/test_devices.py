"""GPUs as Ray assigns them (sweep/search/devices.py), tested without a GPU.

The CUDA side of torch is faked (monkeypatch) where a test needs a GPU; Ray's own
assignment is real in the slow test (a local Ray that declares 2 GPUs hands out ids and
sets CUDA_VISIBLE_DEVICES exactly as on a GPU node).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sweep.config import load_config
from sweep.search.devices import DeviceError, place_trial

ROOT = Path(__file__).resolve().parents[1]


def _gpt(device: str = "auto", gpu: float = 0.25):
    return load_config({"name": "dev", "model": {"family": "gpt", "size": "xs", "device": device},
                        "data": {"source": "truth-lm"}, "resources": {"cpu": 1, "gpu": gpu}})


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch with a CUDA build and a usable GPU; records the memory caps set."""
    caps: list[tuple[float, int]] = []
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device=None: caps.append((fraction, device)))
    return caps


@pytest.fixture
def cuda_env(monkeypatch):
    """CUDA_VISIBLE_DEVICES restored after the test, whatever place_trial does to it."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    return monkeypatch


def test_fractional_gpu_trial_runs_on_its_gpu_with_a_memory_cap(fake_cuda):
    placed, p = place_trial(_gpt(), gpus=0.25, assigned=["3"])
    assert placed.model.device == "cuda" and p.device == "cuda" and p.gpu_ids == ("3",)
    assert fake_cuda == [(0.25, 0)] and p.memory_fraction == 0.25
    assert p.describe() == "cuda (GPU 3, share 0.25, 25% of its memory)"


def test_whole_gpu_trial_has_no_cap(fake_cuda):
    placed, p = place_trial(_gpt(gpu=1), gpus=1.0, assigned=["0"])
    assert placed.model.device == "cuda" and fake_cuda == [] and p.memory_fraction is None


def test_gpu0_trial_hides_every_gpu_and_never_asks_torch(cuda_env, monkeypatch):
    def no(*a, **k):
        raise AssertionError("device: auto must not mean torch.cuda.is_available()")

    monkeypatch.setattr(torch.cuda, "is_available", no)
    placed, p = place_trial(_gpt(gpu=0), gpus=0.0, assigned=[])  # inside Ray, no GPU
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and p.hidden
    assert placed.model.device == "cpu" and p.describe() == "cpu (GPUs hidden)"


def test_outside_ray_the_process_env_is_left_alone(cuda_env):
    placed, p = place_trial(_gpt(gpu=0), gpus=0.0, assigned=None)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1" and not p.hidden
    assert placed.model.device == "cpu"


def test_keys_use_the_unplaced_config(fake_cuda):
    cfg = _gpt()
    placed, _ = place_trial(cfg, gpus=0.25, assigned=["0"])
    assert cfg.model.device == "auto"  # not modified in place
    assert placed.fingerprint() != cfg.fingerprint()  # the chain's own checkpoint identity


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_cpu_only_torch_on_a_gpu_trial_fails_with_one_line(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(DeviceError) as exc:
        place_trial(_gpt(gpu=1), gpus=1.0, assigned=["0"])
    assert "CPU-only build" in _one_line(exc) and "resources.gpu is 1" in str(exc.value)


def test_cuda_torch_without_a_usable_gpu_fails_with_one_line(fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError) as exc:
        place_trial(_gpt(), gpus=0.5, assigned=["1"])
    assert "cannot use CUDA" in _one_line(exc) and "GPU 1" in str(exc.value)


def test_cuda_asked_without_a_gpu_share_is_an_error(cuda_env):
    with pytest.raises(DeviceError) as exc:
        place_trial(_gpt(device="cuda", gpu=0), gpus=0.0, assigned=[])
    assert "model.device is 'cuda' but resources.gpu is 0" in _one_line(exc)


def test_gpu_share_without_an_assignment_is_an_error(fake_cuda):
    with pytest.raises(DeviceError, match="Ray assigned this trial no GPU"):
        place_trial(_gpt(), gpus=0.5, assigned=[])


def test_numpy_family_ignores_torch_and_cpu_request_keeps_cpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)  # CPU torch: irrelevant to numpy models
    cfg = load_config({"name": "g", "model": {"family": "gaussian"}})
    assert place_trial(cfg, gpus=1.0, assigned=["0"])[0] == cfg
    placed, p = place_trial(_gpt(device="cpu", gpu=1), gpus=1.0, assigned=["0"])
    assert placed.model.device == "cpu" and p.device == "cpu"


def test_gpu0_trial_in_a_ray_worker_sees_no_gpu(ray_session, tmp_path):
    """The real trial code in a real Ray worker: GPUs hidden, recorded in the ledger."""
    import ray

    from sweep.config import dump_config
    from sweep.files.atomic import write_text
    from sweep.rundir.ledger import Ledger

    cfg = load_config({"name": "hide", "seed": 1, "model": {"family": "gaussian"},
                       "recursion": {"generations": 2, "samples_per_generation": 20},
                       "resources": {"cpu": 1, "gpu": 0}})
    run_dir = tmp_path / "hide"
    write_text(run_dir / "sweep.yaml", dump_config(cfg))

    @ray.remote(num_cpus=1, num_gpus=0)
    def trial(run_dir: str) -> dict:
        import os

        import torch

        from sweep.search.trial import run_trial

        before = os.environ.get("CUDA_VISIBLE_DEVICES")
        run_trial(Path(run_dir), {}, trial_id="t0", number=0, node="n", report=lambda m, c: None)
        return {"before": before, "after": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "count": torch.cuda.device_count()}

    seen = ray.get(trial.remote(str(run_dir)))
    assert seen["after"] == "" and seen["count"] == 0
    start = next(r for r in Ledger(run_dir).records() if r["event"] == "start")
    assert start["device"] == "cpu (GPUs hidden)"


_RAY_SCRIPT = r"""
import json, os, sys
import ray, torch
ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)

def fake_cuda():
    caps = []
    torch.version.cuda = "13.0"
    torch.cuda.is_available = lambda: True
    torch.cuda.is_initialized = lambda: False
    torch.cuda.set_per_process_memory_fraction = lambda f, d=None: caps.append([f, d])
    return caps

def run(gpus):
    from sweep.config import load_config
    from sweep.search.devices import assigned_gpu_ids, place_trial
    caps = fake_cuda()
    ray_set = os.environ.get("CUDA_VISIBLE_DEVICES")
    cfg = load_config({"name": "r", "model": {"family": "gpt"}, "data": {"source": "truth-lm"},
                       "resources": {"cpu": 1, "gpu": gpus}})
    ids = assigned_gpu_ids()
    placed, p = place_trial(cfg, gpus=gpus, assigned=ids)
    return {"ids": ids, "ray_set": ray_set, "after": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": placed.model.device, "caps": caps, "describe": p.describe()}

out = {str(g): ray.get(ray.remote(num_cpus=1, num_gpus=g)(run).remote(g)) for g in (0, 0.5, 1)}
from sweep.search.devices import assigned_gpu_ids
out["driver_ids"] = assigned_gpu_ids()
print("RESULT" + json.dumps(out))
ray.shutdown()
"""


@pytest.mark.slow
def test_ray_assignment_decides_the_device():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "0,1"}
    out = subprocess.run([sys.executable, "-c", _RAY_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line, out.stdout[-2000:] + out.stderr[-3000:]
    res = json.loads(line[len("RESULT"):])
    # gpu: 0 -> Ray leaves the node's GPUs visible; the trial hides them and runs on cpu
    assert res["0"]["ids"] == [] and res["0"]["ray_set"] == "0,1"
    assert res["0"]["after"] == "" and res["0"]["device"] == "cpu"
    # gpu: 0.5 -> the GPU Ray assigned, a memory cap of half of it
    half = res["0.5"]
    assert len(half["ids"]) == 1 and half["ray_set"] == half["ids"][0] == half["after"]
    assert half["device"] == "cuda" and half["caps"] == [[0.5, 0]]
    # gpu: 1 -> its own GPU, no cap
    assert len(res["1"]["ids"]) == 1 and res["1"]["device"] == "cuda" and res["1"]["caps"] == []
    assert res["driver_ids"] is None  # the driver holds no GPU: not a trial
