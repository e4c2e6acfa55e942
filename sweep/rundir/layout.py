"""What makes a directory a sweep's run directory (one check, for every command)."""

from __future__ import annotations

from pathlib import Path

from sweep.config import ConfigError

SWEEP_FILE = "sweep.yaml"  # the resolved config, written before any trial runs


def require_sweep_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path when it holds a sweep; else one ConfigError line naming it."""
    run_dir = Path(run_dir)
    if not (run_dir / SWEEP_FILE).is_file():
        raise ConfigError(f"RUN_DIR: {run_dir} is not a sweep directory (no {SWEEP_FILE})")
    return run_dir


def run_exists_error(where: str | Path) -> ConfigError:
    """The error of ``run`` into a run that exists, without ``--extend`` / ``--overwrite``."""
    return ConfigError(f"--name: {where} already exists; add trials to it with --extend (same "
                       "config and search space), start over with --overwrite, or choose "
                       "another --name")


def check_new_run(run_dir: Path, *, extend: bool, overwrite: bool) -> bool:
    """Whether the local run ``run_dir`` exists; ConfigError when that is refused (before Ray
    is imported or started: ``run`` checks it first, ``run_sweep`` again under its lock)."""
    exists = (run_dir / SWEEP_FILE).is_file()
    if exists and not (extend or overwrite):
        raise run_exists_error(run_dir)
    return exists
