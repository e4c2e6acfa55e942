"""Is the ledger complete? It is checked against the Optuna study, which outlives it.

Every trial the study holds as COMPLETE had its chain's ``done`` (or ``reuse``) record
written to the ledger before Optuna was told, so a COMPLETE trial without one means the
ledger was deleted, truncated or damaged. Such a ledger is never used to count or rank
trials: ``analyze`` / ``report`` refuse with one line, ``resume`` rebuilds it from the
trials' own records (``trials/<id>/config.yaml`` and checkpoints).
"""

from __future__ import annotations

from pathlib import Path

from sweep.config import ChainConfig, ConfigError, load_config, trial_config
from sweep.engine.replicates import search_seeds, sweep_seeds, trial_key
from sweep.files.checkpoint import CHECKPOINT_FILE
from sweep.files.study import SQLITE_FILE, load_study, study_file
from sweep.rundir.ledger import LEDGER_FILE, Ledger

FIRST_NUMBER_FILE = "first_trial_number"  # the study's first trial of this sweep


def first_number(run_dir: Path) -> int:
    path = Path(run_dir) / FIRST_NUMBER_FILE
    try:
        return int(path.read_text()) if path.is_file() else 0
    except ValueError:
        return 0


def study_trials(run_dir: Path, study_name: str) -> list:
    """The study's trials of this sweep (number >= first_number), [] when there is no study."""
    if study_file(run_dir) is None:
        return []
    try:
        study = load_study(run_dir, study_name)
    except KeyError:
        return []
    first = first_number(run_dir)
    return [t for t in study.get_trials(deepcopy=False) if t.number >= first]


def recorded_numbers(run_dir: Path) -> set[int]:
    """Trial numbers whose result the ledger holds (``done`` or ``reuse``)."""
    return {int(r.get("number", -1)) for r in Ledger(run_dir).records()
            if r.get("event") in ("done", "reuse")}


def complete_numbers(run_dir: Path, study_name: str) -> list[int]:
    """Numbers of the study's COMPLETE trials of this sweep, [] when there is no study.

    An older run's ``optuna.db`` is read with sqlite3 from Optuna's schema (tables
    ``studies`` / ``trials``, state by name): opening an Optuna RDBStorage checks the schema
    version and cost 3-4 s of an ``analyze`` that otherwise takes one. Any surprise (another
    schema, a lock) falls back to Optuna, as does a journal (replayed in milliseconds).
    """
    import sqlite3

    path = study_file(run_dir)
    if path is None:
        return []
    if path.name != SQLITE_FILE:
        from optuna.trial import TrialState

        return [t.number for t in study_trials(run_dir, study_name)
                if t.state == TrialState.COMPLETE]
    try:
        con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute(
                "SELECT t.number FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "WHERE s.study_name = ? AND t.state = 'COMPLETE' AND t.number >= ?",
                (study_name, first_number(run_dir))).fetchall()
        finally:
            con.close()
        return [int(r[0]) for r in rows]
    except sqlite3.Error:
        from optuna.trial import TrialState

        return [t.number for t in study_trials(run_dir, study_name)
                if t.state == TrialState.COMPLETE]


def ledger_gaps(run_dir: Path, study_name: str) -> tuple[int, int]:
    """(trials the study finished that the ledger does not record, trials the study finished)."""
    complete = complete_numbers(run_dir, study_name)
    if not complete:
        return 0, 0
    known = recorded_numbers(run_dir)
    return sum(1 for n in complete if n not in known), len(complete)


def ledger_problem(run_dir: Path, study_name: str) -> str | None:
    """One line saying what is wrong with the ledger, or None when it is complete."""
    run_dir = Path(run_dir)
    if not (run_dir / LEDGER_FILE).is_file() and not (run_dir / FIRST_NUMBER_FILE).is_file():
        return None  # not a directory the driver wrote (a results table made by hand)
    missing, finished = ledger_gaps(run_dir, study_name)
    if not missing:
        return None
    state = "missing" if not (run_dir / LEDGER_FILE).is_file() else "incomplete"
    return (f"{LEDGER_FILE}: {state}: it lacks {missing} of the {finished} trials the study "
            f"finished")


def finished_trials(run_dir: Path, study_name: str) -> int:
    """How many of this sweep's study trials are finished (told COMPLETE or FAIL)."""
    return sum(1 for t in study_trials(run_dir, study_name) if t.state.is_finished())


def trials_with_result(run_dir: Path, study_name: str) -> int:
    """How many of this sweep's trials have their result: told to the study, or recorded in
    the ledger and not yet told (a Ctrl-C between the two; resume tells them without
    rerunning). What "interrupted: N of M trials done" counts: the study alone said 3 where
    the ledger and the status line above it said 5."""
    first = first_number(run_dir)
    told = {t.number for t in study_trials(run_dir, study_name) if t.state.is_finished()}
    return len(told | {n for n in recorded_numbers(run_dir) if n >= first})


def resume_plan(run_dir: Path, config: ChainConfig, total: int) -> tuple[list[int], int]:
    """(study trials to hand out again, new trials to ask) to bring the sweep to ``total``.

    Handed out again: every study trial of this sweep that Optuna was not told about (the
    driver died first) or whose result the ledger does not hold (a lost ledger, an errored
    trial). Their chains resume from their own checkpoints, and a chain whose result the
    ledger holds returns it at once: none is rerun.
    """
    trials = study_trials(run_dir, config.name)
    recorded = recorded_numbers(run_dir)
    adopt = [t.number for t in trials if t.number not in recorded or not t.state.is_finished()]
    return adopt, max(0, total - len(trials))


def recover_starts(run_dir: Path, config: ChainConfig) -> int:
    """Rebuild the ``start`` records a lost ledger held, from the trials' own records.

    A trial directory with a checkpoint but no ledger record is matched, by its config
    (``trials/<id>/config.yaml``), to a study trial the ledger does not know; its chain then
    resumes from that checkpoint instead of running again. Returns the records written.
    """
    ledger = Ledger(run_dir)
    records = ledger.records()
    known_dirs = {r.get("trial_id") for r in records}
    known_numbers = {int(r.get("number", -1)) for r in records
                     if r.get("event") in ("start", "reuse", "done")}
    unclaimed: dict[str, list] = {}
    k = sweep_seeds(config.search)
    for t in study_trials(run_dir, config.name):
        if t.number in known_numbers or not t.params:
            continue
        try:
            cfg = trial_config(config, dict(t.params))
        except ConfigError:
            continue
        key = trial_key(cfg, search_seeds(cfg.seed, k))
        unclaimed.setdefault(key, []).append(t)
    written = 0
    for tdir in sorted(p for p in (Path(run_dir) / "trials").glob("*") if p.is_dir()):
        ckpt = tdir / "ckpt"
        if tdir.name in known_dirs or not ((ckpt / CHECKPOINT_FILE).is_file()
                                           or any(ckpt.glob(f"seed_*/{CHECKPOINT_FILE}"))):
            continue  # recorded, or never ran a chain here (a reused trial's copy)
        try:
            trial_cfg = load_config(tdir / "config.yaml")
        except ConfigError:
            continue
        key = trial_key(trial_cfg, search_seeds(trial_cfg.seed, k))
        if unclaimed.get(key):
            t = unclaimed[key].pop(0)
            ledger.append("start", key=key, trial_id=tdir.name, number=t.number,
                          params=dict(t.params), seed=trial_cfg.seed, node="", recovered=True)
            written += 1
    return written
