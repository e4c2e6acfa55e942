"""Read a sweep directory and answer: which configs do not collapse, and which is cheapest.

Works on finished, running and partly failed sweeps: only files that exist are read, and
trials without finite objectives (failed, diverged, still running) never enter a front.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.config import ChainConfig, load_config
from sweep.io import write_text

OK_STATUS = ("finished", "stopped_collapsed")
DEFAULT_OBJECTIVES = {"quality_gap": "min", "total_flops": "min"}


@dataclass
class Sweep:
    run_dir: Path
    config: ChainConfig
    results: pd.DataFrame
    generations: pd.DataFrame
    objectives: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))

    @property
    def tolerance(self) -> float:
        return float(self.config.collapse.tolerance)

    @property
    def params(self) -> list[str]:
        return [c for c in self.results.columns if c.startswith("param.")]


def load_sweep(run_dir: str | Path) -> Sweep:
    run_dir = Path(run_dir)
    config = load_config(run_dir / "sweep.yaml")
    path = run_dir / "results.parquet"
    results = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    results = _with_feasibility(results, config.collapse.tolerance)
    frames = []
    for gen_file in sorted((run_dir / "trials").glob("*/generations.parquet")):
        df = pd.read_parquet(gen_file)
        df.insert(0, "trial_id", gen_file.parent.name)
        frames.append(df)
    generations = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    objectives = dict((config.search or {}).get("objectives") or DEFAULT_OBJECTIVES)
    return Sweep(run_dir, config, results, generations, objectives)


def _with_feasibility(df: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Fill `feasible` / `collapsed` where a partial table lacks them."""
    df = df.copy()
    if df.empty:
        return df
    gap = pd.to_numeric(df.get("quality_gap"), errors="coerce")
    if "collapsed" not in df:
        df["collapsed"] = ~(gap <= tolerance)
    if "feasible" not in df:
        status_ok = df["status"].isin(OK_STATUS) if "status" in df else True
        df["feasible"] = status_ok & (gap <= tolerance)
    df["feasible"] = df["feasible"].fillna(False).astype(bool)
    return df


def _complete(df: pd.DataFrame, objectives: dict[str, str]) -> pd.DataFrame:
    """Trials with a usable result: ok status and finite values of every objective."""
    if df.empty:
        return df
    mask = df["status"].isin(OK_STATUS) if "status" in df else pd.Series(True, index=df.index)
    for name in objectives:
        vals = pd.to_numeric(df.get(name), errors="coerce")
        mask &= np.isfinite(vals.astype(float))
    return df[mask]


def pareto_front(df: pd.DataFrame, objectives: dict[str, str] | None = None, *,
                 feasible_only: bool = True) -> pd.DataFrame:
    """Non-dominated trials (ties: identical objective vectors are all on the front)."""
    objectives = objectives or DEFAULT_OBJECTIVES
    pool = _complete(df, objectives)
    if feasible_only and "feasible" in pool:
        pool = pool[pool["feasible"]]
    if pool.empty:
        return pool
    signs = np.array([1.0 if mode == "min" else -1.0 for mode in objectives.values()])
    values = pool[list(objectives)].to_numpy(dtype=float) * signs  # minimise all
    dominated = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        better_eq = np.all(values <= v, axis=1)
        strictly = np.any(values < v, axis=1)
        dominated[i] = bool(np.any(better_eq & strictly))
    front = pool[~dominated]
    return front.sort_values(list(objectives), kind="stable")


def cheapest_feasible(df: pd.DataFrame) -> pd.Series | None:
    """Lowest total_flops among feasible trials; ties: lower gap, then lower trial number."""
    pool = _complete(df, {"quality_gap": "min", "total_flops": "min"})
    if "feasible" in pool:
        pool = pool[pool["feasible"]]
    if pool.empty:
        return None
    order = ["total_flops", "quality_gap"] + (["number"] if "number" in pool else [])
    return pool.sort_values(order, kind="stable").iloc[0]


