"""Test helpers for tests that start their own Ray nodes: free ports, and the nodes' processes
found by a marker (their temp dir).

Tests that start Ray nodes with ``ray start`` stop exactly those (never ``ray stop``, which
would also stop the session's shared Ray and anything else on the machine).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import psutil


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (all bound at once, then released)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def own_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line names ``marker``, and their descendants (not this one)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in arg for arg in proc.info["cmdline"] or []):
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_processes(marker: str) -> None:
    """SIGTERM, then SIGKILL, what ``own_processes`` finds (5 s each)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        procs = own_processes(marker)
        if not procs:
            return
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
        psutil.wait_procs(procs, timeout=wait)
