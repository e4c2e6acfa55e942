"""Per-generation quality metrics and the collapse criterion.

``real_nll``: mean held-out real negative log-likelihood (nats per item, per token for LMs);
``tail_nll``: the same on the truth's rarest held-out examples; family statistics come from
the model. The quality gap is the relative degradation of one metric vs generation 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: +1: larger is worse (losses); -1: smaller is worse (spread and diversity).
DIRECTION = {
    "real_nll": 1, "tail_nll": 1, "param_error": 1, "kl": 1,
    "var": -1, "gini": -1, "support": -1, "minority_share": -1,
    "fd": 1, "class_tv": 1, "denoise_loss": 1, "precision": -1, "recall": -1, "diversity": -1,
}


def nll_metrics(model_log_prob: np.ndarray, sizes: np.ndarray | None, tail: np.ndarray,
                truth_log_prob: np.ndarray | None = None) -> dict[str, float]:
    """real_nll / tail_nll (and kl when the truth is known) from per-item log-likelihoods."""
    sizes = np.ones(len(model_log_prob)) if sizes is None else sizes
    nll = -model_log_prob
    out = {
        "real_nll": float(nll.sum() / sizes.sum()),
        "tail_nll": float(nll[tail].sum() / sizes[tail].sum()),
    }
    if truth_log_prob is not None:
        # KL(truth || model) per token, estimated on held-out real (= truth) samples.
        out["kl"] = float((truth_log_prob - model_log_prob).sum() / sizes.sum())
    return out


def relative_gaps(values: np.ndarray, metric: str) -> np.ndarray:
    """Relative degradation of ``values[g]`` against ``values[0]`` (positive = worse)."""
    base = values[0]
    scale = abs(base) if base != 0 else 1.0
    return DIRECTION.get(metric, 1) * (values - base) / scale


def collapse_summary(rows: list[dict[str, Any]], collapse) -> dict[str, Any]:
    """quality_gap and collapsed for a chain's rows under ``collapse`` (CollapseConfig)."""
    values = np.array([r.get(collapse.metric, np.nan) for r in rows], dtype=float)
    if len(values) == 0 or not np.isfinite(values[0]):
        return {"quality_gap": float("nan"), "collapsed": True}
    gaps = relative_gaps(values, collapse.metric)
    gap = float(np.nanmax(gaps)) if collapse.at == "any" else float(gaps[-1])
    if not np.isfinite(gaps).all():
        gap = float("inf")
    return {"quality_gap": gap, "collapsed": bool(gap > collapse.tolerance)}
