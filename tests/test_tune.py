"""Sweeps on Ray Tune + Optuna: outputs, optimum, failures, resume, two nodes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from sweep.config import load_config, trial_config
from sweep.engine.chain import Chain, run_chain
from sweep.rundir.ledger import Ledger
from tests.processes import kill_session

ROOT = Path(__file__).resolve().parents[1]
REGIMES = ["replace", "accumulate", "accumulate-subsample"]
FRACTIONS = [0.0, 0.25, 0.5, 0.75]
STRENGTHS = [0.0, 0.5]
RESULT_COLUMNS = {
    "trial_id": "object", "number": "int64", "status": "object", "quality_gap": "float64",
    "total_flops": "float64", "collapsed": "bool", "feasible": "bool",
    "generations_run": "int64", "final_real_nll": "float64", "node": "object",
    "seconds": "float64", "seed": "int64",
}


def analytic(name: str, *, sampler: str = "grid", trials: int = 100, generations: int = 10,
             space: dict | None = None, concurrency: int = 2, seeds: int = 1,
             confirm_top: int = 0):
    return load_config({
        "name": name, "seed": 3,
        "model": {"family": "gaussian"},
        "recursion": {"generations": generations, "samples_per_generation": 50},
        "curation": {"scorer": "self"},
        "collapse": {"metric": "real_nll", "tolerance": 0.05},
        "search": {"sampler": sampler, "trials": trials, "concurrency": concurrency,
                   "seeds": seeds, "confirm": {"top": confirm_top}, "space": space or {
                       "recursion.regime": {"choice": REGIMES},
                       "recursion.real_fraction": {"grid": FRACTIONS},
                       "curation.strength": {"grid": STRENGTHS}}},
        "resources": {"cpu": 1, "gpu": 0},
    })


def _study(run_dir: Path, name: str) -> optuna.Study:
    from sweep.files.study import load_study

    return load_study(run_dir, name)


@pytest.mark.parametrize("family", ["gaussian", "gmm"])
def test_shared_model0_gives_identical_chains(family):
    # gmm: the EM iteration count travels with the state, so the fit FLOPs of a shared
    # generation 0 match (the frames compare every column, flops included).
    cfg = load_config({"model": {"family": family}, "recursion": {"generations": 5},
                       "curation": {"scorer": "judge", "strength": 0.5, "judge_models": 2}})
    a = Chain(cfg)
    while not a.done:
        a.step()
    b = Chain(cfg, model0_state=a.model0_state)
    while not b.done:
        b.step()
    pd.testing.assert_frame_equal(a.frame(), b.frame())


@pytest.mark.slow
def test_shared_gpt_model0_gives_identical_metrics():
    cfg = load_config({"model": {"family": "gpt", "size": "xs", "train": {"epochs": 1}},
                       "data": {"source": "truth-lm", "test_size": 50},
                       "recursion": {"generations": 1, "samples_per_generation": 32},
                       "curation": {"scorer": "self", "strength": 0.5}})
    frames = []
    shared = None
    for _ in range(2):
        chain = Chain(cfg, model0_state=shared)
        while not chain.done:
            chain.step()
        shared = chain.model0_state
        frames.append(chain.frame())
    # The GPT's fit diagnostics of generation 0 are not part of its state_dict (a loaded
    # model 0 was not fit here): they are NaN in a shared chain; every metric is identical.
    fit_stats = ["train_loss", "val_loss", "epochs_run", "steps"]
    pd.testing.assert_frame_equal(frames[0].drop(columns=fit_stats), frames[1].drop(columns=fit_stats))
    pd.testing.assert_frame_equal(frames[0].loc[1:], frames[1].loc[1:])


def test_grid_sweep_finds_dense_grid_optimum(ray_session, tmp_path):
    from sweep.search.driver import run_sweep

    cfg = analytic("grid")
    t0 = time.perf_counter()
    run_dir = run_sweep(cfg, storage=str(tmp_path), progress=False)
    wall = time.perf_counter() - t0
    n = len(REGIMES) * len(FRACTIONS) * len(STRENGTHS)

    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == n and sorted(df["number"]) == list(range(n))
    for col, dtype in RESULT_COLUMNS.items():
        assert str(df[col].dtype) in (dtype, "str", "string"), col
    for col in ("param.recursion.regime", "param.recursion.real_fraction",
                "param.curation.strength"):
        assert col in df.columns
    assert (df["status"] == "finished").all()
    assert (df["feasible"] == (df["quality_gap"] <= 0.05)).all()
    assert df["shared_model0"].sum() >= n - 2  # generation 0 computed once (or twice, racing)
    for trial_id in df["trial_id"]:
        tdir = run_dir / "trials" / trial_id
        assert (tdir / "config.yaml").is_file()
        assert len(pd.read_parquet(tdir / "generations.parquet")) == 11
    assert (run_dir / "sweep.yaml").is_file() and (run_dir / "results.csv").is_file()
    assert not list((run_dir / "tune").glob("*/checkpoint_*"))  # pruned once trials finished
    study = _study(run_dir, "grid")
    assert len(study.trials) == n
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all(len(t.constraints) == 1 for t in study.trials)

    # The same grid by plain run_chain calls: same cheapest feasible config and numbers.
    dense = []
    for regime, frac, strength in itertools.product(REGIMES, FRACTIONS, STRENGTHS):
        params = {"recursion.regime": regime, "recursion.real_fraction": frac,
                  "curation.strength": strength}
        s = run_chain(trial_config(cfg, params)).attrs["summary"]
        dense.append({**params, "quality_gap": s["quality_gap"], "total_flops": s["total_flops"]})
    dense = pd.DataFrame(dense)
    feasible = dense[dense["quality_gap"] <= 0.05]
    best_flops = feasible["total_flops"].min()
    sweep_feasible = df[df["feasible"]]
    assert sweep_feasible["total_flops"].min() == pytest.approx(best_flops)
    best = sweep_feasible.sort_values("total_flops").iloc[0]
    winners = feasible[np.isclose(feasible["total_flops"], best_flops)]
    assert any((w["recursion.regime"] == best["param.recursion.regime"]
                and w["recursion.real_fraction"] == best["param.recursion.real_fraction"]
                and w["curation.strength"] == best["param.curation.strength"])
               for _, w in winners.iterrows())
    merged = df.merge(dense, left_on=["param.recursion.regime", "param.recursion.real_fraction",
                                      "param.curation.strength"],
                      right_on=["recursion.regime", "recursion.real_fraction", "curation.strength"])
    np.testing.assert_allclose(merged["quality_gap_x"], merged["quality_gap_y"], rtol=1e-12)
    summary = json.loads((run_dir / "sweep_summary.json").read_text())
    assert summary["trials"] == n and summary["compute_flops"] < summary["compute_flops_per_trial_sum"]
    print(f"\ngrid sweep of {n} trials: {wall:.1f} s wall")


def test_nsga2_sweep_and_failed_trials(faults, tmp_path):
    """Failing chains are `failed` rows and FAIL in Optuna (never left RUNNING)."""
    from sweep.search.driver import run_sweep

    cfg = analytic("fails", sampler="nsga2", trials=10, space={
        "recursion.regime": {"choice": REGIMES},
        "recursion.real_fraction": {"uniform": [0.0, 1.0]}})
    faults.fail("fails", when={"recursion.regime": "accumulate"}, at_generation=1)
    run_dir = run_sweep(cfg, storage=str(tmp_path), progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == 10
    bad = df["param.recursion.regime"] == "accumulate"
    assert (df.loc[bad, "status"] == "failed").all() and not df.loc[bad, "feasible"].any()
    assert (df.loc[~bad, "status"] == "finished").all()
    assert df.loc[bad, "error"].str.contains("test failure").all()
    states = {t.number: t.state for t in _study(run_dir, "fails").trials}
    assert len(states) == 10
    for number, regime in zip(df["number"], df["param.recursion.regime"], strict=True):
        want = optuna.trial.TrialState.FAIL if regime == "accumulate" else optuna.trial.TrialState.COMPLETE
        assert states[number] == want


def test_killed_worker_resumes_from_last_generation(faults, tmp_path):
    from sweep.search.driver import run_sweep

    cfg = analytic("killed", trials=2, generations=8, space={
        "recursion.regime": {"choice": ["accumulate"]},
        "recursion.real_fraction": {"grid": [0.0, 0.5]}})
    faults.kill("killed", after_generation=3)  # each chain SIGKILLs its worker after generation 3
    run_dir = run_sweep(cfg, storage=str(tmp_path), progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == 2 and (df["status"] == "finished").all()
    assert len(faults.killed("killed")) == 2  # both were killed once
    records = Ledger(run_dir).records()
    assert sorted(r["generation"] for r in records if r["event"] == "resume") == [4, 4]
    assert all(v == 1 for v in Ledger(run_dir).chains_started().values())
    for _, row in df.iterrows():
        frame = pd.read_parquet(run_dir / "trials" / row["trial_id"] / "generations.parquet")
        ref = run_chain(trial_config(cfg, {"recursion.regime": "accumulate",
                                           "recursion.real_fraction": row["param.recursion.real_fraction"]}))
        pd.testing.assert_frame_equal(frame.drop(columns="seed"), ref, check_dtype=False)
        assert row["quality_gap"] == ref.attrs["summary"]["quality_gap"]


@pytest.mark.slow
def test_resume_after_driver_kill_runs_each_trial_once(ray_session, tmp_path):
    from sweep.config import dump_config
    from sweep.files.atomic import write_text
    from sweep.search.answer import OK_STATUSES
    from sweep.search.driver import resume_sweep

    cfg = analytic("resume", sampler="tpe", trials=12, generations=30, space={
        "recursion.regime": {"choice": REGIMES},
        "recursion.real_fraction": {"uniform": [0.0, 1.0]},
        "curation.strength": {"uniform": [0.0, 0.9]}})
    cfg_path = write_text(tmp_path / "resume.yaml", dump_config(cfg))
    run_dir = tmp_path / "runs" / "resume"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", str(cfg_path), "--storage",
         str(tmp_path / "runs"), "--quiet"], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            done = [r for r in Ledger(run_dir).records() if r["event"] == "done"]
            if len(done) >= 4:
                break
            assert proc.poll() is None, "driver ended before it was killed"
            time.sleep(0.1)
        else:
            pytest.fail("no trial finished within 120 s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_session(proc.pid)
    done_before = len([r for r in Ledger(run_dir).records() if r["event"] == "done"])
    assert done_before < 12

    resume_sweep(run_dir, progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert sorted(df["number"]) == list(range(12))
    # Every trial ran to a recorded end. The space holds chains that collapse to a point
    # (replace, real fraction ~0, strong curation: the real NLL goes to inf, "diverged");
    # TPE picked one once (real fraction 0.003, strength 0.76), and such a trial is recorded.
    assert df["status"].isin(["finished", "diverged"]).all(), df["status"].tolist()
    starts = Ledger(run_dir).chains_started()
    assert all(count == 1 for count in starts.values()), starts  # no chain ran twice
    chains = len(df[df["reused_from"] == ""])
    assert len(starts) == chains
    study = _study(run_dir, "resume")
    assert len(study.trials) == 12
    # Optuna was told every trial: its result (COMPLETE), or FAIL for a diverged one (a
    # non-finite objective cannot be told); none is left RUNNING. The resumed sampler is
    # reseeded, so whether a diverged config is picked differs from run to run.
    status = dict(zip(df["number"], df["status"], strict=True))
    states = {t.number: t.state.name for t in study.trials}
    assert states == {n: "COMPLETE" if s in OK_STATUSES else "FAIL" for n, s in status.items()}


TWO_NODES = """
import os
import pathlib
import sys
import pandas as pd
from ray.cluster_utils import Cluster
from sweep.config import load_config
from sweep.search.driver import run_sweep

