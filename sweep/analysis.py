"""Read a sweep directory and answer: which configs do not collapse, and which is cheapest.

Works on finished, running and partly failed sweeps: only files that exist (and parse) are
read, a trial directory without a results row counts as running, and trials without
finite objectives (failed, diverged, still running) never enter a front.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.config import ChainConfig, ConfigError, load_config
from sweep.io import write_text

OK_STATUS = ("finished", "stopped_collapsed")
DEFAULT_OBJECTIVES = {"quality_gap": "min", "total_flops": "min"}
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
def load_sweep(run_dir: str | Path) -> Sweep:
    """The sweep in ``run_dir``; files still missing (a sweep that just started) read as empty."""
    run_dir = Path(run_dir)
    if not (run_dir / "sweep.yaml").is_file():
        raise ConfigError(f"RUN_DIR: {run_dir} is not a sweep directory (no sweep.yaml)")
    config = load_config(run_dir / "sweep.yaml")
    tolerance = float(config.collapse.tolerance)
    objectives = dict((config.search or {}).get("objectives") or DEFAULT_OBJECTIVES)
    results = _read_parquet(run_dir / "results.parquet")
    generations = _read_generations(run_dir / "trials")
    results = _with_running_trials(results, run_dir / "trials", generations, config)
    results = _normalised(results, tolerance, objectives)
    return Sweep(run_dir, config, results, generations, objectives, tolerance)


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


def _with_running_trials(results: pd.DataFrame, trials_dir: Path, generations: pd.DataFrame,
                         config: ChainConfig) -> pd.DataFrame:
    """Trial directories that have no results row yet are trials still running."""
    known = set(results["trial_id"].astype(str)) if "trial_id" in results else set()
    space = list((config.search or {}).get("space") or {})
    rows = []
    for tdir in sorted(p for p in trials_dir.glob("*") if p.is_dir()):
        if tdir.name in known:
            continue
        row: dict[str, Any] = {"trial_id": tdir.name, "status": "running",
                               "quality_gap": np.nan, "total_flops": np.nan}
        gens = generations[generations["trial_id"] == tdir.name] if not generations.empty else None
        if gens is not None and len(gens):
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
        df["feasible"] = df["status"].isin(OK_STATUS) & ~df["collapsed"]
    df["feasible"] = df["feasible"].astype("boolean").fillna(False).astype(bool)
    if "number" not in df:
        df["number"] = np.arange(len(df))
    return df


# --------------------------------------------------------------------------- selection
def _complete(df: pd.DataFrame, objectives: dict[str, str]) -> pd.DataFrame:
    """Trials with a usable result: ok status and finite values of every objective."""
    if df.empty:
        return df
    mask = df["status"].isin(OK_STATUS) if "status" in df else pd.Series(True, index=df.index)
    for name in objectives:
        if name not in df:
            raise KeyError(f"objective {name!r} is not a column of the results "
                           f"(columns: {', '.join(map(str, df.columns))})")
        vals = pd.to_numeric(df[name], errors="coerce").astype(float)
        mask &= np.isfinite(vals)
    return df[mask]


def _feasible(df: pd.DataFrame) -> pd.Series:
    if "feasible" in df:
        return df["feasible"].fillna(False).astype(bool)
    if "collapsed" in df:
        return ~df["collapsed"].fillna(True).astype(bool)
    raise KeyError("results need a `feasible` or `collapsed` column to tell collapse apart")


def pareto_front(df: pd.DataFrame, objectives: dict[str, str] | None = None, *,
                 feasible_only: bool = True) -> pd.DataFrame:
    """Non-dominated trials, sorted by the objectives.

    Ties: identical objective vectors never dominate each other, so all are on the front.
    Failed, diverged and running trials and NaN/inf objectives are never on it. A trial that
    reused an earlier trial's chain (the same config, column ``reused_from``) is that chain:
    the front lists it once, as the trial that ran it.
    """
    objectives = dict(objectives or DEFAULT_OBJECTIVES)
    bad = {k: v for k, v in objectives.items() if v not in ("min", "max")}
    if bad:
        raise ValueError(f"objectives: directions must be 'min' or 'max', got {bad}")
    pool = _complete(df, objectives)
    if "reused_from" in pool and not pool.empty:
        pool = pool[pool["reused_from"].fillna("").astype(str) == ""]
    if feasible_only and not pool.empty:
        pool = pool[_feasible(pool)]
    if pool.empty:
        return pool
    signs = np.array([1.0 if mode == "min" else -1.0 for mode in objectives.values()])
    values = pool[list(objectives)].to_numpy(dtype=float) * signs  # minimise every column
    # i is dominated when some j is <= everywhere and < somewhere (pairwise, n^2 is fine here).
    le = np.all(values[None, :, :] <= values[:, None, :], axis=2)
    lt = np.any(values[None, :, :] < values[:, None, :], axis=2)
    front = pool[~np.any(le & lt, axis=1)]
    keys = list(objectives) + (["number"] if "number" in front else [])
    ascending = [m == "min" for m in objectives.values()] + ([True] if "number" in front else [])
    return front.sort_values(keys, ascending=ascending, kind="stable")


def cheapest_feasible(df: pd.DataFrame) -> pd.Series | None:
    """Lowest total_flops among feasible trials; ties: lower gap, then lower trial number."""
    pool = _complete(df, DEFAULT_OBJECTIVES)
    if not pool.empty:
        pool = pool[_feasible(pool)]
    if pool.empty:
        return None
    order = ["total_flops", "quality_gap"] + (["number"] if "number" in pool else [])
    return pool.sort_values(order, kind="stable").iloc[0]


def best_per_regime(df: pd.DataFrame, base_regime: str = "replace") -> dict[str, dict[str, Any]]:
    """Per regime: the cheapest feasible trial, else the lowest-gap one (``feasible: False``).

    The regime is ``param.recursion.regime`` when searched, else ``base_regime``.
    """
    pool = _complete(df, DEFAULT_OBJECTIVES)
    if pool.empty:
        return {}
    regimes = pool[REGIME_COL].astype(str) if REGIME_COL in pool else \
        pd.Series(base_regime, index=pool.index)
    out = {}
    for regime, group in pool.groupby(regimes, sort=True):
        best = cheapest_feasible(group)
        feasible = best is not None
        if best is None:
            order = ["quality_gap", "total_flops"] + (["number"] if "number" in group else [])
            best = group.sort_values(order, kind="stable").iloc[0]
        out[str(regime)] = {**trial_summary(best), "feasible": feasible}
    return out


# --------------------------------------------------------------------------- summaries
def _native(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def short_names(paths: list[str]) -> dict[str, str]:
    """`recursion.real_fraction` -> `real_fraction`, unless two paths share that last part."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (s if last.count(s) == 1 else p) for p, s in zip(paths, last, strict=True)}


