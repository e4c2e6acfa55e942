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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 256 << 20}
ENV = "COLLAPSE_SWEEP_KEEP_MEMORY"

_applied: bool | None = None  # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Apply ``SETTINGS`` once per process; True when glibc took them all."""
    global _applied
    if _applied is None:
        _applied = os.environ.get(ENV, "1") != "0" and _mallopt(SETTINGS)
    return _applied


def _mallopt(settings: dict[int, int]) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc's own symbol: not musl, not macOS
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in settings.items())
