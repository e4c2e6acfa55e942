"""Read a sweep directory and answer: which configs do not collapse, and which is cheapest.

Works on finished, running and partly failed sweeps: only files that exist (and parse) are
read, a trial directory without a results row counts as running, and trials without
finite objectives (failed, diverged, still running) never enter a front.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis.format import (  # noqa: F401 - re-exported
    describe,
    fmt_flops,
    fmt_gap,
    fmt_interval,
    fmt_value,
    interval_text,
    is_nan,
    short_names,
)
from sweep.analysis.importance import importances
from sweep.analysis.load import (  # noqa: F401 - re-exported: the analysis API in one import
    DEFAULT_OBJECTIVES,
    OK_STATUSES,
    REGIME_COL,
    Sweep,
    complete,
    load_sweep,
    native,
)
from sweep.analysis.view import print_analysis
from sweep.files.atomic import write_text
from sweep.rundir.confirmation import (
    confirmation_candidates,
    confirmation_frame,
    confirmed_answer,
    matched_confirmations,
)
from sweep.rundir.health import health_note, health_warning, read_health
from sweep.rundir.results import cheapest_feasible, feasible_mask  # noqa: F401 - re-exported


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
    pool = complete(df, objectives)
    if "reused_from" in pool and not pool.empty:
        pool = pool[pool["reused_from"].fillna("").astype(str) == ""]
    if feasible_only and not pool.empty:
        pool = pool[feasible_mask(pool)]
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


def best_per_regime(df: pd.DataFrame, base_regime: str = "replace") -> dict[str, dict[str, Any]]:
    """Per regime: the cheapest feasible trial, else the lowest-gap one (``feasible: False``).

    The regime is ``param.recursion.regime`` when searched, else ``base_regime``.
    """
    pool = complete(df, DEFAULT_OBJECTIVES)
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
INTERVAL_KEYS = ("quality_gap_se", "quality_gap_ucb", "total_flops_se", "collapse_rate", "n_seeds")


def trial_summary(row: pd.Series) -> dict[str, Any]:
    keys = ["trial_id", "number", "status", "quality_gap", "total_flops", "total_label_cost",
            "collapsed", *INTERVAL_KEYS]
    out = {k: native(row[k]) for k in keys if k in row}
    out["params"] = {k[len("param."):]: native(v) for k, v in row.items()
                     if str(k).startswith("param.") and not is_nan(v)}
    return out


def counts(df: pd.DataFrame) -> dict[str, int]:
    status = df["status"] if "status" in df else pd.Series(dtype=str)
    return {
        "trials": int(len(df)),
        "finished": int(status.isin(OK_STATUSES).sum()),
        "failed": int((~status.isin([*OK_STATUSES, "running"])).sum()),
        "running": int((status == "running").sum()),
        "feasible": int(df["feasible"].sum()) if "feasible" in df else 0,
        "collapsed": int((status.isin(OK_STATUSES) & df.get("collapsed", False)).sum()),
        "by_status": {str(k): int(v) for k, v in status.value_counts().sort_index().items()},
    }


def first_error(df: pd.DataFrame) -> str | None:
    """The error of the lowest-numbered trial that recorded one (None if none did)."""
    if "error" not in df:
        return None
    errors = df[df["error"].fillna("").astype(str).str.len() > 0]
    if errors.empty:
        return None
    row = errors.sort_values("number").iloc[0] if "number" in errors else errors.iloc[0]
    return f"trial {row.get('trial_id', '?')}: {row['error']}"


def summarize(sweep: Sweep) -> dict[str, Any]:
    df = sweep.results
    front = pareto_front(df, sweep.objectives)
    importance, source = importances(sweep)
    best = cheapest_feasible(df)
    cheapest = trial_summary(best) if best is not None else None
    confidence = float(sweep.config.collapse.confidence)
    confirm = confirmation_summary(sweep)
    health = read_health(sweep.run_dir)
    return {
        "run_dir": str(sweep.run_dir),
        "name": sweep.name,
        "health": health,
        "health_warning": health_warning(health),
        "health_note": health_note(health),
        "tolerance": sweep.tolerance,
        "collapse_metric": sweep.config.collapse.metric,
        "objectives": sweep.objectives,
        "counts": counts(df),
        "first_error": first_error(df),
        "cheapest_feasible": cheapest,
        "confidence": confidence,
        "cheapest_feasible_text": describe(cheapest, sweep.tolerance, confidence) if cheapest else None,
        **confirm,
        "pareto_front": [trial_summary(r) for _, r in front.iterrows()],
        "best_per_regime": best_per_regime(df, sweep.config.recursion.regime),
        "importance": importance,
        "importance_source": source,
    }


def confirmation_summary(sweep: Sweep) -> dict[str, Any]:
    """The confirmation stage: each candidate's search and fresh-seed intervals, the answer.

    ``answer`` is the cheapest candidate confirmed on unseen seeds (None when confirmation
    is off, has not run yet, or confirmed none); ``answer_text`` says it in words.
    """
    spec = (sweep.config.search or {}).get("confirm") or {}
    top = int(spec.get("top", 3)) if isinstance(spec, dict) else 3
    candidates = confirmation_candidates(
        sweep.results, top, tolerance=sweep.config.collapse.tolerance) if "key" in sweep.results else \
        sweep.results.iloc[:0]
    runs = confirmation_frame(sweep.run_dir)
    table = matched_confirmations(candidates, runs)
    answer = confirmed_answer(candidates, runs)
    text = None
    if answer is not None:
        c = answer["confirmation"]
        names = short_names(list(answer["params"]))
        params = ", ".join(f"{names[k]}={fmt_value(v)}" for k, v in answer["params"].items())
        rate = c.get("collapse_rate")
        n = int(c.get("n_seeds") or 0)
        collapsed = "?" if rate is None or is_nan(rate) else f"{round(rate * n)}/{n}"
        text = (f"{params or 'the base config'}: confirmed on {n} unseen seeds, "
                f"{interval_text(c, sweep.tolerance, float(sweep.config.collapse.confidence))}, "
                f"{collapsed} chains collapsed, "
                f"{fmt_interval(c['total_flops'], c.get('total_flops_se'), fmt_flops)} FLOPs "
                f"(search trial {answer['trial_id']})")
    return {"confirm_top": top, "confirmation": table, "answer": answer, "answer_text": text}


def _jsonable(o: Any) -> Any:
    """Strict JSON: NaN/inf become null, numpy scalars plain numbers."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    o = native(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if o is None or isinstance(o, bool | int | float | str):
        return o
    return str(o)


def analyze(run_dir: str | Path, *, console: Any = None) -> dict[str, Any]:
    """Print the analysis with rich and write RUN_DIR/analysis.json (atomically); return it."""
    summary = _jsonable(summarize(load_sweep(run_dir, generations=False)))
    write_text(Path(run_dir) / "analysis.json", json.dumps(summary, indent=2, allow_nan=False))
    print_analysis(summary, console=console)
    return summary
