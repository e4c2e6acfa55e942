"""Replicate seeds, mean / standard error, and the one-sided t bound the sweep's feasibility uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.engine.replicates import (
    CONFIRM_SEED_OFFSET,
    aggregate,
    confirmation_seeds,
    mean_se,
    search_seeds,
    upper_bound,
)


def test_confirmation_seeds_never_overlap_search_seeds():
    for seed in (0, 7, 123_456):
        search = set(search_seeds(seed, 10_000))
        assert len(search) == 10_000 and max(search) < min(confirmation_seeds(seed, 1))
        assert not search & set(confirmation_seeds(seed, 50))
    assert search_seeds(5, 3) == [5, 6, 7]
    with pytest.raises(ValueError, match="seeds"):
        search_seeds(0, CONFIRM_SEED_OFFSET)


def test_mean_se_matches_the_textbook_formula():
    mean, se, n = mean_se([1.0, 2.0, 3.0, 6.0])
    assert (mean, n) == (3.0, 4)
    assert se == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    assert math.isnan(mean_se([4.0])[1])


@pytest.mark.parametrize("k", [2, 3, 5, 10])
@pytest.mark.parametrize("confidence", [0.8, 0.9])
def test_upper_bound_covers_the_true_mean_at_its_confidence(k, confidence):
    # Draws from N(mu, sd): the bound must lie above mu in `confidence` of the repetitions.
    # 4000 repetitions: the coverage has binomial sd sqrt(c(1-c)/4000) <= 0.0064; allow 4 sd.
    reps, mu, sd = 4000, 0.02, 0.03
    rng = np.random.default_rng(k * 100 + int(confidence * 10))
    draws = rng.normal(mu, sd, size=(reps, k))
    covered = 0
    for x in draws:
        mean, se, n = mean_se(x)
        covered += mu <= upper_bound(mean, se, n, confidence)
    tol = 4 * math.sqrt(confidence * (1 - confidence) / reps)
    assert abs(covered / reps - confidence) <= tol


def test_upper_bound_with_one_seed_is_the_value_itself():
    assert upper_bound(0.04, math.nan, 1, 0.9) == 0.04


def _chain(seed, gap, flops=100.0, status="finished", collapsed=None):
    return {"seed": seed, "status": status, "quality_gap": gap, "total_flops": flops,
            "collapsed": gap > 0.05 if collapsed is None else collapsed, "generations_run": 3,
            "final_real_nll": 1.0, "model0_flops": 10.0}


def test_aggregate_means_se_and_feasibility_by_the_bound():
    chains = [_chain(0, 0.01, 100), _chain(1, 0.03, 110), _chain(2, 0.06, 120)]
    rec = aggregate(chains, objectives=["quality_gap", "total_flops"], tolerance=0.05,
                    confidence=0.9)
    assert rec["quality_gap"] == pytest.approx(0.1 / 3)
    assert rec["total_flops"] == pytest.approx(110.0)
    assert rec["total_flops_se"] == pytest.approx(10 / math.sqrt(3))
    se = np.std([0.01, 0.03, 0.06], ddof=1) / math.sqrt(3)
    assert rec["quality_gap_ucb"] == pytest.approx(0.1 / 3 + 1.885618 * se, rel=1e-5)
    # The mean (0.033) is within 0.05 but the 90% bound (0.061) is not: not feasible.
    assert rec["collapsed"] is True
    assert rec["collapse_rate"] == pytest.approx(1 / 3)
    assert rec["seeds"] == [0, 1, 2] and rec["n_seeds"] == 3
    assert rec["seed_values"]["quality_gap"] == [0.01, 0.03, 0.06]
    assert rec["compute_flops"] == 330.0 and rec["model0_flops"] == 30.0
    tight = aggregate([_chain(s, 0.02 + 0.001 * s) for s in range(3)],
                      objectives=["quality_gap"], tolerance=0.05, confidence=0.9)
    assert tight["collapsed"] is False and tight["status"] == "finished"


def test_aggregate_statuses():
    failed = _chain(1, math.nan, status="failed") | {"error": "boom"}
    rec = aggregate([_chain(0, 0.01), failed], objectives=[], tolerance=0.1, confidence=0.9)
    assert rec["status"] == "failed" and rec["error"] == "boom" and rec["collapsed"] is True
    stopped = aggregate([_chain(0, 0.5, status="stopped_collapsed"), _chain(1, 0.01)],
                        objectives=[], tolerance=0.1, confidence=0.9)
    assert stopped["status"] == "stopped_collapsed"
    one = aggregate([_chain(4, 0.04)], objectives=[], tolerance=0.05, confidence=0.9)
    assert one["quality_gap_ucb"] == 0.04 and one["collapsed"] is False
    assert math.isnan(one["quality_gap_se"])
