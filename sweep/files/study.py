"""The sweep's Optuna study on disk: ``RUN_DIR/optuna.journal``, or ``optuna.db`` (older runs).

A sweep made here writes its study with Optuna's ``JournalStorage``: one JSON line per
operation, appended (``fsync``'ed) under a lock file by the driver, the only writer (the
run directory's driver lock sees to that); readers (``analyze``, the dashboard, tests)
replay it. The driver asks and tells Optuna on the trials' critical path, and SQLite cost
the most of it (measured in this process, 64 asks and tells, ``benchmarks/RESULTS.md``):
about 18 ms per ask and 12 ms per tell through SQLAlchemy, and 0.3 s to create the schema
before the first trial; the journal takes about 2 ms, 1.5 ms and 1 ms.

Runs made before (``optuna.db``, SQLite) are read and resumed as they are. Which file a run
has decides; a run never has both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

JOURNAL_FILE = "optuna.journal"
SQLITE_FILE = "optuna.db"
STUDY_FILES = (JOURNAL_FILE, SQLITE_FILE)
JOURNAL_LOCK = f"{JOURNAL_FILE}.lock"  # held while appending; never copied to or from storage


def study_file(run_dir: str | Path) -> Path | None:
    """The run's study file, or None when it has none yet."""
    for name in STUDY_FILES:
        path = Path(run_dir) / name
        if path.is_file():
            return path
    return None


def open_storage(run_dir: str | Path, *, create: bool = False) -> Any:
    """The Optuna storage of the run's study; a new journal when ``create`` and none exists.

    FileNotFoundError when the run has no study and ``create`` is False (nothing is written).
    """
    import optuna

    path = study_file(run_dir)
    if path is None:
        if not create:
            raise FileNotFoundError(f"RUN_DIR: {run_dir} has no {JOURNAL_FILE} (not a sweep, or "
                                    "none of its trials has started)")
        path = Path(run_dir) / JOURNAL_FILE
    if path.name == SQLITE_FILE:
        return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if create:  # the driver, the only writer, holding the run's driver lock
        repair_journal(path)
        # left by a driver killed while appending: Optuna would wait 30 s, then take it
        (path.parent / JOURNAL_LOCK).unlink(missing_ok=True)
    # the lock file optuna-dashboard takes too (it may write notes while a sweep runs)
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return optuna.storages.JournalStorage(backend)


def load_study(run_dir: str | Path, name: str) -> Any:
    """The run's study ``name`` (KeyError when the file has none of that name)."""
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(run_dir))


def complete_lines(data: bytes) -> bytes:
    """``data`` up to its last newline: what a reader of a journal being appended can use."""
    end = data.rfind(b"\n")
    return data[:end + 1] if end >= 0 else b""


def repair_journal(path: Path) -> bool:
    """Cut a line left half-written (a full disk, a copy taken mid-append) off the end of the
    journal before anything is appended after it: Optuna's reader skips an incomplete *last*
    line but refuses one followed by others. True when something was cut."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    kept = complete_lines(data)
    if len(kept) == len(data):
        return False
    with open(path, "r+b") as f:
        f.truncate(len(kept))
    return True
