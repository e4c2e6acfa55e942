"""Atomic file writes: a crash never leaves half a file (write a temp file, then rename)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the writers take a DataFrame; this module does not need pandas loaded
    import pandas as pd

_COUNTER = itertools.count()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    tmp, fd = _open_temp(path)
    os.close(fd)
    with _replaces(tmp, path):
        yield tmp


def write_bytes(path: str | Path, data: bytes, *, previous: str | None = None) -> Path:
    """``data`` as the whole of ``path``, atomically: written through the temp file's own
    descriptor (one open call; a chain writes its checkpoint every generation), then renamed.

    ``previous``: a file name beside ``path``. The old ``path`` is first renamed to it and
    removed once the new one is in place, so that no rename replaces a file: on ext4 one
    that does starts writing the new file to disk at once (``auto_da_alloc``), 0.35-0.7 ms a
    write here against ~0.1 ms for the three steps. Between the two renames ``path`` is
    missing and ``previous`` holds the last complete version: its reader falls back to it
    (``sweep.files.checkpoint.load_checkpoint``)."""
    path = Path(path)
    tmp, fd = _open_temp(path)
    with _replaces(tmp, path, previous=previous), os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@contextlib.contextmanager
def _replaces(tmp: Path, path: Path, *, previous: str | None = None) -> Iterator[None]:
    """``tmp`` replaces ``path`` when the block succeeds; otherwise ``tmp`` is removed.
    With ``previous`` (``write_bytes``), the old ``path`` is moved aside to that name first
    and removed after, instead of being replaced by the rename."""
    old = None if previous is None else path.with_name(previous)
    try:
        yield
        if old is None:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, old)
            os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if old is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old)


def _open_temp(path: Path) -> tuple[Path, int]:
    """A new empty file ``.NAME.PID.N.tmp`` beside ``path`` (its folder made if missing),
    created with the umask's permissions (results are meant to be shared, as any file the
    user writes), and its descriptor, open for writing."""
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{next(_COUNTER)}.tmp"
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # left by a killed process whose pid was reused
            continue
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)