def trial_summary(row: pd.Series) -> dict[str, Any]:
    keys = ["trial_id", "number", "status", "quality_gap", "total_flops", "collapsed"]
    out = {k: _native(row[k]) for k in keys if k in row}
    out["params"] = {k[len("param."):]: _native(v) for k, v in row.items()
                     if str(k).startswith("param.") and not _isnan(v)}
    return out


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def fmt_flops(x: float | None) -> str:
    """1.2e9 style (compact, no '+' or leading zeros in the exponent)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    mantissa, exp = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exp)}"


def fmt_gap(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.2f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}"


def fmt_value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def describe(best: dict[str, Any], tolerance: float) -> str:
    """In words: 'regime=accumulate, real_fraction=0.32 does not collapse (gap 0.03 <= 0.10) ...'."""
    names = short_names(list(best["params"]))
    params = ", ".join(f"{names[k]}={fmt_value(v)}" for k, v in best["params"].items())
    return (f"{params or 'the base config'} does not collapse (gap {fmt_gap(best['quality_gap'])} "
            f"<= {fmt_gap(tolerance)}) at {fmt_flops(best['total_flops'])} FLOPs "
            f"(trial {best.get('trial_id')})")


def counts(df: pd.DataFrame) -> dict[str, int]:
    status = df["status"] if "status" in df else pd.Series(dtype=str)
    return {
        "trials": int(len(df)),
        "finished": int(status.isin(OK_STATUS).sum()),
        "failed": int((~status.isin([*OK_STATUS, "running"])).sum()),
        "running": int((status == "running").sum()),
        "feasible": int(df["feasible"].sum()) if "feasible" in df else 0,
        "collapsed": int((status.isin(OK_STATUS) & df.get("collapsed", False)).sum()),
        "by_status": {str(k): int(v) for k, v in status.value_counts().sort_index().items()},
    }


def summarize(sweep: Sweep) -> dict[str, Any]:
    from sweep.importance import importance_with_source

    df = sweep.results
    front = pareto_front(df, sweep.objectives)
    importance, source = {}, "results.parquet"
    for obj in sweep.objectives:
        importance[obj], source = importance_with_source(sweep, obj)
    best = cheapest_feasible(df)
    cheapest = trial_summary(best) if best is not None else None
    return {
        "run_dir": str(sweep.run_dir),
        "name": sweep.name,
        "tolerance": sweep.tolerance,
        "collapse_metric": sweep.config.collapse.metric,
        "objectives": sweep.objectives,
        "counts": counts(df),
        "cheapest_feasible": cheapest,
        "cheapest_feasible_text": describe(cheapest, sweep.tolerance) if cheapest else None,
        "pareto_front": [trial_summary(r) for _, r in front.iterrows()],
        "best_per_regime": best_per_regime(df, sweep.config.recursion.regime),
        "importance": importance,
        "importance_source": source,
    }


def _jsonable(o: Any) -> Any:
    """Strict JSON: NaN/inf become null, numpy scalars plain numbers."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    o = _native(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if o is None or isinstance(o, bool | int | float | str):
        return o
    return str(o)


def analyze(run_dir: str | Path, *, console: Any = None) -> dict[str, Any]:
    """Print the analysis with rich and write RUN_DIR/analysis.json (atomically); return it."""
    from sweep.analysis_view import print_analysis

    summary = _jsonable(summarize(load_sweep(run_dir)))
    write_text(Path(run_dir) / "analysis.json", json.dumps(summary, indent=2, allow_nan=False))
    print_analysis(summary, console=console)
    return summary