import ray
from tests.faults import ENV, Faults

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
cluster.add_node(num_cpus=1)
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
try:
    cfg = load_config(sys.argv[1])
    # A Gaussian generation takes microseconds: without a pause one node can finish a trial
    # before Tune places the next, and the spread would depend on timing (it did on CI).
    Faults(pathlib.Path(sys.argv[3])).slow(cfg.name, seconds_per_generation=0.1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": "tests.faults.install",
                          "env_vars": {ENV: sys.argv[3], "PYTHONPATH": os.environ["PYTHONPATH"]}})
    run_dir = run_sweep(cfg, storage=sys.argv[2], address=cluster.address, progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    print("NODES", df["node"].nunique(), "ROWS", len(df), "FINISHED", (df.status == "finished").sum())
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.slow
def test_two_node_sweep_uses_both_nodes(tmp_path):
    from sweep.config import dump_config
    from sweep.files.atomic import write_text

    cfg = analytic("nodes", trials=6, generations=20, space={
        "recursion.regime": {"choice": REGIMES}, "recursion.real_fraction": {"grid": [0.0, 0.5]}})
    cfg_path = write_text(tmp_path / "nodes.yaml", dump_config(cfg))
    faults_dir = tmp_path / "faults"
    faults_dir.mkdir()
    out = subprocess.run([sys.executable, "-c", TWO_NODES, str(cfg_path), str(tmp_path / "runs"),
                          str(faults_dir)],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=240)
    assert "NODES 2 ROWS 6 FINISHED 6" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]


