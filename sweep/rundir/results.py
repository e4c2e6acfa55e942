"""results.parquet (one row per trial) and the sweep-level summary, built from the ledger."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.files.atomic import write_csv, write_parquet, write_text
from sweep.rundir.ledger import Ledger, as_float

OK_STATUSES = ("finished", "stopped_collapsed")
COLUMNS = ["trial_id", "number", "status", "quality_gap", "total_flops", "collapsed", "feasible",
           "generations_run", "final_real_nll", "node", "seconds", "seed", "shared_model0",
           "model0_flops", "model0_key", "key", "reused_from", "error"]


def results_frame(run_dir: Path, *, space: list[str], objectives: list[str]) -> pd.DataFrame:
    """One row per Optuna trial (number): its chain's result, else failed, else running.

    A trial whose config an earlier trial already ran gets that chain's result (column
    ``reused_from``); the chain ran once and the sweep's compute counts it once.
    """
    chains: dict[str, dict[str, Any]] = {}
    trials: dict[int, dict[str, Any]] = {}
    for r in Ledger(run_dir).records():
        event, key = r["event"], r["key"]
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
            "feasible": bool(status in OK_STATUSES and not collapsed),
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
        out.append(row)
    columns = COLUMNS + [f"param.{p}" for p in space] + [o for o in objectives if o not in COLUMNS]
    df = pd.DataFrame(out, columns=columns)
    df = df.astype({"number": "int64", "generations_run": "int64", "seed": "int64",
                    "collapsed": bool, "feasible": bool, "shared_model0": bool,
                    "quality_gap": float, "total_flops": float, "seconds": float})
    return df.sort_values("number", kind="stable").reset_index(drop=True)


def write_results(run_dir: Path, df: pd.DataFrame) -> None:
    write_parquet(df, run_dir / "results.parquet")
    write_csv(df, run_dir / "results.csv")


def best_feasible(df: pd.DataFrame, *, tolerance: float) -> pd.Series | None:
    """The cheapest trial whose gap is within tolerance (and that did not fail)."""
    ok = df[df["status"].isin(OK_STATUSES) & (df["quality_gap"] <= tolerance)]
    return None if ok.empty else ok.sort_values(["total_flops", "number"]).iloc[0]


def sweep_summary(df: pd.DataFrame, *, tolerance: float, wall_seconds: float) -> dict[str, Any]:
    """Counts and compute; a shared generation 0 is counted once per cache key."""
    done = df[(df["status"] != "running") & (df["reused_from"] == "")].drop_duplicates("key")
    flops = done["total_flops"].where(done["total_flops"].map(math.isfinite), 0.0)
    m0 = done["model0_flops"].fillna(0.0)
    once = done.drop_duplicates("model0_key")["model0_flops"].fillna(0.0).sum()
    best = best_feasible(df, tolerance=tolerance)
    return {
        "trials": int(len(df)), "finished": int(df["status"].isin(OK_STATUSES).sum()),
        "failed": int((~df["status"].isin([*OK_STATUSES, "running"])).sum()),
        "running": int((df["status"] == "running").sum()),
        "chains_run": int(len(done)), "reused_trials": int((df["reused_from"] != "").sum()),
        "shared_model0_chains": int(done["shared_model0"].sum()),
        "wall_seconds": wall_seconds,
        "compute_flops_per_trial_sum": float(flops.sum()),
        "compute_flops": float((flops - m0.where(flops > 0, 0.0)).sum() + once),
        "best_feasible": None if best is None else {
            "trial_id": best["trial_id"], "number": int(best["number"]),
            "quality_gap": float(best["quality_gap"]), "total_flops": float(best["total_flops"]),
            "params": {k: _plain(v) for k, v in best.items() if str(k).startswith("param.")}},
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_text(run_dir / "sweep_summary.json", json.dumps(summary, indent=2, default=str))


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
