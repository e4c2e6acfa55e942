"""A rules scorer for token samples: cheap hand-written checks instead of a model.

Each rule maps samples (n, L) to one score per row in [-1, 0] (0 = no violation); the
score of a row is the weighted sum, higher is better. Build rules with the factories
below, or pass any ``Rule`` of your own::

    scores = score_rules(samples, [length_rule(min_len=8), my_rule], weights=[1.0, 2.0])
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

import numpy as np

from sweep.problems.lm_metrics import REPEAT_WINDOW, content_mask, repeated_tokens
from sweep.problems.sources import EOS, item_size

Rule = Callable[[np.ndarray], np.ndarray]

#: Bytes of ordinary English text: printable ASCII (space, tab and newline included).
PRINTABLE = frozenset(string.printable.encode())


def length_rule(*, min_len: int = 8) -> Rule:
    """Penalise rows that end early: -(missing tokens / min_len) below ``min_len``."""

    def rule(samples: np.ndarray) -> np.ndarray:
        return -np.clip(min_len - item_size(samples), 0, None) / min_len

    return rule


def repetition_rule(*, window: int = REPEAT_WINDOW) -> Rule:
    """Penalise loops: minus the row's share of tokens repeating one of the ``window`` before."""

    def rule(samples: np.ndarray) -> np.ndarray:
        repeated, eligible = repeated_tokens(samples, window)
        return -repeated.sum(axis=1) / np.maximum(eligible.sum(axis=1), 1)

    return rule


def charset_rule(*, allowed: frozenset[int] | Sequence[int] = PRINTABLE) -> Rule:
    """Penalise tokens outside ``allowed``: minus the row's share of such content tokens."""
    table = np.zeros(max(allowed) + 1, dtype=bool) if allowed else np.zeros(1, dtype=bool)
    table[list(allowed)] = True

    def rule(samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples)
        content = content_mask(x)
        ok = np.zeros_like(content)
        inside = x < len(table)
        ok[inside] = table[x[inside]]
        bad = content & ~ok & (x != EOS)
        return -bad.sum(axis=1) / np.maximum(content.sum(axis=1), 1)

    return rule


def default_rules() -> list[Rule]:
    return [length_rule(), repetition_rule(), charset_rule()]


def score_rules(samples: np.ndarray, rules: Sequence[Rule] | None = None,
                weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted sum of the rules' scores per row (higher = better); default: all three."""
    rules = default_rules() if rules is None else list(rules)
    weights = [1.0] * len(rules) if weights is None else list(weights)
    if len(weights) != len(rules):
        raise ValueError(f"got {len(weights)} weights for {len(rules)} rules")
    x = np.asarray(samples)
    total = np.zeros(len(x))
    for rule, w in zip(rules, weights, strict=True):
        total += w * rule(x)
    return total
