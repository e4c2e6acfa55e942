"""The sweep's Optuna study file (sweep.files.study): the journal, older SQLite runs, repairs."""

from __future__ import annotations

import optuna
import pytest

from sweep.files.study import (
    JOURNAL_FILE,
    JOURNAL_LOCK,
    complete_lines,
    load_study,
    open_storage,
    repair_journal,
    study_file,
)

DIST = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def _study_with(run, n: int) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=open_storage(run, create=True),
                                directions=["minimize", "minimize"])
    for i in range(n):
        trial = study.ask(DIST)
        study.tell(trial, [trial.params["x"], float(i)])
    return study


def test_a_new_study_is_a_journal_and_reading_writes_nothing(tmp_path):
    assert study_file(tmp_path) is None
    with pytest.raises(FileNotFoundError, match=JOURNAL_FILE):
        open_storage(tmp_path)  # a reader: no file is made
    assert list(tmp_path.iterdir()) == []
    _study_with(tmp_path, 3)
    assert study_file(tmp_path) == tmp_path / JOURNAL_FILE
    assert [t.state for t in load_study(tmp_path, "s").trials] == [
        optuna.trial.TrialState.COMPLETE] * 3
    assert not (tmp_path / JOURNAL_LOCK).exists()  # held only while appending


def test_an_older_runs_sqlite_study_is_read_and_extended(tmp_path):
    optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                        directions=["minimize"]).optimize(lambda t: t.suggest_float("x", 0, 1),
                                                          n_trials=2)
    assert study_file(tmp_path).name == "optuna.db"
    study = optuna.load_study(study_name="s", storage=open_storage(tmp_path, create=True))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert len(load_study(tmp_path, "s").trials) == 3
    assert not (tmp_path / JOURNAL_FILE).exists()  # a run never gets both


def test_a_half_written_last_line_is_cut_before_the_driver_appends(tmp_path):
    """Optuna's reader skips an incomplete last line but refuses one followed by others: a
    driver that appended after it would make the study unreadable."""
    _study_with(tmp_path, 2)
    path = tmp_path / JOURNAL_FILE
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code":4,"worker_id":"x","trial_id":0,"sta')
    assert len(load_study(tmp_path, "s").trials) == 2  # readable as it is
    (tmp_path / JOURNAL_LOCK).write_bytes(b"")  # a driver killed while appending
    study = optuna.load_study(study_name="s", storage=open_storage(tmp_path, create=True))
    assert path.read_bytes() == whole and not (tmp_path / JOURNAL_LOCK).exists()
    trial = study.ask(DIST)
    study.tell(trial, [0.5, 9.0])
    assert len(load_study(tmp_path, "s").trials) == 3
    assert repair_journal(path) is False


def test_complete_lines_is_what_a_copy_taken_mid_append_may_keep():
    assert complete_lines(b'{"a":1}\n{"b":2}\n{"c"') == b'{"a":1}\n{"b":2}\n'
    assert complete_lines(b'{"a":1}\n') == b'{"a":1}\n'
    assert complete_lines(b'{"a"') == b""


def test_interrupted_counts_trials_told_or_recorded_in_the_ledger(tmp_path):
    """Ctrl-C between a trial's ledger `done` and Optuna's tell: it has its result (resume
    does not rerun it), and "interrupted: N of M" counts it (the study alone said 3 of 6
    where the ledger, and the status line just above, said 5)."""
    from sweep.rundir.integrity import FIRST_NUMBER_FILE, finished_trials, trials_with_result
    from sweep.rundir.ledger import Ledger

    (tmp_path / FIRST_NUMBER_FILE).write_text("0")
    study = optuna.create_study(study_name="s", storage=open_storage(tmp_path, create=True),
                                directions=["minimize", "minimize"])
    trials = [study.ask(DIST) for _ in range(5)]
    study.tell(trials[0], [0.1, 1.0])  # 0: done and told
    study.tell(trials[3], state=optuna.trial.TrialState.FAIL)  # 3: errored, told FAIL
    ledger = Ledger(tmp_path)
    for number in (0, 1, 2):  # 1, 2: done in the ledger, not told yet; 4: still running
        ledger.append("done", key=f"k{number}", number=number, status="finished")
    assert finished_trials(tmp_path, "s") == 2
    assert trials_with_result(tmp_path, "s") == 4
