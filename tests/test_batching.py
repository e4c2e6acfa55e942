"""Several short Optuna trials per Tune trial (``search.batch``, issue 18).

The sizer's arithmetic, the searcher's hand-out and tell without Ray, and a batched sweep
through the command a user types: every Optuna trial keeps its own directory, ledger
records and study entry, and ``resume`` reruns none of them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from ray.tune.search import Searcher

from sweep.config import load_config
from sweep.files.study import load_study
from sweep.rundir.ledger import Ledger
from sweep.search import batching
from sweep.search.batching import MAX_BATCH, TARGET_S, BatchSizer
from tests.test_faults import (  # noqa: F401 - fixtures
    TINY,
    _answer,
    _run,
    _tiny_sweep,
    _tiny_yaml,
    tiny_run,
)


# --------------------------------------------------------------------------- the sizer
def test_auto_starts_at_one_then_fills_the_target():
    sizer = BatchSizer("auto", concurrency=2)
    assert sizer.size(256) == 1  # nothing timed yet
    for _ in range(3):
        sizer.observe(0.25)
    assert sizer.size(256) == math.floor(TARGET_S / 0.25) == 20
    sizer.observe(float("nan"))  # a failed trial's missing time is not a measurement
    assert sizer.size(256) == 20


def test_auto_keeps_long_trials_single_and_caps_tiny_ones():
    slow = BatchSizer("auto", concurrency=2)
    slow.observe(5.0)
    assert slow.size(100) == 1
    tiny = BatchSizer("auto", concurrency=1)
    tiny.observe(0.0)
    assert tiny.size(10_000) == MAX_BATCH


def test_auto_shrinks_near_the_end_so_the_workers_finish_together():
    sizer = BatchSizer("auto", concurrency=2)
    sizer.observe(0.01)  # would want MAX_BATCH
    # guided: at most remaining / (2 x concurrency)
    assert [sizer.size(r) for r in (64, 20, 7, 3, 1, 0)] == [16, 5, 1, 1, 1, 0]


def test_a_fixed_batch_is_kept_up_to_what_remains():
    sizer = BatchSizer(3, concurrency=2)
    assert [sizer.size(r) for r in (10, 3, 2, 1)] == [3, 3, 2, 1]


@pytest.mark.parametrize("value", ["0", "-2", "many", "2.5", "true"])
def test_batch_must_be_positive_or_auto(value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _tiny_yaml(tmp_path / "tiny.yaml")
    code, _out, err = _run(f"run tiny.yaml --set search.batch={value}", capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "search.batch" in lines[0], lines
    assert "auto" in lines[0]  # says what is allowed
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- the searcher
def _searcher(tmp_path: Path, *, batch, total: int, adopt=()):
    from sweep.search.searcher import build_searcher
    from sweep.search.space import validate_search

    config = load_config(TINY, {"search.batch": batch, "search.trials": total})
    (tmp_path / "ledger.jsonl").touch()
    return build_searcher(config, validate_search(config), tmp_path, adopt=adopt, total=total)


def _member_result(number: int, gap: float) -> dict:
    return {"number": number, "status": "finished", "quality_gap": gap, "quality_gap_ucb": gap,
            "total_flops": 10.0 + number, "seconds": 0.1, "failed": False, "done": True}


def test_searcher_hands_out_batches_then_finishes_and_tells_every_member(tmp_path):
    s = _searcher(tmp_path, batch=3, total=4)
    first = batching.members(s.suggest("A"))
    last = s.suggest("B")  # the one left: an unbatched trial, as with batch 1
    assert len(first) == 3 and batching.members(last) is None
    second = [{"number": last["__number"],
               "params": {k: v for k, v in last.items() if not k.startswith("__")}}]
    assert s.suggest("C") == Searcher.FINISHED
    grid = {(m["params"]["recursion.regime"], m["params"]["recursion.real_fraction"])
            for m in first + second}
    assert len(grid) == 4  # the 2 x 2 grid, each point once
    # a member's directory and Tune trial, in the study
    study = load_study(tmp_path, "tiny")
    attrs = {t.number: t.user_attrs for t in study.trials}
    n0 = first[0]["number"]
    assert attrs[n0]["trial_dir"] == f"trials/{batching.member_dir('A', n0)}"
    assert attrs[n0]["tune_trial_id"] == "A"

    # batch A: two members in its report, the third only in the ledger (the batch failed
    # after it finished); trial B failed: FAIL
    lost = first[2]["number"]
    Ledger(tmp_path).append("done", key="k", trial_id=batching.member_dir("A", lost),
                            number=lost, **{k: v for k, v in _member_result(lost, 0.02).items()
                                            if k != "number"})
    report = {batching.BATCH_RESULTS: json.dumps(
        [_member_result(m["number"], 0.01 * (i + 1)) for i, m in enumerate(first[:2])])}
    s.on_trial_complete("A", report, error=True)
    s.on_trial_complete("B", None, error=True)
    states = {t.number: (t.state, t.values) for t in load_study(tmp_path, "tiny").trials}
    assert states[first[0]["number"]] == (optuna.trial.TrialState.COMPLETE, [0.01, 10.0 + n0])
    assert states[lost][0] == optuna.trial.TrialState.COMPLETE
    assert states[second[0]["number"]][0] == optuna.trial.TrialState.FAIL
    assert list(s.sizer.seconds) == [0.1, 0.1, 0.1]  # the told members' times


def test_searcher_adopts_orphans_into_a_batch_before_asking(tmp_path):
    s = _searcher(tmp_path, batch=1, total=4)
    for tid in ("a", "b"):  # asked, then the driver died
        s.suggest(tid)
    s2 = _searcher(tmp_path, batch=4, total=4, adopt=[0, 1])
    numbers = [m["number"] for m in batching.members(s2.suggest("X"))]
    assert numbers == [0, 1, 2, 3]
    assert s2.suggest("Y") == Searcher.FINISHED


def test_one_trial_batches_keep_the_unbatched_config(tmp_path):
    s = _searcher(tmp_path, batch=1, total=2)
    config = s.suggest("A")
    assert batching.BATCH_KEY not in config and config["__number"] == 0
    assert "recursion.regime" in config


# --------------------------------------------------------------------------- a sweep
@pytest.fixture(scope="module")
def batched_run(ray_session, tmp_path_factory) -> Path:
    """The 4-trial grid in Tune trials of 3 and 1, run by the command a user types."""
    import os

    root = tmp_path_factory.mktemp("batched")
    _tiny_yaml(root / "tiny.yaml", **{"search.batch": 3})
    cwd = os.getcwd()
    os.chdir(root)
    try:
        from sweep.cli import main

        assert main(["run", "tiny.yaml", "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    return root / "runs" / "tiny"


def test_batched_sweep_runs_each_trial_once_in_its_own_directory(batched_run, capsys):
    run_dir = batched_run
    study = load_study(run_dir, "tiny")
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    tune_ids = {t.user_attrs["tune_trial_id"] for t in study.trials}
    assert len(tune_ids) == 2  # two Tune trials: 3 members and 1
    for t in study.trials:  # each member's own files, where the study says
        tdir = run_dir / t.user_attrs["trial_dir"]
        assert (tdir / "generations.parquet").is_file() and (tdir / "config.yaml").is_file()
        assert list((tdir / "tb").glob("events.out.tfevents.*"))
    done = [r for r in Ledger(run_dir).records() if r["event"] == "done"]
    assert sorted(r["number"] for r in done) == [0, 1, 2, 3]
    df = pd.read_parquet(run_dir / "results.parquet")
    assert sorted(df["number"]) == [0, 1, 2, 3] and (df["status"] == "finished").all()
    assert set(df["trial_id"]) == {Path(t.user_attrs["trial_dir"]).name for t in study.trials}

    # the same answer as the unbatched sweep of the same grid, and resume reruns nothing
    answer = _answer(run_dir)
    code, _out, err = _run(f"resume {run_dir}", capsys)
    assert code == 0, err
    assert Ledger(run_dir).chains_started() == {r["key"]: 1 for r in done}
    assert _answer(run_dir) == answer
    code, _out, err = _run(f"analyze {run_dir}", capsys)
    assert code == 0, err


def test_batched_and_unbatched_sweeps_agree(batched_run, tiny_run):  # noqa: F811
    assert _answer(batched_run) == _answer(tiny_run)


@pytest.mark.slow
def test_batched_fault_drill_every_trial_once_and_the_same_answer(ray_session, tmp_path,
                                                                   monkeypatch, capsys):
    """A driver SIGKILL and a worker SIGKILL in the middle of a batch: every Optuna trial
    still runs once (the members done are found in the ledger, the one in flight resumes
    from its checkpoint) and the answer is the undisturbed run's."""
    import os
    import signal

    from tests.processes import kill_session
    from tests.test_faults import (
        _check_drill,
        _driver,
        _fault_config,
        _trial_workers_exit,
        _wait_for,
    )

    monkeypatch.chdir(tmp_path)
    # Members long enough (~1 s each here) that a worker cannot end its batch in the time it
    # takes to see that its driver is gone: at 60 generations (0.45 s each here) CI's faster
    # machine finished all six before the kill took effect, leaving nothing to resume.
    cfg = _fault_config(tmp_path / "drill.yaml", **{"search.batch": 3, "recursion.generations": 150})
    assert load_config(cfg).search["batch"] == 3
    code, _, err = _run("run drill.yaml --storage ref --quiet", capsys)
    assert code == 0, err
    reference = _answer(Path("ref/drill"))

    # the driver, once one member of each batch is done and the next ones run
    run_dir = tmp_path / "k" / "drill"
    proc = _driver(["run", "drill.yaml", "--storage", "k", "--quiet"], tmp_path)
    try:
        _wait_for(run_dir, "done", 2, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _trial_workers_exit(proc.pid)
    finally:
        kill_session(proc.pid)
    assert len([r for r in Ledger(run_dir).records() if r["event"] == "done"]) < 6
    code, _out, err = _run("resume k/drill --quiet", capsys)
    assert code == 0, err
    _check_drill(run_dir, reference)

    # a batch's worker, once its second member has started
    run_dir = tmp_path / "w" / "drill"
    proc = _driver(["run", "drill.yaml", "--storage", "w", "--quiet"], tmp_path)
    try:
        _wait_for(run_dir, "start", 3, proc)
        pid = [r for r in Ledger(run_dir).records() if r["event"] == "start"][-1]["pid"]
        os.kill(pid, signal.SIGKILL)
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        kill_session(proc.pid)
    _check_drill(run_dir, reference)
