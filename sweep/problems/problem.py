"""What a chain needs from the real world: a ``Problem`` (truth, D_0, held-out set, tail)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

TAIL_QUANTILE = 0.1  # tail = held-out examples in the truth's lowest-density decile


@dataclass
class Problem:
    """Everything a chain needs from the real world, built once per (seed, data config)."""

    real_train: np.ndarray
    """D_0: the n real examples model 0 is fit on."""
    test: np.ndarray
    """Held-out real examples for evaluation."""
    tail_mask: np.ndarray
    """Boolean mask over ``test``: the rare examples whose NLL is ``tail_nll``."""
    draw_real: Callable[[int, np.random.Generator], np.ndarray]
    """Fresh real examples (``recursion.real_source: fresh``)."""
    truth: Any = None
    """The true distribution (sample / log_prob) when known, else None (text)."""
    truth_test_log_prob: np.ndarray | None = None
    """The truth's log-likelihood of each held-out example, when the truth is known."""
    tokens: TokenSpace | None = None
    """Token rows: the vocabulary and row length a language model is built for."""
    family_data: Any = None
    """What only the family's own builder and statistics read (linreg: ``LinregWorld``)."""


@dataclass(frozen=True)
class TokenSpace:
    """The shape of token items: ids in ``[0, vocab_size)``, rows of ``block_size`` tokens."""

    vocab_size: int
    block_size: int


def tail_mask(truth_log_prob: np.ndarray, quantile: float = TAIL_QUANTILE) -> np.ndarray:
    """The held-out examples in the truth's lowest-density ``quantile``."""
    return truth_log_prob <= np.quantile(truth_log_prob, quantile)
