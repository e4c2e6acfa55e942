"""Atomic, pickle-free checkpoints of a chain (torch.save of tensors + plain values).

Numpy arrays are stored as tensors so that ``torch.load(..., weights_only=True)`` reads
the file back; nothing is unpickled that could run code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_FILE = "chain.pt"


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
    """Write ``state`` to ``directory/chain.pt`` atomically (temp file + rename)."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".chain-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(_to_storable(state), tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The state saved in ``directory`` or None when there is none."""
    import torch

    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    return _from_storable(torch.load(path, weights_only=True, map_location="cpu"))
