"""Analysis picks the right front and cheapest config; the report renders every figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sweep import load_config, run_chain
from sweep.analysis import analyze, cheapest_feasible, load_sweep, pareto_front
from sweep.config import dump_config
from sweep.io import write_parquet, write_text
from sweep.report import build_report

TOL = 0.1
OBJ = {"quality_gap": "min", "total_flops": "min"}


def table() -> pd.DataFrame:
    rows = [  # trial, status, gap, flops, regime
        ("a", "finished", 0.05, 100.0, "accumulate"),   # feasible; tied cheapest with b
        ("b", "finished", 0.02, 100.0, "accumulate"),   # same flops, lower gap: the answer
        ("c", "finished", 0.02, 100.0, "replace"),      # identical objectives to b: a tie
        ("d", "finished", 0.01, 300.0, "accumulate"),   # better gap, more compute: on front
        ("e", "finished", 0.50, 10.0, "replace"),       # cheapest but collapsed
        ("f", "failed", np.nan, np.nan, "replace"),     # failed: never on a front
        ("g", "diverged", np.inf, 5.0, "replace"),      # diverged
        ("h", "finished", 0.03, 400.0, "accumulate-subsample"),  # dominated by b
        ("i", "running", np.nan, 50.0, "replace"),      # still running
        ("j", "stopped_collapsed", 0.9, 60.0, "accumulate-subsample"),
    ]
    df = pd.DataFrame(rows, columns=["trial_id", "status", "quality_gap", "total_flops",
                                     "param.recursion.regime"])
    df["number"] = range(len(df))
    df["collapsed"] = ~(df.quality_gap <= TOL)
    df["feasible"] = df.status.isin(["finished", "stopped_collapsed"]) & ~df.collapsed
    return df


def test_pareto_front_with_ties_failures_and_collapse():
    front = pareto_front(table(), OBJ)
    assert set(front.trial_id) == {"b", "c", "d"}
    everything = pareto_front(table(), OBJ, feasible_only=False)
    assert set(everything.trial_id) == {"b", "c", "d", "e"}  # e: cheapest of all, collapsed


def test_cheapest_feasible_breaks_ties_by_gap_then_number():
    assert cheapest_feasible(table()).trial_id == "b"
    assert cheapest_feasible(table()[table().trial_id.isin(["e", "f", "g", "i"])]) is None


def make_run(tmp_path, *, with_running: bool = False):
    """A sweep directory built from real analytic chains (no Ray needed)."""
    run = tmp_path / "sweep"
    base = {"name": "sweep", "recursion": {"generations": 8}, "collapse": {"tolerance": TOL},
            "search": {"sampler": "grid", "objectives": OBJ}}
    write_text(run / "sweep.yaml", dump_config(load_config(base)))
    rows = []
    for i, (regime, rf, s) in enumerate([(r, rf, s) for r in ("replace", "accumulate")
                                         for rf in (0.0, 0.5) for s in (0.0, 0.5)]):
        cfg = load_config(base, [f"recursion.regime={regime}", f"recursion.real_fraction={rf}",
                                 f"curation.strength={s}", "curation.scorer=self"])
        df = run_chain(cfg)
        tid = f"t{i}"
        write_parquet(df.assign(seed=0), run / "trials" / tid / "generations.parquet")
        summ = df.attrs["summary"]
        rows.append({"trial_id": tid, "number": i, "status": summ["status"],
                     "quality_gap": summ["quality_gap"], "total_flops": summ["total_flops"],
                     "collapsed": summ["collapsed"], "feasible": not summ["collapsed"],
                     "param.recursion.regime": regime, "param.recursion.real_fraction": rf,
                     "param.curation.strength": s})
    if with_running:
        rows.append({"trial_id": "t99", "number": 99, "status": "running",
                     "quality_gap": np.nan, "total_flops": np.nan, "param.recursion.regime": "replace",
                     "param.recursion.real_fraction": 0.1, "param.curation.strength": 0.1})
        write_parquet(run_chain(load_config(base)).head(2), run / "trials" / "t99" / "generations.parquet")
    write_parquet(pd.DataFrame(rows).drop(columns=["feasible", "collapsed"] if with_running else []),
                  run / "results.parquet")
    return run


def test_analyze_writes_json_with_the_cheapest_trial(tmp_path):
    run = make_run(tmp_path)
    summary = analyze(run)
    saved = json.loads((run / "analysis.json").read_text())
    expected = cheapest_feasible(load_sweep(run).results)
    assert saved["cheapest_feasible"]["trial_id"] == expected.trial_id == summary["cheapest_feasible"]["trial_id"]
    assert set(saved["best_per_regime"]) == {"replace", "accumulate"}
    assert set(saved["importance"]["quality_gap"]) == {
        "recursion.regime", "recursion.real_fraction", "curation.strength"}


def test_running_and_partial_sweeps_still_analyse(tmp_path):
    run = make_run(tmp_path, with_running=True)
    summary = analyze(run)
    assert summary["counts"]["running"] == 1
    assert all(t["trial_id"] != "t99" for t in summary["pareto_front"])


@pytest.mark.parametrize("with_running", [False, True])
def test_report_renders_every_figure(tmp_path, with_running):
    run = make_run(tmp_path, with_running=with_running)
    index = build_report(run)
    text = index.read_text()
    assert text.count("<img src=\"data:image/png;base64,") == 4
    for png in ("compute_vs_quality", "phase", "real_nll", "tail"):
        assert (run / "report" / f"{png}.png").stat().st_size > 5_000
    assert "Cheapest non-collapsing configuration" in text and "optuna" in text
    assert (run / "results.csv").is_file() and (run / "generations.csv").is_file()