@pytest.mark.slow
def test_quick_yaml_demo_sweep(ray_session, tmp_path):
    """configs/quick.yaml runs end to end through Tune: search, confirmation, results.

    Scaled to 4 single-seed trials and one 2-seed confirmation (the full demo takes 6-8 min
    of 2 idle cores, too much for CI's budget). What the demo claims is tested elsewhere:
    model 0 passes the health check and replace collapses while accumulate does not
    (tests/test_demo_config.py), and its printed answer against a dense grid
    (notes/DEMO_GRID.md).
    """
    from sweep.config import load_config
    from sweep.rundir.confirmation import confirmation_candidates, confirmation_frame
    from sweep.search.driver import run_sweep

    cfg = load_config(ROOT / "configs" / "quick.yaml", {
        "search.trials": 4, "search.seeds": 1, "search.confirm": {"top": 1, "seeds": 2},
        "search.check": False})
    run_dir = run_sweep(cfg, storage=str(tmp_path), progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == 4 and df["status"].isin(["finished", "stopped_collapsed"]).all()
    assert set(df["param.recursion.regime"]) <= {"replace", "accumulate", "accumulate-subsample"}
    # one confirmation exactly when some trial's mean gap was within the tolerance
    assert len(confirmation_frame(run_dir)) == len(
        confirmation_candidates(df, 1, tolerance=cfg.collapse.tolerance))


# --------------------------------------------------------------------------- no-Ray units
def _run_dir_with(tmp_path: Path, cfg) -> Path:
    from sweep.config import dump_config
    from sweep.files.atomic import write_text

    run_dir = tmp_path / cfg.name
    write_text(run_dir / "sweep.yaml", dump_config(cfg))
    return run_dir


def test_ledger_returns_done_trial_without_running_it(tmp_path, monkeypatch):
    import sweep.search.trial
    from sweep.search.trial import run_trial

    monkeypatch.setattr(sweep.search.trial, "REPORT_EVERY_S", 0.0)  # every generation reports

    cfg = analytic("ledger", generations=3)
    run_dir = _run_dir_with(tmp_path, cfg)
    params = {"recursion.regime": "replace", "recursion.real_fraction": 0.5, "curation.strength": 0.0}
    reports: list[tuple[dict, Path | None]] = []
    first = run_trial(run_dir, params, trial_id="a", number=0, node="n",
                      report=lambda m, c: reports.append((m, c)))
    assert len(reports) == 4 and reports[-1][0]["done"] and not reports[-1][0]["failed"]
    again = run_trial(run_dir, params, trial_id="b", number=5, node="n",
                      report=lambda m, c: reports.append((m, c)))
    assert again["quality_gap"] == first["quality_gap"] and len(reports) == 5
    assert Ledger(run_dir).chains_started() == {first["key"]: 1}
    assert (run_dir / "trials" / "b" / "generations.parquet").is_file()  # copied for trial b
    events = [r["event"] for r in Ledger(run_dir).records()]
    assert events == ["start", "done", "reuse"]


def test_a_seed_that_stopped_early_is_not_checkpointed_again(tmp_path, monkeypatch):
    """Three seeds of one trial stop early (collapsed) at generations 15, 7 and 8 of 20: each
    chain's checkpoint is written once per generation it ran, not once per step of the trial
    (rewriting the stopped ones with the others); and a trial stopped after step 11, when two
    seeds had stopped, resumes from those files to the record of an undisturbed run."""
    from collections import Counter

    import sweep.search.trial as trial_mod
    from sweep.search.trial import TrialRun, run_trial

    cfg = analytic("early", generations=20, seeds=3)
    cfg = cfg.model_copy(update={"collapse": cfg.collapse.model_copy(update={"stop_early": True})})
    params = {"recursion.regime": "replace", "recursion.real_fraction": 0.5,
              "curation.strength": 0.2}
    writes: Counter = Counter()
    save = trial_mod.save_checkpoint
    monkeypatch.setattr(trial_mod, "save_checkpoint",
                        lambda d, state: (writes.update([Path(d).name]), save(d, state))[1])
    run_dir = _run_dir_with(tmp_path / "whole", cfg)
    whole = run_trial(run_dir, params, trial_id="a", number=0, node="n", report=lambda m, c: None)
    frame = pd.read_parquet(run_dir / "trials" / "a" / "generations.parquet")
    ran = frame.groupby("seed").size().to_dict()  # generations each seed ran, 0 included
    assert sorted(ran.values()) == [8, 9, 16]
    assert {int(k.removeprefix("seed_")): n for k, n in writes.items() if k.startswith("seed_")} == ran

    run_dir = _run_dir_with(tmp_path / "stopped", cfg)
    step, steps = TrialRun.step, []

    def stop_after_11(self, logger):
        if len(steps) == 11:
            raise KeyboardInterrupt  # not a chain's error: the trial's process ends here
        steps.append(1)
        return step(self, logger)

    monkeypatch.setattr(TrialRun, "step", stop_after_11)
    with pytest.raises(KeyboardInterrupt):
        run_trial(run_dir, params, trial_id="a", number=0, node="n", report=lambda m, c: None)
    monkeypatch.setattr(TrialRun, "step", step)
    again = run_trial(run_dir, params, trial_id="a", number=0, node="n", report=lambda m, c: None)
    # seed 3 restored after 11 generations; seeds 4 and 5 as they stopped, after 8 and 9
    assert [r["generation"] for r in Ledger(run_dir).records() if r["event"] == "resume"] == [
        11, 8, 9]
    for key in ("quality_gap", "total_flops", "collapse_rate", "generations_run"):
        assert again[key] == whole[key], key
    pd.testing.assert_frame_equal(
        pd.read_parquet(run_dir / "trials" / "a" / "generations.parquet"), frame)


def test_two_trials_of_one_config_never_both_start_its_chain(tmp_path, monkeypatch):
    """Trial b checks the ledger before trial a has started the same chain (a duplicate a
    sampler asked twice, or a trial handed out again after a crash beside a new one); a then
    starts and finishes. b's claim of the chain finds a's start: b returns a's result and
    the chain ran once (the check and the start were two steps, and both trials started)."""
    from sweep.search.trial import TrialRun, run_trial

    cfg = analytic("dup", generations=3)
    run_dir = _run_dir_with(tmp_path, cfg)
    params = {"recursion.regime": "replace", "recursion.real_fraction": 0.5, "curation.strength": 0.0}
    checked = TrialRun.recorded_result

    def stale_check(self):  # b's first look: before a started
        monkeypatch.setattr(TrialRun, "recorded_result", checked)
        first = run_trial(run_dir, params, trial_id="a", number=0, node="n",
                          report=lambda m, c: None)
        assert first["status"] == "finished"
        return None

    monkeypatch.setattr(TrialRun, "recorded_result", stale_check)
    b = run_trial(run_dir, params, trial_id="b", number=1, node="n", report=lambda m, c: None)
    assert b["trial_id"] == "a"  # a's record
    assert Ledger(run_dir).chains_started() == {b["key"]: 1}
    assert [r["event"] for r in Ledger(run_dir).records()] == ["start", "done", "reuse"]


def test_a_trial_the_driver_died_asking_gets_all_its_params_on_resume(tmp_path):
    """Optuna stores a trial's params one at a time; a driver killed between two left trial 4
    with its regime but not its real_fraction, resume handed it out so, it ran as a duplicate
    of trial 3 and its grid point never ran (the fault drill, 2 runs in 4). Now the sampler
    fills in what is missing, and the grid is covered once."""
    from sweep.search.searcher import build_searcher
    from sweep.search.space import validate_search

    cfg = analytic("half", trials=4, space={"recursion.regime": {"choice": ["replace", "accumulate"]},
                                            "recursion.real_fraction": {"grid": [0.0, 0.5]}})
    run_dir = _run_dir_with(tmp_path, cfg)
    spec = validate_search(cfg)
    first = build_searcher(cfg, spec, run_dir)
    configs = [first.suggest(f"t{i}") for i in range(2)]
    half = first.study.ask()  # the third ask, cut short after its first param
    half.suggest_categorical("recursion.regime", ["replace", "accumulate"])
    assert set(half.params) == {"recursion.regime"}

    resumed = build_searcher(cfg, spec, run_dir, resume=True, adopt=[half.number])
    configs += [resumed.suggest("t2"), resumed.suggest("t3")]
    points = {(c["recursion.regime"], c["recursion.real_fraction"]) for c in configs}
    assert len(points) == 4  # every grid point once
    assert configs[2]["__number"] == half.number
    assert configs[2]["recursion.regime"] == half.params["recursion.regime"]


def test_ledger_claim_lets_one_of_many_racing_trials_start_a_chain(tmp_path):
    import threading

    ledger = Ledger(tmp_path)
    barrier = threading.Barrier(8)
    owners: list[dict | None] = [None] * 8

    def claim(i: int) -> None:
        barrier.wait()
        owners[i] = ledger.claim("k", number=i, trial_id=f"t{i}")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, o in enumerate(owners) if o is None]
    assert len(winners) == 1 and ledger.chains_started() == {"k": 1}
    assert all(o["number"] == winners[0] for o in owners if o is not None)


