"""Atomic, pickle-free, checksummed checkpoints of a chain: tensors and arrays plus plain values.

Two formats, chosen by what the state holds; the reader takes either (and files from before
checksums):

- **numpy** (no torch tensor in the state: the analytic families): a safetensors file of
  the state's numpy arrays, with the rest of the state (dicts with string keys, lists,
  numbers, strings, booleans, None) as JSON in its metadata, each array a
  ``{"__ndarray__": name}`` there. Written and read without torch, so a trial of a numpy
  family never imports it (see ``sweep.search.trial._set_threads``); ~0.6 ms a save of a
  short chain's state against ~1.1 ms through ``torch.save`` (2026-12-02).
- **torch** (the torch families: model and optimizer states hold tensors, and an optimizer's
  state has integer keys): ``torch.save`` with numpy arrays stored as tensors, read with
  ``torch.load(..., weights_only=True)``.

Neither runs code when read: safetensors holds only raw arrays and JSON, ``weights_only``
unpickles only tensors and plain containers. The file starts with one line naming the format
and holding the SHA-256 of the payload that follows, so a truncated or overwritten file is
detected (``CorruptCheckpoint``) instead of failing deep inside a reader.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from sweep.files.atomic import write_bytes

CHECKPOINT_FILE = "chain.pt"
#: The last complete checkpoint while a new one replaces it (``write_bytes``'s ``previous``):
#: a process killed between its two renames leaves only this one.
PREVIOUS_FILE = ".chain.pt.prev"
_MAGIC = b"collapse-sweep checkpoint sha256="  # torch.save payload
_MAGIC_NUMPY = b"collapse-sweep checkpoint safetensors sha256="  # safetensors + JSON payload
_ARRAY = "__ndarray__"


class CorruptCheckpoint(ValueError):
    """A checkpoint file exists but is damaged (checksum mismatch, truncated, foreign)."""


class _NotJson(TypeError):
    """The state holds something the numpy format does not (a tensor, a non-string key)."""


def _contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` in C order, its shape kept (``np.ascontiguousarray`` makes a 0-d array 1-d)."""
    return array if array.flags.c_contiguous else array.copy(order="C")


#: Array types safetensors stores (others, e.g. complex128 or strings, go the torch way).
_DTYPES = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
    np.float16, np.float32, np.float64, np.complex64))
#: Values JSON holds as they are (exact types: a float subclass such as np.float64 also is).
_PLAIN = frozenset({str, int, float, bool, type(None), np.float64})


def _to_json(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``obj`` with its arrays moved to ``arrays`` (by name); _NotJson for what JSON lacks.
    Plain leaves are taken as they are without a call each: a chain's rows are most of a
    state (0.2 ms less a save of a 20-generation chain's)."""
    if isinstance(obj, dict):
        if not all(type(k) is str for k in obj):
            raise _NotJson("a dict key that is not a string")
        return {k: v if type(v) in _PLAIN else _to_json(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [v if type(v) in _PLAIN else _to_json(v, arrays) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype not in _DTYPES:
            raise _NotJson(f"an array of {obj.dtype}")
        name = str(len(arrays))
        arrays[name] = _contiguous(obj)
        return {_ARRAY: name}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise _NotJson(type(obj).__name__)


def _from_json(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if _ARRAY in obj:
            return arrays[obj[_ARRAY]]
        return {k: _from_json(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v, arrays) for v in obj]
    return obj


def _numpy_payload(state: dict[str, Any]) -> bytes:
    from safetensors.numpy import save

    arrays: dict[str, np.ndarray] = {}
    skeleton = json.dumps(_to_json(state, arrays), separators=(",", ":"))
    return save(arrays, metadata={"state": skeleton})


def _numpy_state(payload: bytes) -> dict[str, Any]:
    from safetensors.numpy import load

    size = int.from_bytes(payload[:8], "little")  # safetensors: header length, JSON header
    skeleton = json.loads(json.loads(payload[8:8 + size])["__metadata__"]["state"])
    return _from_json(skeleton, load(payload))


def _to_storable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        import torch

        return {_ARRAY: torch.from_numpy(_contiguous(obj)), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {k: _to_storable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_storable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _from_storable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if _ARRAY in obj:
            return obj[_ARRAY].numpy().astype(obj["dtype"], copy=False)
        return {k: _from_storable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_storable(v) for v in obj]
    return obj


def _torch_payload(state: dict[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(_to_storable(state), buffer)
    return buffer.getvalue()


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/chain.pt`` atomically, checksummed: a temp file, then
    renames that keep the old one as ``PREVIOUS_FILE`` until the new one is in place.
    The numpy format unless the state holds what only torch's stores (see the module)."""
    try:
        magic, payload = _MAGIC_NUMPY, _numpy_payload(state)
    except _NotJson:  # a tensor (torch families), an optimizer's integer keys, complex128
        magic, payload = _MAGIC, _torch_payload(state)
    header = magic + hashlib.sha256(payload).hexdigest().encode() + b"\n"
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
    found = _read(Path(directory))
    if found is None:
        return None
    path, blob = found
    magic = next((m for m in (_MAGIC_NUMPY, _MAGIC) if blob.startswith(m)), None)
    if magic is not None:
        header, _, payload = blob.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != header[len(magic):]:
            raise CorruptCheckpoint(f"{path}: checksum mismatch (truncated or overwritten)")
    else:
        payload = blob  # written before checksums: torch's own format checks only
    try:
        if magic is _MAGIC_NUMPY:
            return _numpy_state(payload)
        import torch

        return _from_storable(torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu"))
    except Exception as exc:  # noqa: BLE001 - unreadable or not a checkpoint at all
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
