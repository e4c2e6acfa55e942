"""Atomic, pickle-free, checksummed checkpoints of a chain (torch.save of tensors + plain values).

Numpy arrays are stored as tensors so that ``torch.load(..., weights_only=True)`` reads
the file back; nothing is unpickled that could run code. The file starts with one line
holding the SHA-256 of the payload that follows, so a truncated or overwritten file is
detected (``CorruptCheckpoint``) instead of failing deep inside torch.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from sweep.files.atomic import write_bytes

CHECKPOINT_FILE = "chain.pt"
#: The last complete checkpoint while a new one replaces it (``write_bytes``'s ``previous``):
#: a process killed between its two renames leaves only this one.
PREVIOUS_FILE = ".chain.pt.prev"
_MAGIC = b"collapse-sweep checkpoint sha256="


class CorruptCheckpoint(ValueError):
    """A checkpoint file exists but is damaged (checksum mismatch, truncated, foreign)."""


def _to_storable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        import torch

        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj)),
                "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {k: _to_storable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_storable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _from_storable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return obj["__ndarray__"].numpy().astype(obj["dtype"], copy=False)
        return {k: _from_storable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_storable(v) for v in obj]
    return obj


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/chain.pt`` atomically, checksummed: a temp file, then
    renames that keep the old one as ``PREVIOUS_FILE`` until the new one is in place."""
    import torch

    buffer = io.BytesIO()
    torch.save(_to_storable(state), buffer)
    payload = buffer.getvalue()
    header = _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    return write_bytes(Path(directory) / CHECKPOINT_FILE, header + payload, previous=PREVIOUS_FILE)


def _read(directory: Path) -> tuple[Path, bytes] | None:
    """The checkpoint file's bytes; the previous one's when a writer was killed between its
    two renames (or is between them now: then the new one is looked for once more)."""
    for name in (CHECKPOINT_FILE, PREVIOUS_FILE, CHECKPOINT_FILE):
        path = directory / name
        try:
            return path, path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue
    return None


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The state saved in ``directory``; None when there is none; CorruptCheckpoint if damaged."""
    import torch

    found = _read(Path(directory))
    if found is None:
        return None
    path, blob = found
    if blob.startswith(_MAGIC):
        header, _, payload = blob.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != header[len(_MAGIC):]:
            raise CorruptCheckpoint(f"{path}: checksum mismatch (truncated or overwritten)")
    else:
        payload = blob  # written before checksums: torch's own format checks only
    try:
        return _from_storable(torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu"))
    except Exception as exc:  # noqa: BLE001 - unreadable or not a checkpoint at all
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
