"""``search.sampler: cheapest``: look for the cheapest non-collapsing configuration, cheapest first.

The question a sweep answers is a constrained minimum: the least compute whose gap stays
within the tolerance. Compute is nearly a known function of the parameters (sample counts,
regime, model size), so after a few trials it can be predicted, and the search can walk up
the predicted cost order and skip what is plausibly infeasible, instead of spreading trials
along the whole gap/cost front as multi-objective TPE does. Each suggestion:

1. Candidates: every point of a finite space (categorical values, stepped ranges; at most
   ``MAX_GRID``), else ``POOL`` random draws; points already asked (running, finished or
   failed) are left out, so no trial repeats a configuration.
2. With fewer than ``startup`` finished trials: a random candidate (a seeded design).
3. Else two ridge regressions on the parameters (categorical: one-hot; numbers: the value and,
   when positive, its log): log cost, and the feasibility margin Optuna stores as the
   constraint (``gap bound - tolerance``, feasible when <= 0). A candidate is *plausible* when
   its predicted margin minus one residual standard deviation is <= 0. The suggestion is the
   plausible candidate of lowest predicted cost (if none is plausible: the lowest predicted
   cost overall, so a wrong margin model cannot stall the walk).

It answers the cheapest-feasible question; for a picture of the whole trade-off use ``tpe``
or ``nsga2``. Replicates, the confidence bound and confirmation on fresh seeds work as with
every sampler.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

MAX_GRID = 20_000  # enumerate finite spaces up to this many points
POOL = 1024  # random candidates per suggestion otherwise
RIDGE = 1e-3  # L2 penalty (relative to the number of trials) of both regressions


def _values(dist: BaseDistribution) -> list[Any] | None:
    """The finitely many values of a distribution, or None."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        n = (dist.high - dist.low) // dist.step + 1
        return list(range(dist.low, dist.high + 1, dist.step)) if n <= 256 else None
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        n = int(round((dist.high - dist.low) / dist.step)) + 1
        return [dist.low + i * dist.step for i in range(n)] if n <= 256 else None
    return None


def _point_key(params: dict[str, Any], names: list[str]) -> tuple:
    return tuple(round(params[n], 9) if isinstance(params[n], float) else params[n] for n in names)


class Encoder:
    """Parameters -> standardised numeric features (one-hot for categories)."""

    def __init__(self, space: dict[str, BaseDistribution]) -> None:
        self.columns: list[tuple[str, str, Any]] = []
        for name, dist in space.items():
            numeric = not isinstance(dist, CategoricalDistribution) or all(
                isinstance(c, (int, float)) and not isinstance(c, bool) for c in dist.choices)
            if not numeric:
                self.columns += [(name, "is", c) for c in dist.choices]
                continue
            self.columns.append((name, "value", None))
            low = dist.low if not isinstance(dist, CategoricalDistribution) else min(dist.choices)
            if low > 0:
                self.columns.append((name, "log", None))

    def __call__(self, points: list[dict[str, Any]]) -> np.ndarray:
        out = np.zeros((len(points), len(self.columns)))
        for j, (name, kind, choice) in enumerate(self.columns):
            for i, p in enumerate(points):
                v = p[name]
                out[i, j] = (float(v == choice) if kind == "is"
                             else math.log(float(v)) if kind == "log" else float(v))
        return out


def _ridge(x: np.ndarray, y: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, float]:
    """Predictions at ``new`` and the residual standard deviation (inf when underdetermined)."""
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd[sd == 0] = 1.0
    xs, ns = (x - mu) / sd, (new - mu) / sd
    xs1 = np.hstack([np.ones((len(xs), 1)), xs])
    ns1 = np.hstack([np.ones((len(ns), 1)), ns])
    penalty = RIDGE * len(y) * np.eye(xs1.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    coef = np.linalg.solve(xs1.T @ xs1 + penalty, xs1.T @ y)
    dof = len(y) - xs1.shape[1]
    resid = y - xs1 @ coef
    sigma = math.sqrt(float(resid @ resid) / dof) if dof > 0 else math.inf
    return ns1 @ coef, sigma


class CheapestFeasibleSampler(optuna.samplers.BaseSampler):
    """Cost-ordered constrained search (see the module docstring)."""

    def __init__(self, space: dict[str, BaseDistribution], *, cost_index: int, seed: int | None = None,
                 startup: int | None = None) -> None:
        self._space = dict(space)
        self._names = list(self._space)
        self._cost_index = cost_index
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._encode = Encoder(self._space)
        self._startup = startup if startup is not None else max(4, min(8, len(self._names) + 2))
        values = [_values(d) for d in self._space.values()]
        finite = all(v is not None for v in values)
        self._grid = ([dict(zip(self._names, combo, strict=True)) for combo in itertools.product(*values)]
                      if finite and math.prod(len(v) for v in values) <= MAX_GRID else None)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        asked = {_point_key(t.params, self._names) for t in trials
                 if all(n in t.params for n in self._names)}
        candidates = [c for c in self._candidates() if _point_key(c, self._names) not in asked]
        if not candidates:  # the whole finite space was asked: repeat a random point
            candidates = self._candidates()
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                and all(n in t.params for n in self._names) and t.constraints
                and t.values[self._cost_index] > 0]
        if len(done) < self._startup:
            return dict(candidates[self._rng.randint(len(candidates))])
        x = self._encode([t.params for t in done])
        new = self._encode(candidates)
        log_cost, _ = _ridge(x, np.log([t.values[self._cost_index] for t in done]), new)
        margin, sigma = _ridge(x, np.array([max(t.constraints.values()) for t in done]), new)
        plausible = margin - sigma <= 0
        order = np.lexsort((np.arange(len(candidates)), log_cost))
        pick = next((i for i in order if plausible[i]), order[0])
        return dict(candidates[int(pick)])

    def _candidates(self) -> list[dict[str, Any]]:
        if self._grid is not None:
            return self._grid
        return [{n: self._draw(d) for n, d in self._space.items()} for _ in range(POOL)]

    def _draw(self, dist: BaseDistribution) -> Any:
        values = _values(dist)
        if values is not None:
            return values[self._rng.randint(len(values))]
        if isinstance(dist, IntDistribution):  # log or very wide
            lo, hi = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
            v = self._rng.uniform(lo, hi)
            return int(round(math.exp(v) if dist.log else v))
        assert isinstance(dist, FloatDistribution)
        if dist.log:
            return float(math.exp(self._rng.uniform(math.log(dist.low), math.log(dist.high))))
        return float(self._rng.uniform(dist.low, dist.high))
