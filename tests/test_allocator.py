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