def test_short_trial_reports_once_but_checkpoints_every_generation(tmp_path, monkeypatch):
    """Tune hears of a fast chain once (its end); the own checkpoint follows every generation."""
    import sweep.search.trial
    from sweep.files.checkpoint import load_checkpoint
    from sweep.search.trial import run_trial

    saved: list[int] = []
    real_save = sweep.search.trial.save_checkpoint

    def spy(path, payload):
        if Path(path).name == "ckpt":
            saved.append(int(payload["generation"]))
        real_save(path, payload)

    monkeypatch.setattr(sweep.search.trial, "save_checkpoint", spy)
    cfg = analytic("cadence", generations=4)
    run_dir = _run_dir_with(tmp_path, cfg)
    reports: list[tuple[dict, Path | None]] = []
    run_trial(run_dir, {"recursion.regime": "accumulate", "recursion.real_fraction": 0.5,
                        "curation.strength": 0.0}, trial_id="a", number=0, node="n",
              report=lambda m, c: reports.append((m, c)))
    assert [(m["done"], c) for m, c in reports] == [(True, None)]
    assert saved == [1, 2, 3, 4, 5]  # generation counter after each of generations 0..4
    assert load_checkpoint(run_dir / "trials" / "a" / "ckpt")["generation"] == 5
    assert len(pd.read_parquet(run_dir / "trials" / "a" / "generations.parquet")) == 5


