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
