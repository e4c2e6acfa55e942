"""The ledger's per-process read cache: appends are seen, rewrites and torn lines are not
mistaken, and lookups hand out copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sweep.files.atomic import write_text
from sweep.rundir.ledger import LEDGER_FILE, Ledger

ROOT = Path(__file__).resolve().parents[1]


def _keys(ledger: Ledger) -> list[str]:
    return [r["key"] for r in ledger.records()]


def test_appends_from_other_instances_and_processes_are_read(tmp_path):
    a, b = Ledger(tmp_path), Ledger(tmp_path)
    a.append("start", key="k1", number=0)
    assert _keys(b) == ["k1"]
    b.append("done", key="k1", number=0, status="finished")
    code = ("from sweep.rundir.ledger import Ledger; import sys; "
            "Ledger(sys.argv[1]).append('start', key='k2', number=1)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert _keys(a) == ["k1", "k1", "k2"]
    assert a.done("k1")["status"] == "finished" and a.started("k2")["number"] == 1


def test_a_line_being_written_is_read_once_it_ends_and_a_torn_one_never(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append("start", key="k1", number=0)
    with open(tmp_path / LEDGER_FILE, "ab") as f:
        f.write(b'{"event": "start", "key": "torn"')  # a writer died mid-line
    assert _keys(ledger) == ["k1"]
    ledger.append("start", key="k2", number=1)  # ends the torn line first, then its own
    assert _keys(ledger) == ["k1", "k2"]
    with open(tmp_path / LEDGER_FILE, "ab") as f:  # a line in two writes: seen when whole
        f.write(b'{"event": "start", "key": "k3", ')
        assert _keys(ledger) == ["k1", "k2"]
        f.write(b'"number": 2}\n')
    assert _keys(ledger) == ["k1", "k2", "k3"]


def test_a_rewritten_or_replaced_file_is_read_again(tmp_path):
    path = tmp_path / LEDGER_FILE
    ledger = Ledger(tmp_path)
    ledger.append("start", key="aaaa", number=0)
    assert _keys(ledger) == ["aaaa"]
    path.write_bytes(path.read_bytes().replace(b"aaaa", b"bbbb"))  # same inode, same size
    assert _keys(ledger) == ["bbbb"]
    write_text(path, json.dumps({"event": "start", "key": "c", "number": 0}) + "\n")  # new inode
    assert _keys(ledger) == ["c"]
    path.write_text("")  # emptied
    assert ledger.records() == []
    path.unlink()
    assert ledger.records() == [] and ledger.done("c") is None


def test_lookups_hand_out_copies(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append("done", key="k", number=0, params={"x": 1}, status="finished")
    record = ledger.done("k")
    record["params"]["x"] = 99
    record["status"] = "changed"
    assert ledger.done("k")["params"] == {"x": 1}
    assert ledger.done_by_number(0)["status"] == "finished"


def test_relative_paths_in_different_directories_are_different_ledgers(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Ledger(tmp_path / name).append("start", key=name, number=0)
    monkeypatch.chdir(tmp_path / "a")
    assert _keys(Ledger(".")) == ["a"]
    monkeypatch.chdir(tmp_path / "b")
    assert _keys(Ledger(".")) == ["b"]
