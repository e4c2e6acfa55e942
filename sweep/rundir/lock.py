"""One driver per run directory: an exclusive ``flock`` on ``RUN_DIR/driver.lock``.

The kernel drops a ``flock`` when its holder exits, SIGKILL included, so a dead driver
never leaves the run directory locked; the file itself only records who held it last.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sweep.config import ConfigError

LOCK_FILE = "driver.lock"


@contextlib.contextmanager
def driver_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock for the block; ConfigError when another driver has it."""
    run_dir = Path(run_dir)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise ConfigError(f"RUN_DIR: {run_dir} is in use by another driver{pid}; wait for "
                              "it to end or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def driver_running(run_dir: Path) -> bool:
    """True while a driver holds ``run_dir``'s lock (on this machine)."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
