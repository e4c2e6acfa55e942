"""sweep.files.checkpoint: a checkpoint is replaced without a rename over it, and a process
killed at any step of the replacement leaves a complete checkpoint (the new or the last)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sweep.files import atomic
from sweep.files.checkpoint import (
    CHECKPOINT_FILE,
    PREVIOUS_FILE,
    CorruptCheckpoint,
    load_checkpoint,
    save_checkpoint,
)


def _state(generation: int) -> dict:
    return {"generation": generation, "pool": {"data": np.arange(6.0) * generation},
            "rows": [{"generation": g, "real_nll": 1.0 + g} for g in range(generation)]}


def _generation(directory: Path) -> int:
    state = load_checkpoint(directory)
    assert state is not None
    np.testing.assert_array_equal(state["pool"]["data"], np.arange(6.0) * state["generation"])
    return state["generation"]


def test_replaced_checkpoint_leaves_one_file_and_no_rename_lands_on_a_file(tmp_path, monkeypatch):
    """No rename replaces an existing file (on ext4 that starts the new file's writeback:
    0.35-0.7 ms a checkpoint against ~0.1 ms); the old one is moved aside, then removed."""
    renames = []
    real_rename = os.rename

    def rename(src, dst):
        assert not Path(dst).exists(), f"rename onto an existing file: {dst}"
        real_rename(src, dst)
        renames.append(Path(dst).name)

    monkeypatch.setattr(atomic.os, "rename", rename)
    monkeypatch.setattr(atomic.os, "replace", lambda *a: pytest.fail("os.replace"))
    for generation in (1, 2, 3):
        save_checkpoint(tmp_path, _state(generation))
    assert _generation(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]  # no temp, no prev
    assert renames == [CHECKPOINT_FILE, PREVIOUS_FILE, CHECKPOINT_FILE, PREVIOUS_FILE,
                       CHECKPOINT_FILE]


def test_killed_between_the_renames_loads_the_last_complete_checkpoint(tmp_path):
    save_checkpoint(tmp_path, _state(4))
    # the writer of generation 5 moved generation 4 aside and died before its own rename
    (tmp_path / CHECKPOINT_FILE).rename(tmp_path / PREVIOUS_FILE)
    assert _generation(tmp_path) == 4
    save_checkpoint(tmp_path, _state(5))  # the resumed chain's next checkpoint
    assert _generation(tmp_path) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]


def test_killed_after_the_new_one_is_in_place_loads_the_new_one(tmp_path):
    save_checkpoint(tmp_path, _state(6))
    old = (tmp_path / CHECKPOINT_FILE).read_bytes()
    save_checkpoint(tmp_path, _state(7))
    (tmp_path / PREVIOUS_FILE).write_bytes(old)  # died before removing the previous one
    assert _generation(tmp_path) == 7


def test_a_failed_write_keeps_the_last_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _state(2))
    real_rename = os.rename

    def failing(src, dst):
        if Path(dst).name == CHECKPOINT_FILE:  # the new checkpoint's own rename fails
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", failing)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path, _state(3))
    assert _generation(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == [PREVIOUS_FILE]


def test_none_without_a_checkpoint_and_a_damaged_one_is_named(tmp_path):
    assert load_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, _state(1))
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptCheckpoint, match="checksum mismatch"):
        load_checkpoint(tmp_path)


class _LocalStorage:
    """RunStorage's put, into a local folder."""

    uri = "local://test"

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, local: Path, rel: str) -> None:
        with open(local, "rb") as src:
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_bytes(src.read())


def test_upload_caught_between_the_renames_waits_for_the_next_put(tmp_path):
    """The background upload may read the checkpoint while the trial replaces it: missing
    then is not an error (the trial puts the new one next); missing for good is."""
    from sweep.search.trial import _Uploads

    ckpt_dir = tmp_path / "trial" / "ckpt"
    save_checkpoint(ckpt_dir, _state(1))
    (ckpt_dir / CHECKPOINT_FILE).rename(ckpt_dir / PREVIOUS_FILE)  # mid-replacement
    uploads = _Uploads(_LocalStorage(tmp_path / "stored"))
    uploads.put(ckpt_dir / CHECKPOINT_FILE, "ckpt/chain.pt")
    uploads.flush()  # no error
    save_checkpoint(ckpt_dir, _state(2))
    uploads.put(ckpt_dir / CHECKPOINT_FILE, "ckpt/chain.pt")
    uploads.flush()
    assert _generation(tmp_path / "stored" / "ckpt") == 2
    uploads.put(tmp_path / "nowhere" / CHECKPOINT_FILE, "ckpt/gone.pt")
    with pytest.raises(RuntimeError, match="checkpoint upload to local://test failed"):
        uploads.flush()


