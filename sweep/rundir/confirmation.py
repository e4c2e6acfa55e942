"""Confirmation: the cheapest feasible configs re-run on fresh seeds, and the answer.

- ``confirmation_candidates``: after the search, the ``search.confirm.top`` cheapest
  configurations (distinct configs, by mean cost) whose mean gap on the search's seeds is
  within the tolerance (a screen; the bound is applied on the fresh seeds).
- each is re-run on ``search.confirm.seeds`` seeds the search never used
  (``sweep.engine.replicates.confirmation_seeds``; ledger events of stage ``confirm``,
  files in ``RUN_DIR/confirm/<id>``), by the driver or by the search benchmark.
- ``confirmed_answer``: the cheapest candidate that is feasible again on those seeds (the
  upper confidence bound of its mean gap within the tolerance), with both intervals (search
  seeds, fresh seeds) and its collapse rate (fraction of fresh chains that collapsed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.rundir.ledger import Ledger, as_float

OK_STATUSES = ("finished", "stopped_collapsed")


def confirmation_candidates(results: pd.DataFrame, top: int, *, tolerance: float) -> pd.DataFrame:
    """The ``top`` cheapest search trials whose mean gap is within ``tolerance``, one per config.

    A screen, not the verdict: the search's confidence bound is not required here, because
    the candidates must pass that bound on fresh seeds (``confirmed_answer``). Requiring it on
    the search's few seeds as well would drop a cheap configuration whose margin is real but
    small (measured: the optimum of the search benchmark passed the 5-seed bound in about half
    the sweeps, its mean in ~95%), while what confirmation guards against - a lucky draw - is
    caught on the fresh seeds either way.
    """
    if results.empty or top <= 0:
        return results.iloc[:0]
    gap = pd.to_numeric(results["quality_gap"], errors="coerce")
    # astype(bool): an empty object-dtype mask would select columns, not rows.
    ok = results[(results["status"].isin(OK_STATUSES) & (gap <= tolerance)).astype(bool)]
    ok = ok[ok["total_flops"].map(math.isfinite).astype(bool)]
    if "reused_from" in ok:
        ok = ok[ok["reused_from"].fillna("") == ""]
    ok = ok.sort_values(["total_flops", "number"], kind="stable")
    return ok.drop_duplicates("key").head(top)


def candidate_params(row: pd.Series) -> dict[str, Any]:
    """The searched params of a results row (``param.*`` columns)."""
    return {k[len("param."):]: _plain(v) for k, v in row.items() if str(k).startswith("param.")}


def confirmation_frame(run_dir: str | Path) -> pd.DataFrame:
    """One row per finished confirmation run (ledger events of stage ``confirm``)."""
    return confirmation_frame_from(
        r for r in Ledger(run_dir).records() if r.get("event") == "done" and r.get("stage") == "confirm")


def confirmation_frame_from(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Confirmation runs' records (as ``run_trial`` returns them) as rows, one per config."""
    frame = pd.DataFrame([confirmation_row(r) for r in records])
    return frame.drop_duplicates("key") if len(frame) and frame["key"].notna().all() else frame


def confirmation_row(record: dict[str, Any]) -> dict[str, Any]:
    """A confirmation run's record as a flat row (params as ``param.*``)."""
    row = {k: record.get(k) for k in (
        "key", "trial_id", "status", "seeds", "n_seeds", "collapse_rate", "confidence")}
    for name in ("quality_gap", "quality_gap_se", "quality_gap_ucb", "total_flops",
                 "total_flops_se"):
        row[name] = as_float(record.get(name))
    row["confirmed"] = bool(record.get("status") in OK_STATUSES and not record.get("collapsed", True))
    row.update({f"param.{k}": v for k, v in (record.get("params") or {}).items()})
    return row


def confirmed_answer(candidates: pd.DataFrame, confirmations: pd.DataFrame) -> dict[str, Any] | None:
    """The cheapest candidate confirmed on fresh seeds, or None (none confirmed or run yet).

    ``candidates``: rows of ``confirmation_candidates``; ``confirmations``: rows of
    ``confirmation_frame`` (matched by params). The answer carries both intervals: the
    search's (its seeds) and the confirmation's (fresh seeds), and the confirmation's
    collapse rate.
    """
    table = matched_confirmations(candidates, confirmations)
    ok = [row for row in table if row["confirmation"] is not None and row["confirmation"]["confirmed"]]
    if not ok:
        return None
    best = min(ok, key=lambda row: (row["confirmation"]["total_flops"], row["number"]))
    return {**best, "confirmed": True}


def matched_confirmations(candidates: pd.DataFrame, confirmations: pd.DataFrame
                          ) -> list[dict[str, Any]]:
    """Each candidate (search interval) with its confirmation row (or None if not run)."""
    out = []
    for _, cand in candidates.iterrows():
        params = candidate_params(cand)
        match = None
        if len(confirmations):
            mask = pd.Series(True, index=confirmations.index)
            for k, v in params.items():
                col = confirmations.get(f"param.{k}")
                mask &= col.map(lambda x, v=v: _same(x, v)) if col is not None else False
            if mask.any():
                match = {k: _plain(v) for k, v in confirmations[mask].iloc[0].items()}
        out.append({"number": int(cand["number"]), "trial_id": str(cand["trial_id"]),
                    "params": params, "search": _interval(cand), "confirmation": match})
    return out


def _interval(row: pd.Series) -> dict[str, Any]:
    out = {k: _plain(row.get(k)) for k in (
        "quality_gap", "quality_gap_se", "quality_gap_ucb", "total_flops", "total_flops_se",
        "collapse_rate", "n_seeds")}
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
