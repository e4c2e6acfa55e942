"""Per-generation quality metrics and the collapse criterion.

``real_nll``: mean held-out real negative log-likelihood (nats per item, per token for LMs);
``tail_nll``: the same on the tail (``sweep.problems.problem`` says what it is per family);
``excess``: the loss in excess of the truth's (KL to the truth, excess risk), where the
truth is known; family statistics come from the model.

The *quality gap* of a chain is the relative degradation of ``collapse.metric`` against
generation 0, ``direction * (m_g - m_0) / |m_0|``, read at the last generation (or the worst
one, ``collapse.at: any``); the chain is collapsed when it exceeds ``collapse.tolerance``.
On ``excess`` (the default where the truth is known) the gap is the relative growth of the
distance to the truth: gap 1.0 means model G is twice as far from the truth as model 0, and
the entropy of the data, which no model can remove, does not dilute it. On ``real_nll`` (the
default for text, whose truth is unknown) the baseline is model 0's held-out NLL, entropy
included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: +1: larger is worse (losses); -1: smaller is worse (spread and diversity).
DIRECTION = {
    "real_nll": 1, "tail_nll": 1, "param_error": 1, "kl": 1, "excess": 1,
    "minority_nll": 1, "minority_kl": 1,
    "var": -1, "gini": -1, "support": -1, "minority_share": -1,
    "fd": 1, "class_tv": 1, "denoise_loss": 1, "precision": -1, "recall": -1, "diversity": -1,
}


def nll_metrics(model_log_prob: np.ndarray, sizes: np.ndarray | None, tail: np.ndarray,
                truth_log_prob: np.ndarray | None = None, *,
                token_log_prob: np.ndarray | None = None) -> dict[str, float]:
    """real_nll / tail_nll (and kl when the truth is known) from per-item log-likelihoods.

    ``tail`` masks items (n,), or tokens (n, L) together with the model's per-token
    log-probabilities ``token_log_prob`` (n, L); tail_nll is then per tail token.
    """
    sizes = np.ones(len(model_log_prob)) if sizes is None else sizes
    nll = -model_log_prob
    if tail.ndim == 2:
        if token_log_prob is None:
            raise ValueError("a per-token tail needs token_log_prob")
        tail_nll = float(-token_log_prob[tail].sum() / max(tail.sum(), 1))
    else:
        tail_nll = float(nll[tail].sum() / sizes[tail].sum())
    out = {"real_nll": float(nll.sum() / sizes.sum()), "tail_nll": tail_nll}
    if truth_log_prob is not None:
        # KL(truth || model) per token, estimated on held-out real (= truth) samples.
        out["kl"] = float((truth_log_prob - model_log_prob).sum() / sizes.sum())
    return out


def group_nll(model_log_prob: np.ndarray, sizes: np.ndarray, group: np.ndarray,
              truth_log_prob: np.ndarray, *, name: str) -> dict[str, float]:
    """``{name}_nll`` and ``{name}_kl`` (per token) on the held-out items in ``group``
    (e.g. the minority dialect's sequences); NaN when the group is empty."""
    if not group.any():
        return {f"{name}_nll": float("nan"), f"{name}_kl": float("nan")}
    tokens = sizes[group].sum()
    return {f"{name}_nll": float(-model_log_prob[group].sum() / tokens),
            f"{name}_kl": float((truth_log_prob[group] - model_log_prob[group]).sum() / tokens)}


def relative_gaps(values: np.ndarray, metric: str) -> np.ndarray:
    """Relative degradation of ``values[g]`` against ``values[0]`` (positive = worse)."""
    base = values[0]
    scale = abs(base) if base != 0 else 1.0
    return DIRECTION.get(metric, 1) * (values - base) / scale


def collapse_summary(rows: list[dict[str, Any]], collapse) -> dict[str, Any]:
    """quality_gap and collapsed for a chain's rows under ``collapse`` (CollapseConfig).

    Also ``excess_0`` / ``excess_final`` (model 0's and the last model's distance to the
    truth, where known), which replicate aggregation can average across seeds.
    """
    values = np.array([r.get(collapse.metric, np.nan) for r in rows], dtype=float)
    extra = {}
    if rows and "excess" in rows[0]:
        extra = {"excess_0": float(rows[0]["excess"]), "excess_final": float(rows[-1]["excess"])}
    if len(values) == 0 or not np.isfinite(values[0]):
        return {"quality_gap": float("nan"), "collapsed": True, **extra}
    gaps = relative_gaps(values, collapse.metric)
    gap = float(np.nanmax(gaps)) if collapse.at == "any" else float(gaps[-1])
    if not np.isfinite(gaps).all():
        gap = float("inf")
    return {"quality_gap": gap, "collapsed": bool(gap > collapse.tolerance), **extra}
