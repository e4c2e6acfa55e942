"""sweep.engine.allocator: a chain's arrays are not page-faulted in again every generation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Two chains of the sweep_overhead short case (1.5M held-out examples: 12-MB arrays, a few
# alive at once); the minor page faults of the second, in the main thread and in a worker
# thread (Tune runs a trial's function in a thread of its own).
FAULTS = """
import json, resource, sys
from concurrent.futures import ThreadPoolExecutor
from sweep.config import load_config
from sweep.engine.allocator import keep_freed_memory
from sweep.engine.chain import run_chain

cfg = load_config({"model": {"family": "gaussian", "dim": 1},
                   "data": {"source": "truth", "test_size": 1_500_000},
                   "recursion": {"generations": 4, "samples_per_generation": 1000},
                   "collapse": {"stop_early": False}})

def faults(seed):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run_chain(cfg, seed=seed)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults(0)
thread = ThreadPoolExecutor(1)
thread.submit(faults, 1).result()
print(json.dumps({"applied": keep_freed_memory(), "main": faults(2),
                  "thread": thread.submit(faults, 3).result()}))
"""


def _faults(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FAULTS], cwd=ROOT, check=True, text=True,
                         capture_output=True, env={**os.environ, **env})
    return json.loads(out.stdout)


#: Pages of one 12-MB array (1.5M float64): one array faulted in again costs this many.
ARRAY_PAGES = 1_500_000 * 8 // 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_chains_memory_is_reused_not_faulted_in_again():
    kept = _faults()
    assert kept["applied"]
    # with the settings, not one array's worth of pages is faulted in again
    assert kept["main"] < ARRAY_PAGES and kept["thread"] < ARRAY_PAGES, kept
    # glibc's defaults (the opt-out) hand them back to the OS and fault them in again
    # (measured: 5,600-6,500 here, 11,000-18,000 for a 10-generation chain)
    default = _faults(COLLAPSE_SWEEP_KEEP_MEMORY="0")
    assert not default["applied"]
    assert default["main"] > ARRAY_PAGES and default["thread"] > ARRAY_PAGES, default


# Tune runs each trial in a new thread while other threads come and go: here a first trial's
# thread ends, a watcher thread starts (and takes the ended thread's arena), and the next
# trial's thread starts; its chain's page faults (per thread), and the next one's after it.
NEW_THREADS = """
import json, resource, threading
from sweep.config import load_config
from sweep.engine.chain import run_chain

cfg = load_config({"model": {"family": "gaussian", "dim": 1},
                   "data": {"source": "truth", "test_size": 1_500_000},
                   "recursion": {"generations": 4, "samples_per_generation": 1000},
                   "collapse": {"stop_early": False}})
out = []

def trial(seed):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    run_chain(cfg, seed=seed)
    out.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

def in_a_new_thread(fn, *args):
    t = threading.Thread(target=fn, args=args)
    t.start()
    t.join()

stop = threading.Event()
def watcher():
    blocks = [bytearray(4096) for _ in range(8)]  # malloc'd: this thread takes an arena
    stop.wait()

in_a_new_thread(trial, 0)
watch = threading.Thread(target=watcher)
watch.start()
in_a_new_thread(trial, 1)
stop.set()
watch.join()
print(json.dumps(out[1:]))
"""


def _new_thread_faults(**env: str) -> list[int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", NEW_THREADS], cwd=ROOT, check=True, text=True,
                         capture_output=True, env={**environ, **env})
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas")
def test_a_new_threads_chain_reuses_memory_with_one_arena():
    from sweep.engine.allocator import WORKER_ENV

    # the environment trial processes start with: every thread on the warm main arena
    (one_arena,) = _new_thread_faults(**WORKER_ENV)
    assert one_arena < ARRAY_PAGES, one_arena
    # glibc's default: the new thread gets a fresh arena and faults every page in again
    # (measured: ~4,100 here; ~3,800 per first trial of a Tune trial in a sweep)
    (default,) = _new_thread_faults()
    assert default > ARRAY_PAGES, default


def test_a_local_ray_starts_with_the_worker_environment(monkeypatch):
    """start_ray's local Ray (whose processes the trial processes inherit their environment
    from) starts with WORKER_ENV and LOCAL_RAY_ENV; the driver's own environment is as it
    was after; a value the user set wins; COLLAPSE_SWEEP_KEEP_MEMORY=0 adds nothing."""
    from sweep.search import rayinit

    seen: list[str | None] = []
    prestart: list[str | None] = []  # LOCAL_RAY_ENV: no idle workers started at ray.init
    for key, value in rayinit.DRIVER_ENV.items():  # start_ray sets them: restored after
        monkeypatch.setenv(key, os.environ.get(key, value))

    def init(**kwargs):
        seen.append(os.environ.get("MALLOC_ARENA_MAX"))
        prestart.append(os.environ.get("RAY_prestart_worker_first_driver"))

    monkeypatch.setattr(rayinit.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(rayinit.ray, "init", init)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("COLLAPSE_SWEEP_KEEP_MEMORY", raising=False)
    monkeypatch.delenv("RAY_prestart_worker_first_driver", raising=False)
    assert rayinit.start_ray(None)
    assert seen == ["1"] and "MALLOC_ARENA_MAX" not in os.environ
    assert prestart == ["0"] and "RAY_prestart_worker_first_driver" not in os.environ
    monkeypatch.setenv("RAY_prestart_worker_first_driver", "1")
    rayinit.start_ray(None)
    assert prestart[-1] == "1"
    monkeypatch.delenv("RAY_prestart_worker_first_driver")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    rayinit.start_ray(None)
    assert seen[-1] == "4" and os.environ["MALLOC_ARENA_MAX"] == "4"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("COLLAPSE_SWEEP_KEEP_MEMORY", "0")
    rayinit.start_ray(None)
    assert seen[-1] is None
