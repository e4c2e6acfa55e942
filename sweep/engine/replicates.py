"""Replicate chains of one configuration: their seeds, mean, standard error, confidence bound.

A sweep trial runs ``search.seeds`` chains of one configuration. Its objectives are the means
over those chains, each with a standard error, and it counts as *not collapsing* when the
one-sided upper confidence bound of the mean gap at ``collapse.confidence`` is within the
tolerance (Student's t, so a handful of seeds gives an honest, wide bound):

    UCB = mean + t_{confidence, k-1} * sd / sqrt(k)

With one seed there is no standard error: the bound falls back to the single chain's value
(no interval; the confirmation stage, which re-runs the answer on fresh seeds, is then the
only guard against a lucky seed).

Seeds are derived from the trial's config seed, the same for every trial of a sweep (so a
generation 0 is shared across trials per seed, and configs are compared on common random
numbers); confirmation seeds come from a disjoint range the search never uses.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sweep.config import ChainConfig

#: Confirmation seeds start this far above the trial's seed; the search uses seed .. seed+k-1.
CONFIRM_SEED_OFFSET = 1_000_000
#: ``search.seeds`` when a sweep config does not say (chains per trial).
DEFAULT_SEEDS = 5
#: Per-chain statuses whose values are results (the others failed or diverged).
OK_STATUSES = ("finished", "stopped_collapsed")


def search_seeds(seed: int, k: int) -> list[int]:
    """The chain seeds of one search trial: ``seed, seed + 1, ..., seed + k - 1``."""
    if not 1 <= k < CONFIRM_SEED_OFFSET:
        raise ValueError(f"seeds: {k} (allowed: 1 .. {CONFIRM_SEED_OFFSET - 1})")
    return [seed + i for i in range(k)]


def sweep_seeds(search: dict[str, Any] | None) -> int:
    """``search.seeds`` of a sweep config's raw ``search`` section (its default if absent)."""
    return int((search or {}).get("seeds", DEFAULT_SEEDS))


def trial_key(config: ChainConfig, seeds: list[int]) -> str:
    """Ledger key of a trial: its config and its chains' seeds (one seed: the config's hash)."""
    if seeds == [config.seed]:
        return config.fingerprint()
    blob = json.dumps({"config": config.fingerprint(), "seeds": seeds}).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def confirmation_seeds(seed: int, k: int) -> list[int]:
    """Fresh seeds for confirming a configuration, disjoint from every ``search_seeds(seed, .)``."""
    return [seed + CONFIRM_SEED_OFFSET + i for i in range(k)]


@functools.lru_cache(maxsize=256)
def t_quantile(confidence: float, dof: int) -> float:
    """One-sided Student-t quantile (``dof`` degrees of freedom)."""
    from scipy import stats

    return float(stats.t.ppf(confidence, dof))


def upper_bound(mean: float, se: float, n: int, confidence: float) -> float:
    """One-sided upper confidence bound of a mean of ``n`` draws; ``mean`` itself when n < 2."""
    if n < 2 or not math.isfinite(se):
        return float(mean)
    return float(mean + t_quantile(confidence, n - 1) * se)


def mean_se(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, standard error, n) of finite-or-not ``values``; se is NaN for one value."""
    x = np.asarray(list(values), dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if not math.isfinite(mean):
        se = math.nan
    return mean, se, n


def aggregate(per_seed: Sequence[dict[str, Any]], *, objectives: Iterable[str],
              tolerance: float, confidence: float) -> dict[str, Any]:
    """One trial's record from its chains' records (each with status, quality_gap, ...).

    Objectives and the usual per-chain fields become means, each objective with ``<name>_se``;
    ``quality_gap_ucb`` is the bound above, ``collapsed`` is ``ucb > tolerance`` (the trial is
    *feasible* when it is not), ``collapse_rate`` the fraction of chains that collapsed on
    their own, and ``seed_values`` keeps every chain's value of every objective.
    """
    if not per_seed:
        raise ValueError("aggregate: no chains")
    objectives = list(dict.fromkeys(["quality_gap", "total_flops", *objectives]))
    statuses = [str(r.get("status", "failed")) for r in per_seed]
    bad = [s for s in statuses if s not in OK_STATUSES]
    if bad:
        status = "failed" if "failed" in bad else bad[0]
    else:
        status = "stopped_collapsed" if "stopped_collapsed" in statuses else "finished"
    out: dict[str, Any] = {"status": status, "seeds": [int(r["seed"]) for r in per_seed],
                           "n_seeds": len(per_seed), "confidence": float(confidence)}
    errors = [str(r["error"]) for r in per_seed if r.get("error")]
    if errors:
        out["error"] = errors[0]
    seed_values: dict[str, list[float]] = {}
    for name in [*objectives, "final_real_nll", "total_label_cost"]:
        values = [_as_float(r.get(name)) for r in per_seed]
        mean, se, _ = mean_se(values)
        out[name] = mean
        if name in objectives:
            out[f"{name}_se"] = se
            seed_values[name] = values
    gap, gap_se, n = out["quality_gap"], out["quality_gap_se"], len(per_seed)
    ucb = upper_bound(gap, gap_se, n, confidence) if status in OK_STATUSES else math.nan
    out["quality_gap_ucb"] = ucb
    out["collapsed"] = not (math.isfinite(ucb) and ucb <= tolerance)
    out["collapse_rate"] = float(np.mean([bool(r.get("collapsed", True)) for r in per_seed]))
    out["generations_run"] = int(max(int(r.get("generations_run", 0) or 0) for r in per_seed))
    out["model0_flops"] = float(sum(_as_float(r.get("model0_flops", 0.0)) for r in per_seed))
    out["compute_flops"] = float(sum(v for v in seed_values["total_flops"] if math.isfinite(v)))
    out["seed_values"] = seed_values
    return out


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
