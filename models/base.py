"""The Model protocol every family implements.

A model is a density over *items*: rows of a numpy array (analytic families) or token
sequences (language models). The recursion in ``sweep/`` drives every family only through
this protocol, so no family knows about regimes, curation or files.

Optional: ``sample_log_prob(data)``, the per-item log-density of what ``sample`` draws with
the current sampling knobs (``temperature``, ``top_p``, ``top_k``); it equals ``log_prob``
with the defaults. The density-ratio ``oracle`` scorer needs it as the proposal density of
its importance weights; every shipped family has it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Operations whose cost ``Model.flops`` reports.
FLOP_OPS = ("fit", "sample", "score")


@runtime_checkable
class Model(Protocol):
    """A generative model of items (numpy rows or token sequences)."""

    def fit(self, data: np.ndarray, rng: np.random.Generator) -> None:
        """Fit to ``data`` (one item per row). Warm starts keep the current state."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` new items, one per row."""

    def log_prob(self, data: np.ndarray) -> np.ndarray:
        """Per-item log-likelihood in nats, shape ``(len(data),)``."""

    def flops(self, op: str, n_items: int) -> float:
        """Floating-point operations to ``fit``/``sample``/``score`` ``n_items`` items."""

    def summary(self) -> dict[str, float]:
        """Family statistics logged every generation (``mean``, ``var``, ``gini``...)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the fitted model: arrays, tensors and numbers."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def check_items(data: np.ndarray, *, ndim: int, name: str = "data") -> np.ndarray:
    """Validate an item array at a family's edge; return it as a contiguous array."""
    arr = np.asarray(data)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if len(arr) == 0:
        raise ValueError(f"{name} is empty")
    return np.ascontiguousarray(arr)