def test_resumed_searcher_hands_out_unrecorded_trials_first(tmp_path):
    """After a crash, study trials whose result the ledger lacks are suggested first."""
    from sweep.rundir.integrity import resume_plan
    from sweep.search.searcher import build_searcher
    from sweep.search.space import validate_search

    cfg = analytic("orphans", sampler="random", trials=6, space={
        "recursion.real_fraction": {"uniform": [0.0, 1.0]}})
    spec = validate_search(cfg)
    run_dir = tmp_path / "orphans"
    run_dir.mkdir()
    searcher = build_searcher(cfg, spec, run_dir)
    first = searcher.suggest("t0")
    Ledger(run_dir).append("done", key="k0", trial_id="t0", number=0)
    searcher.on_trial_complete("t0", {"quality_gap": 0.01, "total_flops": 10.0, "failed": False})
    lost_done = searcher.suggest("t1")  # finished, told, but its ledger line was lost
    searcher.on_trial_complete("t1", {"quality_gap": 0.5, "total_flops": 5.0, "failed": False})
    lost_running = searcher.suggest("t2")  # running when the driver died

    adopt, new = resume_plan(run_dir, cfg, spec.num_trials)
    assert adopt == [1, 2] and new == 3
    restored = build_searcher(cfg, spec, run_dir, resume=True, adopt=adopt)
    again = [restored.suggest(f"r{i}") for i in range(3)]
    assert [a["__number"] for a in again] == [1, 2, 3]
    assert again[0] == lost_done and again[1] == lost_running and again[2] != first
    restored.on_trial_complete("r0", {"quality_gap": 0.5, "total_flops": 5.0, "failed": False})
    restored.on_trial_complete("r1", {"quality_gap": float("nan"), "total_flops": 5.0,
                                      "failed": False})
    states = [t.state.name for t in _study(run_dir, "orphans").trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "RUNNING"]