def test_numpy_state_round_trips_exactly_in_the_numpy_format(tmp_path):
    rng = np.random.default_rng(5)
    rng.random(3)
    state = {"rng": rng.bit_generator.state,  # 128-bit integers
             "pool": {"data": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],  # a view
                      "batch_sizes": [4, 4]},
             "model": {"mean": np.array(0.25), "cov": np.eye(2, dtype=np.float32),
                       "mask": np.array([True, False]), "empty": np.zeros((0, 3))},
             "rows": [{"real_nll": float("nan"), "flops": float("inf"), "status": None,
                       "ok": True, "g": np.int64(3), "x": np.float64(0.1)}],
             "betas": (0.9, 0.95), "fingerprint": "abc"}
    save_checkpoint(tmp_path, state)
    assert (tmp_path / CHECKPOINT_FILE).read_bytes().startswith(
        b"collapse-sweep checkpoint safetensors sha256=")
    back = load_checkpoint(tmp_path)
    assert back["rng"] == state["rng"]
    np.testing.assert_array_equal(back["pool"]["data"], [[0, 2], [4, 6], [8, 10]])
    for key, value in state["model"].items():
        assert back["model"][key].dtype == value.dtype
        assert back["model"][key].shape == value.shape
        np.testing.assert_array_equal(back["model"][key], value)
        assert back["model"][key].flags.writeable  # a resumed chain updates them in place
    row = back["rows"][0]
    assert np.isnan(row["real_nll"]) and row["flops"] == float("inf")
    assert (row["status"], row["ok"], row["g"], row["x"]) == (None, True, 3, 0.1)
    assert type(row["g"]) is int
    assert back["betas"] == [0.9, 0.95]  # a list, as the torch format stores tuples
    assert back["fingerprint"] == "abc" and back["pool"]["batch_sizes"] == [4, 4]


def test_tensors_and_integer_keys_take_the_torch_format(tmp_path):
    import torch

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
             "pool": {"data": np.arange(4)}}
    save_checkpoint(tmp_path, state)
    assert (tmp_path / CHECKPOINT_FILE).read_bytes().startswith(
        b"collapse-sweep checkpoint sha256=")
    back = load_checkpoint(tmp_path)
    assert torch.equal(back["model"]["weight"], model.weight.detach())
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys kept
    np.testing.assert_array_equal(back["pool"]["data"], np.arange(4))
    clone = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    clone.load_state_dict(back["optimizer"])


def test_arrays_safetensors_lacks_take_the_torch_format(tmp_path):
    save_checkpoint(tmp_path, {"z": np.array([1 + 2j, 3j]), "x": np.arange(3.0)})
    assert (tmp_path / CHECKPOINT_FILE).read_bytes().startswith(
        b"collapse-sweep checkpoint sha256=")
    back = load_checkpoint(tmp_path)
    assert back["z"].dtype == np.complex128
    np.testing.assert_array_equal(back["z"], [1 + 2j, 3j])


NO_TORCH = """
import sys
import numpy as np
from sweep.files.checkpoint import load_checkpoint, save_checkpoint
save_checkpoint(sys.argv[1], {"pool": {"data": np.arange(5.0)}, "rows": [{"g": 1}]})
state = load_checkpoint(sys.argv[1])
assert state["rows"] == [{"g": 1}] and state["pool"]["data"].sum() == 10.0
"""


def test_a_numpy_state_is_saved_and_loaded_without_importing_torch(tmp_path):
    from tests.processes import loads_torch

    assert not loads_torch(NO_TORCH, str(tmp_path))


def test_checkpoints_of_earlier_versions_still_load(tmp_path):
    import io

    import torch

    from sweep.files.checkpoint import _to_storable

    buffer = io.BytesIO()  # before checksums: a bare torch.save of the storable state
    torch.save(_to_storable(_state(3)), buffer)
    (tmp_path / CHECKPOINT_FILE).write_bytes(buffer.getvalue())
    assert _generation(tmp_path) == 3
    damaged = tmp_path / "damaged"
    save_checkpoint(damaged, _state(2))
    path = damaged / CHECKPOINT_FILE
    blob = path.read_bytes()
    path.write_bytes(blob[:-40] + bytes(40))  # same length, checksum no longer matches
    with pytest.raises(CorruptCheckpoint, match="checksum mismatch"):
        load_checkpoint(damaged)
