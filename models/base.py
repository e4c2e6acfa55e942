"""The Model protocol every family implements.

A model is a density over *items*: rows of a numpy array (analytic families) or token
sequences (language models). The recursion in ``sweep/`` drives every family only through
this protocol, so no family knows about regimes, curation or files. Every member below is
required (callers never probe with ``hasattr``); a family without a use for one implements
the documented no-op (``reset`` of a closed-form fit, ``item_size`` -> None, ``top_k``
ignored).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Operations whose cost ``Model.flops`` reports.
FLOP_OPS = ("fit", "sample", "score")


@runtime_checkable
class Truth(Protocol):
    """A distribution that can be sampled and scored: a true distribution, or a model."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` new items, one per row."""

    def log_prob(self, data: np.ndarray) -> np.ndarray:
        """Per-item log-likelihood in nats, shape ``(len(data),)``."""

    def item_size(self, data: np.ndarray) -> np.ndarray | None:
        """Tokens per item (language models: up to and including EOS), so that per-token
        rates can be reported; None when every item is one unit (analytic families)."""

    def flops(self, op: str, n_items: int) -> float:
        """Floating-point operations to ``fit``/``sample``/``score`` ``n_items`` items."""


@runtime_checkable
class Model(Truth, Protocol):
    """A generative model of items (numpy rows or token sequences)."""

    temperature: float
    """Sampling temperature (1 = the fitted density)."""
    top_p: float
    """Nucleus mass kept when sampling (1 = off)."""
    top_k: int
    """Keep the k most likely tokens when sampling (0 = off; families without tokens ignore it)."""

    def fit(self, data: np.ndarray, rng: np.random.Generator) -> None:
        """Fit to ``data`` (one item per row). Warm starts keep the current state."""

    def reset(self, rng: np.random.Generator) -> None:
        """Re-initialise before a fit from scratch (a no-op for closed-form fits; it must
        then not draw from ``rng``)."""

    def sample_log_prob(self, data: np.ndarray) -> np.ndarray:
        """Per-item log-density of what ``sample`` draws with the current knobs
        (``temperature``, ``top_p``, ``top_k``); equals ``log_prob`` with the defaults. The
        density-ratio ``oracle`` scorer uses it as the proposal density."""

    def summary(self) -> dict[str, float]:
        """Family statistics logged every generation (``mean``, ``var``, ``gini``...)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the fitted model: arrays, tensors and numbers."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


@runtime_checkable
class TokenModel(Model, Protocol):
    """A model of token rows that can continue prompts (language models)."""

    def sample(self, n: int, rng: np.random.Generator, *,
               prompt: np.ndarray | None = None) -> np.ndarray:
        """Draw ``n`` rows; row i continues ``prompt[i]`` (its first k tokens) when given."""


def check_items(data: np.ndarray, *, ndim: int, name: str = "data") -> np.ndarray:
    """Validate an item array at a family's edge; return it as a contiguous array."""
    arr = np.asarray(data)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if len(arr) == 0:
        raise ValueError(f"{name} is empty")
    return np.ascontiguousarray(arr)