@pytest.mark.parametrize("sampler", ["cheapest", "nsga2", "tpe", "gp", "random", "grid"])
def test_every_sampler_asks_and_tells_with_the_constraint(tmp_path, sampler):
    from sweep.search.searcher import build_searcher
    from sweep.search.space import validate_search

    space = {"recursion.regime": {"choice": REGIMES},
             "recursion.real_fraction": {"uniform": [0.0, 1.0], "step": 0.5}}
    cfg = analytic(f"s-{sampler}", sampler=sampler, trials=5, space=space)
    spec = validate_search(cfg)
    searcher = build_searcher(cfg, spec, tmp_path)
    for i in range(spec.num_trials):
        params = searcher.suggest(f"t{i}")
        gap = params["recursion.real_fraction"] * 0.1
        searcher.on_trial_complete(f"t{i}", {"quality_gap": gap, "total_flops": 1.0 + i,
                                             "failed": False})
    trials = _study(tmp_path, f"s-{sampler}").trials
    assert len(trials) == 5 and all(t.state.name == "COMPLETE" for t in trials)
    assert all(max(t.constraints.values()) <= 0.1 - 0.05 + 1e-12 for t in trials)
    if sampler in ("grid", "cheapest"):  # 5 distinct grid points of 9
        assert len({tuple(t.params.values()) for t in trials}) == 5
