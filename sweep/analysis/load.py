"""A sweep directory as tables: results (one row per trial), generations, the base config.

Only files that exist (and parse) are read; a trial directory without a results row counts
as running, and trials without finite objectives (failed, diverged, running) never enter a
front (``complete``).
"""

from __future__ import annotations

import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.config import ChainConfig, ConfigError, load_config
from sweep.rundir.integrity import ledger_problem
from sweep.rundir.layout import SWEEP_FILE, require_sweep_dir
from sweep.rundir.ledger import LEDGER_FILE
from sweep.rundir.results import (  # noqa: F401 - complete re-exported for analysis
    DEFAULT_OBJECTIVES,
    OK_STATUSES,
    complete,
    results_frame,
    write_results,
)

REGIME_COL = "param.recursion.regime"


@dataclass
class Sweep:
    run_dir: Path
    config: ChainConfig
    results: pd.DataFrame
    generations: pd.DataFrame
    objectives: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))
    tolerance: float = 0.1

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def params(self) -> list[str]:
        return [c for c in self.results.columns if c.startswith("param.")]


# --------------------------------------------------------------------------- loading
def load_sweep(run_dir: str | Path, *, generations: bool = True) -> Sweep:
    """The sweep in ``run_dir``; files still missing (a sweep that just started) read as empty.

    ``generations=False`` skips the per-generation tables (one parquet file per trial) when
    only the results are needed (``analyze``): ``Sweep.generations`` is then empty.
    """
    run_dir = require_sweep_dir(run_dir)
    config = load_config(run_dir / SWEEP_FILE)
    tolerance = float(config.collapse.tolerance)
    objectives = dict((config.search or {}).get("objectives") or DEFAULT_OBJECTIVES)
    gens = _read_generations(run_dir / "trials") if generations else None
    results = ledger_results(run_dir, config, objectives)
    if results is None:  # no ledger (a results table made by hand): the table as it is
        results = _read_parquet(run_dir / "results.parquet")
        results = _with_running_trials(results, run_dir / "trials", gens, config)
    results = _normalised(results, tolerance, objectives)
    if gens is None:
        gens = pd.DataFrame(columns=["trial_id", "generation"])
    return Sweep(run_dir, config, results, gens, objectives, tolerance)


def ledger_results(run_dir: Path, config: ChainConfig, objectives: dict[str, str], *,
                   rewrite: bool = False) -> pd.DataFrame | None:
    """One row per trial from the ledger (the source of truth), or None without a ledger.

    results.parquet / .csv are views of it: rebuilt here when missing or unreadable (always
    with ``rewrite``). A ledger
    that lacks trials the Optuna study finished is refused (it would under-count them).
    """
    problem = ledger_problem(run_dir, config.name)
    if problem is not None:
        raise ConfigError(f"{problem}; rebuild it with: collapse-sweep resume "
                          f"{shlex.quote(str(run_dir))}")
    if not (run_dir / LEDGER_FILE).is_file():
        return None
    space = list((config.search or {}).get("space") or {})
    df = results_frame(run_dir, space=space, objectives=list(objectives))
    try:
        if rewrite:
            raise ValueError("rewrite")
        pd.read_parquet(run_dir / "results.parquet")
        pd.read_csv(run_dir / "results.csv")
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: rebuild the views
        write_results(run_dir, df)
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - a foreign or truncated file must not stop analysis
        warnings.warn(f"{path}: unreadable ({exc}); treated as missing", stacklevel=3)
        return pd.DataFrame()


def _read_generations(trials_dir: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(trials_dir.glob("*/generations.parquet")):
        df = _read_parquet(path)
        if not df.empty:
            frames.append(df.assign(trial_id=path.parent.name))
    if not frames:
        return pd.DataFrame(columns=["trial_id", "generation"])
    df = pd.concat(frames, ignore_index=True)
    return df[["trial_id", *[c for c in df.columns if c != "trial_id"]]]


def _with_running_trials(results: pd.DataFrame, trials_dir: Path,
                         generations: pd.DataFrame | None, config: ChainConfig) -> pd.DataFrame:
    """Trial directories that have no results row yet are trials still running."""
    known = set(results["trial_id"].astype(str)) if "trial_id" in results else set()
    space = list((config.search or {}).get("space") or {})
    rows = []
    for tdir in sorted(p for p in trials_dir.glob("*") if p.is_dir()):
        if tdir.name in known:
            continue
        row: dict[str, Any] = {"trial_id": tdir.name, "status": "running",
                               "quality_gap": np.nan, "total_flops": np.nan}
        if generations is None:  # not loaded: read this trial's table only
            gens = _read_parquet(tdir / "generations.parquet")
        else:
            gens = generations[generations["trial_id"] == tdir.name] if not generations.empty else None
        if gens is not None and len(gens) and "generation" in gens:
            row["generations_run"] = int(gens["generation"].max())
        row.update(_trial_params(tdir / "config.yaml", space))
        rows.append(row)
    if not rows:
        return results
    extra = pd.DataFrame(rows)
    return extra if results.empty else pd.concat([results, extra], ignore_index=True)


def _trial_params(path: Path, space: list[str]) -> dict[str, Any]:
    if not path.is_file() or not space:
        return {}
    try:
        tree = load_config(path).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - a half-written trial config only loses its params
        return {}
    out = {}
    for dotted in space:
        node: Any = tree
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        out[f"param.{dotted}"] = node
    return out


def _normalised(df: pd.DataFrame, tolerance: float, objectives: dict[str, str]) -> pd.DataFrame:
    """Every column analysis relies on exists, with a safe dtype (partial tables lack some)."""
    df = df.copy()
    for col in ("quality_gap", "total_flops", *objectives):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float) if col in df else np.nan
    if "trial_id" not in df:
        df["trial_id"] = [f"row{i}" for i in range(len(df))]
    df["trial_id"] = df["trial_id"].astype(str)
    if "status" not in df:
        df["status"] = np.where(np.isfinite(df["quality_gap"]), "finished", "running")
    df["status"] = df["status"].fillna("running").astype(str)
    gap_ok = df["quality_gap"] <= tolerance
    if "collapsed" not in df:
        df["collapsed"] = ~gap_ok
    df["collapsed"] = df["collapsed"].astype("boolean").fillna(~gap_ok).astype(bool)
    if "feasible" not in df:
        df["feasible"] = df["status"].isin(OK_STATUSES) & ~df["collapsed"]
    df["feasible"] = df["feasible"].astype("boolean").fillna(False).astype(bool)
    if "number" not in df:
        df["number"] = np.arange(len(df))
    # Intervals (older run directories: one chain per trial, no interval).
    for col in ("quality_gap_se", "total_flops_se", "collapse_rate"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float) if col in df else np.nan
    bound = pd.to_numeric(df["quality_gap_ucb"], errors="coerce") if "quality_gap_ucb" in df \
        else pd.Series(np.nan, index=df.index)
    df["quality_gap_ucb"] = bound.fillna(df["quality_gap"]).astype(float)
    seeds = pd.to_numeric(df["n_seeds"], errors="coerce") if "n_seeds" in df \
        else pd.Series(np.nan, index=df.index)
    df["n_seeds"] = seeds.fillna(1).astype("int64")
    return df


# --------------------------------------------------------------------------- selection
def native(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
