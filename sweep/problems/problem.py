"""What a chain needs from the real world: a ``Problem`` (truth, D_0, held-out set, tail).

The *tail* is what collapse erodes first. What it is, per built-in family or source
(``Problem.tail_kind`` says it in one line):

- ``truth-lm``: the held-out *tokens* whose conditional truth probability p(x_t | x_<t) is
  in the lowest decile (rare transitions, the minority dialect's own transitions); not whole
  sequences, whose per-token average is decided mostly by their length.
- ``text``: held-out blocks built from the rarest training n-grams (the truth is unknown).
- ``categorical``: held-out items whose outcome is among the rarest 10% of outcomes by the
  truth's probability (for a uniform truth, where all outcomes are equally rare, a fixed
  10% of outcomes: the highest ids).
- ``linreg``: held-out rows with the largest ||x|| (top decile): the high-leverage inputs
  where a parameter error costs most (the truth's density there is that of its noise only).
- ``gaussian``, ``gmm`` (and any family built with ``problem_from_truth``): held-out points
  in the truth's lowest-density decile (the outer shell; for the mixture mostly its
  minority component and the outskirts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TAIL_QUANTILE = 0.1  # tail = the rarest decile (of examples, tokens or outcomes)


@dataclass
class Problem:
    """Everything a chain needs from the real world, built once per (seed, data config)."""

    real_train: np.ndarray
    """D_0: the n real examples model 0 is fit on."""
    test: np.ndarray
    """Held-out real examples for evaluation."""
    tail_mask: np.ndarray
    """Boolean mask over ``test`` (n,), or over its tokens (n, L) for truth-lm: the rare
    examples (tokens) whose NLL is ``tail_nll``."""
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
    tail_kind: str = "held-out points in the truth's lowest-density decile"
    """One line saying what the tail is (module docstring)."""
    test_groups: dict[str, np.ndarray] = field(default_factory=dict)
    """Named subsets of ``test`` (boolean masks) that get their own ``<name>_nll`` and
    ``<name>_kl`` columns (truth-lm: ``minority``, the minority dialect's sequences)."""
    reference: dict[str, float] = field(default_factory=dict)
    """The real data's values of sample metrics, shown beside the model's in every row
    (LMs: ``distinct_2_real``, ``minority_share_truth``, ...)."""


@dataclass(frozen=True)
class TokenSpace:
    """The shape of token items: ids in ``[0, vocab_size)``, rows of ``block_size`` tokens."""

    vocab_size: int
    block_size: int


def tail_mask(truth_log_prob: np.ndarray, quantile: float = TAIL_QUANTILE) -> np.ndarray:
    """The held-out examples in the truth's lowest-density ``quantile``."""
    return truth_log_prob <= np.quantile(truth_log_prob, quantile)


def token_tail_mask(token_log_prob: np.ndarray, counted: np.ndarray,
                    quantile: float = TAIL_QUANTILE) -> np.ndarray:
    """(n, L): the counted tokens whose conditional truth log-probability is in the lowest
    ``quantile`` of all counted tokens."""
    cut = np.quantile(token_log_prob[counted], quantile)
    return counted & (token_log_prob <= cut)


def rarest_outcomes(probs: np.ndarray, quantile: float = TAIL_QUANTILE) -> np.ndarray:
    """Ids of the ceil(quantile * K) outcomes the truth finds least likely (ties: highest ids)."""
    k = max(1, math.ceil(quantile * len(probs)))
    order = np.lexsort((-np.arange(len(probs)), probs))  # by probability, then highest id first
    return np.sort(order[:k])


def largest_norm_mask(x: np.ndarray, quantile: float = TAIL_QUANTILE) -> np.ndarray:
    """Rows of ``x`` whose Euclidean norm is in the top ``quantile``."""
    norm = np.linalg.norm(x, axis=1)
    return norm >= np.quantile(norm, 1.0 - quantile)
