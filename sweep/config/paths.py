"""Output locations the user names (--out, --storage): checked before anything is written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sweep.config.errors import ConfigError


def check_output_dir(path: str | Path, flag: str) -> Path:
    """``path`` is, or can be created as, a directory this process can write; else ConfigError.

    Nothing is left behind: the nearest existing ancestor is probed with a temporary directory
    that is removed at once (permission bits alone do not say it for root or read-only mounts).
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = path if existing == path else existing
        raise ConfigError(f"{flag}: {where} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".write-test-"))
    except OSError as exc:
        raise ConfigError(f"{flag}: {existing} is not writable ({exc.strerror}); "
                          "choose a directory you can write") from None
    return path
