"""Atomic writes (sweep.files.atomic): all or nothing, shared permissions, no temp left."""

import os

import pytest

from sweep.files import atomic
from sweep.files.atomic import atomic_path, write_text


def test_replaces_the_file_with_the_umasks_permissions_and_leaves_no_temp(tmp_path):
    old = os.umask(0o027)
    try:
        target = write_text(tmp_path / "deep" / "er" / "a.yaml", "one")  # folders made
        write_text(target, "two")
    finally:
        os.umask(old)
    assert target.read_text() == "two"
    assert target.stat().st_mode & 0o777 == 0o640  # 0o666 & ~umask, as a plain open gives
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.yaml"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = write_text(tmp_path / "a.yaml", "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.yaml"]


def test_a_temp_left_by_a_killed_process_with_the_same_pid_is_stepped_over(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_COUNTER", iter([7, 7, 8]))
    stale = tmp_path / f".a.yaml.{os.getpid()}.7.tmp"
    stale.write_text("stale")
    write_text(tmp_path / "a.yaml", "new")
    assert (tmp_path / "a.yaml").read_text() == "new"
    assert stale.read_text() == "stale"  # not taken over: it is not this write's file


def test_write_bytes_is_all_or_nothing_too(tmp_path, monkeypatch):
    """The checkpoint's writer: one open of the temp file, then the rename."""
    target = atomic.write_bytes(tmp_path / "ckpt" / "chain.pt", b"old")  # folder made
    assert target.read_bytes() == b"old"

    def no_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(atomic.os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["chain.pt"]
