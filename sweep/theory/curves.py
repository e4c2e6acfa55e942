"""Closed-form expectations of sweep/theory/REFERENCES.md for one chain config, for overlays.

A curve applies only where the config meets the theory's assumptions: an analytic family
with the theory's estimator/truth, a pure regime (no real data mixed in), no curation and
plain sampling. Anything else gets no curve (a wrong overlay is worse than none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sweep.config import ChainConfig


@dataclass(frozen=True)
class TheoryCurve:
    column: str        # per-generation column of generations.parquet
    relative: bool     # compare column / column at generation 0 (ratios), else the raw value
    label: str         # y label of the statistic
    formula: str       # the closed form, for the legend
    expected: Callable[[np.ndarray], np.ndarray]

    def measured(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return values / values[0] if self.relative and len(values) and values[0] else values


def assumptions_met(config: ChainConfig) -> bool:
    """Pure regime: nothing real mixed in, nothing curated, untempered sampling."""
    r, c, s = config.recursion, config.curation, config.sampling
    return (r.real_fraction == 0 and (c.strength == 0 or c.scorer == "none")
            and s.temperature == 1 and s.top_p == 1 and s.top_k == 0)


def theory_curves(config: ChainConfig) -> list[TheoryCurve]:
    if not assumptions_met(config):
        return []
    m, regime = config.model, config.recursion.regime
    n = config.recursion.samples_per_generation
    if m.family == "gaussian" and m.estimator == "mle" and regime == "replace":
        a = (n - 1) / n
        return [TheoryCurve("var", False, "fitted variance", f"E[var_g] = ((n-1)/n)^(g+1), n={n}",
                            lambda g: a ** (g + 1))]
    if m.family == "linreg" and regime == "replace":
        return [TheoryCurve("param_error", True, "parameter error / generation 0",
                            "E[err_g]/E[err_0] = g + 1", lambda g: g + 1.0)]
    if m.family == "linreg" and regime == "accumulate":
        return [TheoryCurve("param_error", True, "parameter error / generation 0",
                            "E[err_g]/E[err_0] = sum_{i<=g+1} 1/i^2",
                            lambda g: np.array([np.sum(1.0 / np.arange(1, k + 2) ** 2) for k in g]))]
    if m.family == "categorical" and m.truth == "uniform" and m.pseudocount == 0 and regime == "replace":
        k = m.outcomes
        return [TheoryCurve("gini", False, "gini (1 - sum p^2)",
                            f"E[gini_g] = (1-1/K)(1-1/n)^(g+1), K={k}, n={n}",
                            lambda g: (1 - 1 / k) * (1 - 1 / n) ** (g + 1))]
    return []
