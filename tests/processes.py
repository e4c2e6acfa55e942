"""Test helpers for tests that start processes: free ports, Ray nodes' processes found by a
marker (their temp dir), and ``collapse-sweep chain`` run as a user types it.

Tests that start Ray nodes with ``ray start`` stop exactly those (never ``ray stop``, which
would also stop the session's shared Ray and anything else on the machine).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]


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


def session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (a driver started with ``start_new_session``), not this one."""
    pids = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and os.getsid(proc.pid) == sid:
                pids.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return pids


def kill_session(sid: int) -> None:
    """SIGKILL what a killed driver left behind (raylet, GCS, agents), by session id (10 s)."""
    for _ in range(40):
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.25)


def running(pids: list[int]) -> list[str]:
    """The names of ``pids`` still running (not gone, not zombies)."""
    names = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                names.append(proc.name())
    return names


def cli_chain(args: list[str], out: Path) -> pd.DataFrame:
    """``collapse-sweep chain ARGS --out OUT`` from the project root in a new process with
    one BLAS/torch thread (two at once fill the 2 cores); its generations table."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "sweep", "chain", *args, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return pd.read_parquet(out / "generations.parquet")


def loads_torch(script: str, *args: str) -> bool:
    """Whether ``script`` (run in a new Python with ``args``; it must succeed) imported torch:
    the driver and the trials of numpy families must not (~2 s and ~180 MB a process)."""
    code = f"{script}\nimport sys\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"
