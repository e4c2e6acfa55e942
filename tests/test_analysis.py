"""Analysis picks the right front and cheapest config, on known answers and on real chains."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pandas as pd
import pytest

from sweep import load_config, run_chain
from sweep.analysis.core import (
    analyze,
    best_per_regime,
    cheapest_feasible,
    describe,
    fmt_flops,
    load_sweep,
    pareto_front,
    trial_summary,
)
from sweep.analysis.importance import param_importance
from sweep.config import dump_config
from sweep.files.atomic import write_parquet, write_text

TOL = 0.1
OBJ = {"quality_gap": "min", "total_flops": "min"}
SPACE = {"recursion.regime": {"choice": ["replace", "accumulate"]},
         "recursion.real_fraction": {"choice": [0.0, 0.5]},
         "curation.strength": {"choice": [0.0, 0.5]}}


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
        ("k", "failed", 0.0, 1.0, "replace"),           # failed with (stale) numbers: excluded
    ]
    df = pd.DataFrame(rows, columns=["trial_id", "status", "quality_gap", "total_flops",
                                     "param.recursion.regime"])
    df["number"] = range(len(df))
    df["param.recursion.real_fraction"] = np.linspace(0, 1, len(df))
    df["collapsed"] = ~(df.quality_gap <= TOL)
    df["feasible"] = df.status.isin(["finished", "stopped_collapsed"]) & ~df.collapsed
    return df


def test_pareto_front_with_ties_failures_and_collapse():
    front = pareto_front(table(), OBJ)
    assert list(front.trial_id) == ["d", "b", "c"]  # sorted by gap, then number
    everything = pareto_front(table(), OBJ, feasible_only=False)
    assert set(everything.trial_id) == {"b", "c", "d", "e"}  # e: cheapest of all, collapsed


def test_pareto_front_lists_a_reused_chain_once():
    df = table()
    df["reused_from"] = ""
    dup = df[df.trial_id == "d"].assign(trial_id="d2", number=len(df), reused_from="d")
    front = pareto_front(pd.concat([df, dup], ignore_index=True), OBJ)
    assert list(front.trial_id) == ["d", "b", "c"]


def test_pareto_front_directions_and_empty_input():
    df = table().assign(quality=lambda d: -d.quality_gap)
    assert set(pareto_front(df, {"quality": "max", "total_flops": "min"}).trial_id) == {"b", "c", "d"}
    assert pareto_front(table().iloc[0:0], OBJ).empty
    assert pareto_front(table()[table().status != "finished"], OBJ).empty
    with pytest.raises(ValueError, match="min' or 'max"):
        pareto_front(table(), {"quality_gap": "lowest"})


def test_cheapest_feasible_breaks_ties_by_gap_then_number():
    df = table()
    assert cheapest_feasible(df).trial_id == "b"
    # b and c tie on flops and gap: the lower trial number wins, whatever the row order
    swapped = df.assign(number=df.number.where(~df.trial_id.isin(["b", "c"]),
                                               df.trial_id.map({"b": 9, "c": 1})))
    assert cheapest_feasible(swapped.iloc[::-1]).trial_id == "c"
    assert cheapest_feasible(df[df.trial_id.isin(["e", "f", "g", "i", "j", "k"])]) is None


def test_best_per_regime_flags_regimes_without_a_feasible_trial():
    best = best_per_regime(table()[table().trial_id != "h"])
    assert {k: (v["trial_id"], v["feasible"]) for k, v in best.items()} == {
        "accumulate": ("b", True), "replace": ("c", True), "accumulate-subsample": ("j", False)}
    no_regime = best_per_regime(table().drop(columns="param.recursion.regime"), "accumulate")
    assert list(no_regime) == ["accumulate"] and no_regime["accumulate"]["trial_id"] == "b"


def test_description_reads_as_a_sentence():
    text = describe(trial_summary(table().iloc[1]), TOL)
    assert text.startswith("regime=accumulate, real_fraction=0.1 does not collapse "
                           "(gap 0.02 <= 0.10, 1 seed: no interval)")
    assert "at 1.0e2 FLOPs" in text
    five = {**trial_summary(table().iloc[1]), "quality_gap_se": 0.005, "quality_gap_ucb": 0.031,
            "n_seeds": 5, "total_flops_se": 3.0}
    assert "(gap 0.0200 ± 0.0050, 90% bound 0.03 <= 0.10, 5 seeds) at 1.0e2 ± 3.0e0 FLOPs" in \
        describe(five, TOL, 0.9)
    assert fmt_flops(4.1e8) == "4.1e8" and fmt_flops(1.23e-3) == "1.2e-3"


# --------------------------------------------------------------------------- run directories
def base_config(**search):
    return {"name": "sweep", "recursion": {"generations": 8}, "collapse": {"tolerance": TOL},
            "search": {"sampler": "grid", "objectives": OBJ, "space": SPACE, **search}}


def make_run(tmp_path, *, with_running: bool = False, family: str = "gaussian", name: str = "sweep"):
    """A sweep directory built from real analytic chains (no Ray): a 2 x 2 x 2 grid."""
    run = tmp_path / name
    base = base_config() | {"name": name, "model": {"family": family}}
    write_text(run / "sweep.yaml", dump_config(load_config(base)))
    rows = []
    grid = [(r, rf, s) for r in ("replace", "accumulate") for rf in (0.0, 0.5) for s in (0.0, 0.5)]
    for i, (regime, rf, s) in enumerate(grid):
        cfg = load_config(base, [f"recursion.regime={regime}", f"recursion.real_fraction={rf}",
                                 f"curation.strength={s}", "curation.scorer=self"])
        df = run_chain(cfg, seed=i)
        tid = f"t{i}"
        write_parquet(df.assign(seed=i), run / "trials" / tid / "generations.parquet")
        write_text(run / "trials" / tid / "config.yaml", dump_config(cfg))
        summ = df.attrs["summary"]
        rows.append({"trial_id": tid, "number": i, "status": summ["status"],
                     "quality_gap": summ["quality_gap"], "total_flops": summ["total_flops"],
                     "collapsed": summ["collapsed"],
                     "feasible": summ["status"] in ("finished", "stopped_collapsed") and not summ["collapsed"],
                     "generations_run": summ["generations_run"], "seed": i,
                     "param.recursion.regime": regime, "param.recursion.real_fraction": rf,
                     "param.curation.strength": s})
    if with_running:
        # one trial known to the results table, one only as a directory with partial rows
        rows.append({"trial_id": "t98", "number": 98, "status": "running", "quality_gap": np.nan,
                     "total_flops": np.nan, "param.recursion.regime": "replace",
                     "param.recursion.real_fraction": 0.5, "param.curation.strength": 0.0})
        cfg = load_config(base, ["recursion.regime=accumulate"])
        write_parquet(run_chain(cfg).head(3), run / "trials" / "t99" / "generations.parquet")
        write_text(run / "trials" / "t99" / "config.yaml", dump_config(cfg))
    df = pd.DataFrame(rows)
    write_parquet(df.drop(columns=["feasible", "collapsed"]) if with_running else df,
                  run / "results.parquet")
    return run


def expected_cheapest(run) -> str:
    df = pd.read_parquet(run / "results.parquet")
    ok = df[(df.quality_gap <= TOL) & df.status.isin(["finished", "stopped_collapsed"])]
    return ok.sort_values(["total_flops", "quality_gap", "number"]).trial_id.iloc[0]


def test_analyze_writes_json_with_the_cheapest_trial(tmp_path):
    run = make_run(tmp_path)
    summary = analyze(run)
    text = (run / "analysis.json").read_text()
    saved = json.loads(text)
    assert "NaN" not in text and saved == summary
    assert saved["cheapest_feasible"]["trial_id"] == expected_cheapest(run)
    assert saved["cheapest_feasible_text"].startswith("regime=")
    assert set(saved["best_per_regime"]) == {"replace", "accumulate"}
    assert saved["counts"]["trials"] == 8 and saved["counts"]["running"] == 0
    for obj in OBJ:
        assert set(saved["importance"][obj]) == set(SPACE)
    assert saved["importance_source"] == "results.parquet"


def test_analyze_handcrafted_results_with_known_answer(tmp_path):
    run = tmp_path / "known"
    write_text(run / "sweep.yaml", dump_config(load_config(base_config() | {"name": "known"})))
    write_parquet(table(), run / "results.parquet")
    summary = analyze(run)
    assert summary["cheapest_feasible"]["trial_id"] == "b"
    assert {t["trial_id"] for t in summary["pareto_front"]} == {"b", "c", "d"}
    assert summary["counts"] | {"by_status": None} == {
        "trials": 11, "finished": 7, "failed": 3, "running": 1, "feasible": 5, "collapsed": 2,
        "by_status": None}


@pytest.mark.parametrize("study_file", ["optuna.journal", "optuna.db"])  # optuna.db: older runs
def test_param_importance_from_the_study_and_from_results(tmp_path, study_file):
    run = make_run(tmp_path)
    sweep = load_sweep(run)
    from_results = param_importance(run, "quality_gap")
    assert set(from_results) == set(SPACE)
    assert all(v >= 0 for v in from_results.values()) and math.isclose(sum(from_results.values()), 1)

    # the study tune.py writes: multi-objective, study name = run name, params by config path
    dists = {"recursion.regime": optuna.distributions.CategoricalDistribution(["replace", "accumulate"]),
             "recursion.real_fraction": optuna.distributions.FloatDistribution(0.0, 1.0),
             "curation.strength": optuna.distributions.FloatDistribution(0.0, 0.9)}
    from sweep.files.study import open_storage

    storage = (open_storage(run, create=True) if study_file == "optuna.journal"
               else f"sqlite:///{run / study_file}")
    study = optuna.create_study(study_name=run.name, storage=storage,
                                directions=["minimize", "minimize"])
    for _, r in sweep.results.iterrows():
        study.add_trial(optuna.trial.create_trial(
            params={k: r[f"param.{k}"] for k in dists}, distributions=dists,
            values=[r.quality_gap, r.total_flops]))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    from_db = param_importance(run, "total_flops")
    assert set(from_db) == set(SPACE)
    assert analyze(run)["importance_source"] == study_file
    assert set(param_importance(study, "quality_gap")) == set(SPACE)  # a Study itself


def test_param_importance_with_too_few_trials_is_empty(tmp_path):
    run = tmp_path / "few"
    write_text(run / "sweep.yaml", dump_config(load_config(base_config() | {"name": "few"})))
    write_parquet(table().iloc[:3], run / "results.parquet")
    assert param_importance(run, "quality_gap") == {}


def test_running_and_partial_sweeps_still_analyse(tmp_path):
    run = make_run(tmp_path, with_running=True)
    summary = analyze(run)
    assert summary["counts"]["running"] == 2  # t98 (results row) and t99 (directory only)
    assert all(t["trial_id"] not in ("t98", "t99") for t in summary["pareto_front"])
    assert summary["cheapest_feasible"]["trial_id"] == expected_cheapest(run)
    sweep = load_sweep(run)
    t99 = sweep.results.set_index("trial_id").loc["t99"]
    assert t99["param.recursion.regime"] == "accumulate" and t99["generations_run"] == 2
    assert set(sweep.generations.trial_id) == {f"t{i}" for i in range(8)} | {"t99"}


def test_a_sweep_that_just_started_analyses(tmp_path):
    run = tmp_path / "fresh"
    write_text(run / "sweep.yaml", dump_config(load_config(base_config() | {"name": "fresh"})))
    summary = analyze(run)
    assert summary["counts"]["trials"] == 0 and summary["cheapest_feasible"] is None
    assert json.loads((run / "analysis.json").read_text())["pareto_front"] == []
