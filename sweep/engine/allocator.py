"""Freed memory stays in the process that runs chains (glibc's malloc, set once per process).

A chain allocates and frees the same large arrays every generation: an analytic chain's
held-out set of 1.5M examples is 12 MB per array, a few alive at once. glibc hands blocks
that size back to the OS when they are freed (``mmap`` above its threshold, the heap trimmed
above 128 KB free at its top, a thread's arena heaps unmapped when empty), so the next
generation takes a page fault on every 4 KB page it touches again: measured here, 11,000-
19,000 minor faults for one 10-generation chain of ``benchmarks/sweep_overhead.py``'s short
case, and the chain took 334-436 ms instead of 255-262 ms with the settings below (0-1
faults), in the main thread and in a worker thread alike (Tune runs a trial's function in a
thread of its own).

``keep_freed_memory()`` raises glibc's thresholds with ``mallopt``: blocks up to 32 MB (the
most ``M_MMAP_THRESHOLD`` takes) come from the heap, the heap is returned only above 1 GB
free, and a heap grows 256 MB (address space; pages count once touched) at a time. A process
then keeps the memory of its largest generation until it exits, which a trial process or
``collapse-sweep chain`` reuses the next generation anyway. ``COLLAPSE_SWEEP_KEEP_MEMORY=0``
leaves glibc's defaults (e.g. chains run inside a long-lived notebook). Elsewhere than glibc
(macOS, musl) nothing is changed.

**One arena** (``WORKER_ENV``, for processes started to run trials). Those settings keep the
memory in the arena of the thread that freed it. glibc gives a thread an arena of its own,
and Tune runs every trial in a new thread: the new thread gets the last trial's arena only
if no other thread (Ray's and Tune's own come and go) took it first, else a fresh one whose
every page faults in again. In a sweep of the 0.4-s short chains the first Optuna trial of
each Tune trial took ~1.0 s and ~3,800 faults instead of ~0.6 s and ~400 (2026-12-02,
traced). ``MALLOC_ARENA_MAX=1`` puts every thread on the main arena, warm from the last
trial; glibc reads it only when a process starts (``mallopt(M_ARENA_MAX)`` later does not
move threads that have an arena already: tried), so it is set in the environment the trial
processes start with: a local Ray's (``sweep.search.rayinit``), a cluster's ``ray start``
commands (``cluster.yaml``, the KubeRay manifest). Its cost, threads that allocate at once
waiting on one lock, is small here: Python objects come from its own allocator, and numpy's
and torch's large blocks are few per generation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 256 << 20}
ENV = "COLLAPSE_SWEEP_KEEP_MEMORY"
#: The environment of a process started to run trials: one malloc arena for all its threads.
WORKER_ENV = {"MALLOC_ARENA_MAX": "1"}

_applied: bool | None = None  # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Apply ``SETTINGS`` once per process; True when glibc took them all."""
    global _applied
    if _applied is None:
        _applied = _wanted() and _mallopt(SETTINGS)
    return _applied


def worker_env() -> dict[str, str]:
    """What to add to the environment of a process about to be started to run trials:
    ``WORKER_ENV`` less what the environment sets already (the user's value wins); nothing
    with ``COLLAPSE_SWEEP_KEEP_MEMORY=0``."""
    if not _wanted():
        return {}
    return {k: v for k, v in WORKER_ENV.items() if k not in os.environ}


def _wanted() -> bool:
    """False with the opt-out, ``COLLAPSE_SWEEP_KEEP_MEMORY=0``."""
    return os.environ.get(ENV, "1") != "0"


def _mallopt(settings: dict[int, int]) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc's own symbol: not musl, not macOS
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in settings.items())
