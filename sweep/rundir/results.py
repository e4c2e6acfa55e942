"""results.parquet (one row per trial) and the sweep-level summary, built from the ledger."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.config.defaults import DEFAULT_OBJECTIVES
from sweep.engine.chain import OK_STATUSES
from sweep.files.atomic import write_csv, write_parquet, write_text
from sweep.rundir.ledger import Ledger, as_float

COLUMNS = ["trial_id", "number", "status", "quality_gap", "total_flops", "total_label_cost",
           "collapsed", "feasible",
           "quality_gap_se", "quality_gap_ucb", "total_flops_se", "collapse_rate", "n_seeds",
           "generations_run", "final_real_nll", "node", "seconds", "seed", "shared_model0",
           "model0_flops", "model0_key", "key", "reused_from", "error"]


def results_frame(run_dir: Path, *, space: list[str], objectives: list[str]) -> pd.DataFrame:
    """One row per Optuna trial (number): its chain's result, else failed, else running.

    A trial whose config an earlier trial already ran gets that chain's result (column
    ``reused_from``); the chain ran once and the sweep's compute counts it once. A trial of
    k seeds has the means of its chains, their standard errors (``<objective>_se``), the
    upper confidence bound of the gap (``quality_gap_ucb``: ``feasible`` is that bound within
    the tolerance) and ``collapse_rate``, the fraction of its chains that collapsed.
    """
    chains: dict[str, dict[str, Any]] = {}
    trials: dict[int, dict[str, Any]] = {}
    for r in Ledger(run_dir).records():
        event, key = r["event"], r["key"]
        if r.get("stage", "search") != "search":
            continue  # confirmation runs: see sweep.search.answer
        if event == "done":
            chains.setdefault(key, r)
        number = int(r.get("number", -1))
        if event in ("start", "reuse", "error", "done") and number >= 0:
            seen = trials.setdefault(number, {"key": key, "trial_id": r["trial_id"],
                                              "params": r.get("params") or {}})
            if event == "reuse":
                seen["reused_from"] = r["reused_from"]
            if event == "error":
                seen["error"] = r.get("error", "")
    out = []
    for number, t in trials.items():
        chain = chains.get(t["key"])
        status = chain["status"] if chain else ("failed" if "error" in t else "running")
        r = chain or {}
        collapsed = bool(r.get("collapsed", status != "running"))
        row = {
            "trial_id": str(t["trial_id"]), "number": number,
            "status": status, "quality_gap": as_float(r.get("quality_gap")),
            "total_flops": as_float(r.get("total_flops")), "collapsed": collapsed,
            "total_label_cost": as_float(r.get("total_label_cost", 0.0)),
            "feasible": bool(status in OK_STATUSES and not collapsed),
            "quality_gap_se": as_float(r.get("quality_gap_se")),
            "quality_gap_ucb": as_float(r.get("quality_gap_ucb", r.get("quality_gap"))),
            "total_flops_se": as_float(r.get("total_flops_se")),
            "collapse_rate": as_float(r.get("collapse_rate", float(collapsed) if chain else None)),
            "n_seeds": int(r.get("n_seeds", 1 if chain else 0)),
            "generations_run": int(r.get("generations_run", 0) or 0),
            "final_real_nll": as_float(r.get("final_real_nll")), "node": str(r.get("node", "")),
            "seconds": 0.0 if t.get("reused_from") else as_float(r.get("seconds")),
            "seed": int(r.get("seed", 0)), "shared_model0": bool(r.get("shared_model0", False)),
            "model0_flops": as_float(r.get("model0_flops", 0.0)),
            "model0_key": str(r.get("model0_key", "")), "key": t["key"],
            "reused_from": str(t.get("reused_from", "")),
            "error": str(r.get("error", t.get("error", ""))),
        }
        for path in space:
            row[f"param.{path}"] = t["params"].get(path)
        for name in objectives:
            row.setdefault(name, as_float(r.get(name)))
            row.setdefault(f"{name}_se", as_float(r.get(f"{name}_se")))
        row["_compute"] = as_float(r.get("compute_flops", r.get("total_flops")))
        row["_model0_keys"] = list(r.get("model0_keys") or [r.get("model0_key", "")])
        row["_model0_each"] = as_float(r.get("model0_flops", 0.0)) / max(1, len(row["_model0_keys"]))
        out.append(row)
    extra = [c for o in objectives for c in (o, f"{o}_se") if c not in COLUMNS]
    columns = COLUMNS + [f"param.{p}" for p in space] + extra + list(_PRIVATE)
    df = pd.DataFrame(out, columns=columns)
    df = df.astype({"number": "int64", "generations_run": "int64", "seed": "int64",
                    "collapsed": bool, "feasible": bool, "shared_model0": bool,
                    "quality_gap": float, "total_flops": float, "seconds": float,
                    "n_seeds": "int64"})
    return df.sort_values("number", kind="stable").reset_index(drop=True)


#: Bookkeeping columns for the sweep's compute (not written to results.parquet).
_PRIVATE = ("_compute", "_model0_keys", "_model0_each")


def write_results(run_dir: Path, df: pd.DataFrame) -> None:
    df = df.drop(columns=[c for c in _PRIVATE if c in df])
    write_parquet(df, run_dir / "results.parquet")
    write_csv(df, run_dir / "results.csv")


def complete(df: pd.DataFrame, objectives: dict[str, str]) -> pd.DataFrame:
    """Trials with a usable result: ok status and finite values of every objective."""
    if df.empty:
        return df
    mask = df["status"].isin(OK_STATUSES) if "status" in df else pd.Series(True, index=df.index)
    for name in objectives:
        if name not in df:
            raise KeyError(f"objective {name!r} is not a column of the results "
                           f"(columns: {', '.join(map(str, df.columns))})")
        vals = pd.to_numeric(df[name], errors="coerce").astype(float)
        mask &= np.isfinite(vals)
    return df[mask]


def feasible_mask(df: pd.DataFrame) -> pd.Series:
    """The ``feasible`` column (finished and not collapsed), or ``~collapsed`` without it."""
    if "feasible" in df:
        return df["feasible"].fillna(False).astype(bool)
    if "collapsed" in df:
        return ~df["collapsed"].fillna(True).astype(bool)
    raise KeyError("results need a `feasible` or `collapsed` column to tell collapse apart")


def cheapest_feasible(df: pd.DataFrame) -> pd.Series | None:
    """The answer's rule, for every caller: lowest total_flops among feasible trials with
    usable objectives; ties: lower gap, then lower trial number."""
    pool = complete(df, DEFAULT_OBJECTIVES)
    if not pool.empty:
        pool = pool[feasible_mask(pool)]
    if pool.empty:
        return None
    order = ["total_flops", "quality_gap"] + (["number"] if "number" in pool else [])
    return pool.sort_values(order, kind="stable").iloc[0]


def sweep_summary(df: pd.DataFrame, *, tolerance: float, wall_seconds: float) -> dict[str, Any]:
    """Counts and compute; a shared generation 0 is counted once per cache key."""
    done = df[(df["status"] != "running") & (df["reused_from"] == "")].drop_duplicates("key")
    if "_compute" not in done:  # a frame read back from results.parquet
        done = done.assign(_compute=done["total_flops"] * done.get("n_seeds", 1).clip(lower=1),
                           _model0_keys=done["model0_key"].map(lambda k: [k]),
                           _model0_each=done["model0_flops"])
    flops = done["_compute"].where(done["_compute"].map(math.isfinite), 0.0)
    m0_each = done["_model0_each"].fillna(0.0)
    n_m0 = done["_model0_keys"].map(len)
    m0 = (m0_each * n_m0).where(flops > 0, 0.0)
    keys = done[["_model0_keys", "_model0_each"]].explode("_model0_keys")
    once = keys.drop_duplicates("_model0_keys")["_model0_each"].fillna(0.0).sum()
    best = cheapest_feasible(df)
    return {
        "trials": int(len(df)), "finished": int(df["status"].isin(OK_STATUSES).sum()),
        "failed": int((~df["status"].isin([*OK_STATUSES, "running"])).sum()),
        "running": int((df["status"] == "running").sum()),
        "chains_run": int(len(done)), "reused_trials": int((df["reused_from"] != "").sum()),
        "shared_model0_chains": int(done["shared_model0"].sum()),
        "wall_seconds": wall_seconds,
        "compute_flops_per_trial_sum": float(flops.sum()),
        "compute_flops": float((flops - m0).sum() + once),
        "best_feasible": None if best is None else {
            "trial_id": best["trial_id"], "number": int(best["number"]),
            "quality_gap": float(best["quality_gap"]), "total_flops": float(best["total_flops"]),
            "quality_gap_se": _plain(best["quality_gap_se"]),
            "quality_gap_ucb": _plain(best["quality_gap_ucb"]),
            "collapse_rate": _plain(best["collapse_rate"]), "n_seeds": int(best["n_seeds"]),
            "params": {k: _plain(v) for k, v in best.items() if str(k).startswith("param.")}},
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_text(run_dir / "sweep_summary.json", json.dumps(summary, indent=2, default=str))


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
