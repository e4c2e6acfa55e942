"""Smoke tests of the benchmarks: every piece's quick run returns well-formed records.

No timing is asserted (the numbers depend on the machine and its load); only the shape of
the records and the writers. The Ray sweep piece starts its own Ray, so it is slow.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package (pyproject installs sweep* and models*).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.run_all import PIECES, main  # noqa: E402


def _check(records: list[dict]) -> None:
    assert records, "a piece must return at least one record"
    common.check_records(records)
    names = [r["name"] for r in records]
    assert len(names) == len(set(names)), "record names must be unique within a piece"
    for r in records:
        if isinstance(r["value"], float):
            assert math.isfinite(r["value"])
        assert isinstance(r["unit"], str)


@pytest.mark.parametrize("name", ["search_efficiency", "cost_growth", "sharing", "analyze_speed",
                                  "gpt_utilisation"])
def test_piece_quick_records(name: str) -> None:
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    _check(module.run(True))
    assert getattr(module, "METHOD", "").strip()


@pytest.mark.slow
def test_sweep_overhead_quick_records(tmp_path) -> None:
    # As a user runs it, in its own process: it starts and times its own Ray, which a Ray
    # left up in this test session (the shared fixture) would otherwise stand in for.
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--quick", "--only",
                           "sweep_overhead", "--out", str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    piece = json.loads((tmp_path / "results.json").read_text())["pieces"]["sweep_overhead"]
    assert piece["quick"] and not piece.get("error")
    records = piece["records"]
    _check(records)
    failed = next(r for r in records if r["name"] == "failed trials")
    assert failed["value"] == 0
    first = next(r for r in records if r["name"].startswith("`collapse-sweep run`"))
    assert "Ray started ... in" in first["note"]  # the run's own status line was read
    # each sweep against the serial chunks timed around it (the host's speed drifts)
    serial = next(r for r in records if r["name"] == "serial chain time per trial")
    assert all(f" s {where}" in serial["note"] for where in (
        "before the pool", "between the pool and Tune", "after Tune"))
    # the chain's construction is timed inside the opening (it is chain work, not overhead)
    opening = next(r for r in records if r["name"].startswith("profile: per trial: opening"))
    build = next(r for r in records if "building the chain" in r["name"])
    assert 0 < build["value"] <= opening["value"]
    # where the cores went: every part measured, and together the cores' time in the sweep
    # (the probe's window holds the sweep plus two scans of the process table)
    cpu = [r["value"] for r in records if r["name"].startswith("profile: CPU per trial")]
    assert len(cpu) == 6 and all(v >= 0 for v in cpu)
    wall = next(r["value"] for r in records if r["name"] == "tune sweep wall")
    trials = next(r["value"] for r in records if r["name"] == "trials")
    assert 0.9 <= sum(cpu) / (2 * wall / trials) <= 1.25


def test_sweep_overhead_refuses_a_ray_it_did_not_start(monkeypatch) -> None:
    import ray

    from benchmarks import sweep_overhead

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="its own Ray"):
        sweep_overhead.run(True)


def test_check_records_rejects_malformed() -> None:
    with pytest.raises(ValueError):
        common.check_records([{"name": "x", "value": 1.0, "unit": "s", "target": None}])
    with pytest.raises(ValueError):
        common.check_records([{"name": "x", "value": 1.0, "unit": "s", "target": None, "met": True}])
    common.check_records([common.record("x", float("nan"), "s")])  # NaN becomes null


def test_writers_merge_previous_pieces(tmp_path) -> None:
    machine = common.machine_info(["bench"])
    assert machine["cores"] and machine["versions"]["numpy"]
    first = {"a": {"records": [common.record("ra", 1.0, "s", target="<= 2", met=True)]},
             "b": {"records": [common.record("rb", 2.0, "s")]}}
    json_path, md_path = tmp_path / "results.json", tmp_path / "RESULTS.md"
    common.write_results(first, machine=machine, order=["a", "b"], json_path=json_path,
                         md_path=md_path)
    again = {"b": {"records": [common.record("rb", 3.0, "s", target=">= 4", met=False)]}}
    pieces = common.merge(common.load_previous(json_path), again)
    common.write_results(pieces, machine=machine, order=["a", "b"], json_path=json_path,
                         md_path=md_path)
    data = json.loads(json_path.read_text())
    assert [(r["piece"], r["name"], r["value"]) for r in data["results"]] == [
        ("a", "ra", 1.0), ("b", "rb", 3.0)]
    assert set(data["machine"]) >= {"cpu", "cores", "ram_gib", "python", "versions", "command"}
    md = md_path.read_text()
    assert "| a | ra | 1 | s | <= 2 | ✓ |" in md and "| b | rb | 3 | s | >= 4 | ✗ |" in md


def test_run_all_only_quick(tmp_path) -> None:
    assert main(["--quick", "--only", "search_efficiency", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["machine"]["pieces_run"] == ["search_efficiency"]
    assert {r["piece"] for r in data["results"]} == {"search_efficiency"}
    assert "## search_efficiency" in (tmp_path / "RESULTS.md").read_text()
    with pytest.raises(SystemExit):
        main(["--only", "nope"])
    assert "sweep_overhead" in PIECES
