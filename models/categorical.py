"""Categorical over K outcomes fit by empirical frequencies (Wright-Fisher under replace).

Under ``replace`` with a uniform truth, E[1 - sum p^2] at model g is
(1 - 1/K)(1 - 1/n)^(g + 1); outcomes die out one by one and never come back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.base import check_items


class Categorical:
    """p over outcomes 0..K-1; items are rows holding one outcome index."""

    def __init__(self, outcomes: int, *, probs=None, pseudocount: float = 0.0,
                 nll_floor: float = 1e-6) -> None:
        self.outcomes = outcomes
        self.probs = np.full(outcomes, 1.0 / outcomes) if probs is None else np.asarray(probs, float)
        self.pseudocount = pseudocount
        self.nll_floor = nll_floor
        self.temperature = 1.0
        self.top_p = 1.0
        self.top_k = 0  # items are not tokens: ignored

    @classmethod
    def zipf(cls, outcomes: int, exponent: float, **kwargs: Any) -> Categorical:
        weights = np.arange(1, outcomes + 1, dtype=float) ** -exponent
        return cls(outcomes, probs=weights / weights.sum(), **kwargs)

    def fit(self, data: np.ndarray, rng: np.random.Generator | None = None) -> None:
        x = check_items(data, ndim=2)[:, 0].astype(np.int64)
        counts = np.bincount(x, minlength=self.outcomes)[: self.outcomes] + self.pseudocount
        self.probs = counts / counts.sum()

    def sampling_probs(self) -> np.ndarray:
        p = self.probs
        if self.temperature != 1.0:
            with np.errstate(divide="ignore"):
                logits = np.where(p > 0, np.log(p) / self.temperature, -np.inf)
            p = np.exp(logits - logits.max())
            p /= p.sum()
        if self.top_p < 1.0:  # nucleus: the most likely outcomes holding top_p of the mass
            order = np.argsort(-p, kind="stable")
            keep = np.cumsum(p[order]) - p[order] < self.top_p
            mask = np.zeros_like(p, dtype=bool)
            mask[order[keep]] = True
            p = np.where(mask, p, 0.0)
            p /= p.sum()
        return p

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        cdf = np.cumsum(self.sampling_probs())
        idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        return np.minimum(idx, self.outcomes - 1).reshape(n, 1).astype(float)

    def log_prob(self, data: np.ndarray) -> np.ndarray:
        x = check_items(data, ndim=2)[:, 0].astype(np.int64)
        return np.log(np.maximum(self.probs[x], self.nll_floor))

    def sample_log_prob(self, data: np.ndarray) -> np.ndarray:
        """Log-probability under what ``sample`` draws (after temperature and top-p)."""
        x = check_items(data, ndim=2)[:, 0].astype(np.int64)
        with np.errstate(divide="ignore"):
            return np.log(self.sampling_probs()[x])

    def flops(self, op: str, n_items: int) -> float:
        if op == "fit":  # one count per item, one division per outcome
            return n_items + self.outcomes
        if op == "sample":  # cumulative sum once, a binary search per item
            return self.outcomes + n_items * np.log2(self.outcomes)
        if op == "score":  # a table look-up and a log per item
            return 2.0 * n_items
        raise ValueError(f"op: {op!r} (allowed: fit, sample, score)")

    def reset(self, rng: np.random.Generator) -> None:
        """A closed-form fit has no initialisation: nothing to reset, nothing drawn."""

    def item_size(self, data: np.ndarray) -> None:
        """Every item is one unit."""
        return None

    def summary(self) -> dict[str, float]:
        return {
            "gini": float(1.0 - np.sum(self.probs**2)),
            "support": float(np.count_nonzero(self.probs > 0)),
            "entropy": float(-np.sum(self.probs[self.probs > 0] * np.log(self.probs[self.probs > 0]))),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"probs": self.probs.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.probs = np.asarray(state["probs"], dtype=float).reshape(self.outcomes)
