"""A trial's replicate chains in TensorBoard: the gap's interval per generation, final intervals.

Written once per trial, when its chains end, into ``trials/<id>/tb`` (the chains' own curves
are in ``tb/seed_<s>``): ``interval/gap_mean`` with ``interval/gap_lower`` / ``gap_upper``
(mean -/+ one standard error over the seeds; a margin chart in the Custom Scalars tab draws
the band) and, at the last generation, ``trial/<objective>_mean``, ``..._se``,
``trial/quality_gap_ucb``, ``trial/collapse_rate`` and ``trial/seeds``. A one-seed trial has
no interval (its band would be the chain's own gap curve, in the same directory): only the
final values are written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.engine.metrics import relative_gaps
from sweep.observe.events import EventFile
from sweep.observe.summaries import margin_chart_summary, scalar_summary

GAP_BAND = ("interval/gap_mean", "interval/gap_lower", "interval/gap_upper")


def gap_band(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per generation: mean gap over the seeds, its standard error, and the number of seeds."""
    rows = []
    for _, chain in frame.sort_values("generation").groupby("seed"):
        values = pd.to_numeric(chain[metric], errors="coerce").to_numpy(dtype=float)
        if len(values) and np.isfinite(values[0]):
            gaps = relative_gaps(values, metric)
            rows += [{"generation": int(g), "gap": float(x)}
                     for g, x in zip(chain["generation"], gaps, strict=True)]
    if not rows:
        return pd.DataFrame(columns=["generation", "mean", "se", "n"])
    by = pd.DataFrame(rows).groupby("generation")["gap"]
    out = pd.DataFrame({"mean": by.mean(), "sd": by.std(ddof=1), "n": by.size()})
    out["se"] = out["sd"] / np.sqrt(out["n"])
    return out.drop(columns="sd").reset_index()


def log_trial_summary(log_dir: str | Path, record: Mapping[str, Any],
                      frame: pd.DataFrame | None = None, *, metric: str = "real_nll") -> None:
    events = EventFile(log_dir)  # one file, written in this thread (sweep.observe.events)
    try:
        step = int(record.get("generations_run", 0) or 0)
        if (frame is not None and len(frame) and metric in frame
                and frame["seed"].nunique() > 1):
            band = gap_band(frame, metric)
            for row in band.itertuples():
                se = row.se if math.isfinite(row.se) else 0.0
                values = (row.mean, row.mean - se, row.mean + se)
                events.add_summary(scalar_summary(zip(GAP_BAND, values, strict=True)),
                                   int(row.generation))
            events.add_summary(margin_chart_summary(
                "interval", "quality gap (mean +/- SE over seeds)", GAP_BAND), 0)
        values = {f"trial/{k}_mean": record.get(k) for k in ("quality_gap", "total_flops")}
        values.update({f"trial/{k}": record.get(k) for k in (
            "quality_gap_se", "total_flops_se", "quality_gap_ucb", "collapse_rate", "n_seeds")})
        events.add_summary(scalar_summary(values.items()), step)
    finally:
        events.close()