def best_per_regime(df: pd.DataFrame, base_regime: str) -> dict[str, dict[str, Any]]:
    """Per regime: the cheapest feasible trial, else the lowest-gap one (flagged)."""
    pool = _complete(df, {"quality_gap": "min", "total_flops": "min"})
    if pool.empty:
        return {}
    regimes = pool["param.recursion.regime"] if "param.recursion.regime" in pool else \
        pd.Series(base_regime, index=pool.index)
    out = {}
    for regime, group in pool.groupby(regimes, sort=True):
        best = cheapest_feasible(group)
        feasible = best is not None
        if best is None:
            best = group.sort_values("quality_gap", kind="stable").iloc[0]
        out[str(regime)] = {**_trial_summary(best), "feasible": feasible}
    return out


def param_importance(sweep: Sweep, objective: str = "quality_gap") -> dict[str, float]:
    """Optuna's importance evaluator (fANOVA-style random forest) over the searched params."""
    import optuna

    pool = _complete(sweep.results, sweep.objectives)
    params = sweep.params
    if len(pool) < 4 or not params:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    dists = _distributions(sweep.results, params)
    for _, row in pool.iterrows():
        values = {p[len("param."):]: _native(row[p]) for p in params if pd.notna(row[p])}
        if len(values) != len(params):
            continue
        study.add_trial(optuna.trial.create_trial(
            params=values, distributions={p[len("param."):]: dists[p] for p in params},
            value=float(row[objective])))
    if len(study.trials) < 4:
        return {}
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError):
        return {}
    return {k: float(v) for k, v in imp.items()}


def _distributions(df: pd.DataFrame, params: list[str]) -> dict[str, Any]:
    import optuna.distributions as d

    out = {}
    for p in params:
        col = df[p].dropna()
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            lo, hi = float(col.min()), float(col.max())
            if pd.api.types.is_integer_dtype(col):
                out[p] = d.IntDistribution(int(lo), int(max(hi, lo + 1)))
            else:
                out[p] = d.FloatDistribution(lo, hi if hi > lo else lo + 1e-12)
        else:
            out[p] = d.CategoricalDistribution(sorted({_native(v) for v in col}, key=str))
    return out


def _native(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _trial_summary(row: pd.Series) -> dict[str, Any]:
    keys = ["trial_id", "number", "quality_gap", "total_flops", "status"]
    out = {k: _native(row[k]) for k in keys if k in row}
    out["params"] = {k[len("param."):]: _native(v) for k, v in row.items() if k.startswith("param.")}
    return out


def describe(best: dict[str, Any], tolerance: float) -> str:
    params = ", ".join(f"{k}={_fmt_value(v)}" for k, v in best["params"].items())
    return (f"{params or 'the base config'} does not collapse (gap {best['quality_gap']:+.3g} "
            f"<= {tolerance:g}) at {best['total_flops']:.3g} FLOPs (trial {best.get('trial_id')})")


def _fmt_value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summarize(sweep: Sweep) -> dict[str, Any]:
    df = sweep.results
    counts = df["status"].value_counts().to_dict() if "status" in df else {}
    front = pareto_front(df, sweep.objectives)
    best = cheapest_feasible(df)
    cheapest = _trial_summary(best) if best is not None else None
    return {
        "run_dir": str(sweep.run_dir),
        "tolerance": sweep.tolerance,
        "objectives": sweep.objectives,
        "trials": int(len(df)),
        "counts": {str(k): int(v) for k, v in counts.items()},
        "feasible": int(df["feasible"].sum()) if "feasible" in df else 0,
        "cheapest_feasible": cheapest,
        "cheapest_feasible_text": describe(cheapest, sweep.tolerance) if cheapest else None,
        "pareto_front": [_trial_summary(r) for _, r in front.iterrows()],
        "best_per_regime": best_per_regime(df, sweep.config.recursion.regime),
        "importance": {obj: param_importance(sweep, obj) for obj in sweep.objectives},
    }


def analyze(run_dir: str | Path, *, console=None) -> dict[str, Any]:
    """Print the analysis with rich and write RUN_DIR/analysis.json (atomically)."""
    from sweep.analysis_view import print_analysis

    sweep = load_sweep(run_dir)
    summary = summarize(sweep)
    write_text(Path(run_dir) / "analysis.json", json.dumps(summary, indent=2, default=_json_default))
    print_analysis(summary, console=console)
    return summary


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)
