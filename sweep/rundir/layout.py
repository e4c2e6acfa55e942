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
