"""configs/quick.yaml (`make demo`) can detect collapse: model 0 is trained (the health check
passes), pure replace with no real data collapses and accumulate does not.

The 10-seed runs behind the thresholds are in notes/DEMO_DESIGN.md: replace, real_fraction 0:
gap +0.82 .. +1.26 (tolerance 0.5), accumulate, real_fraction 0: gap well below it. Two
seeds here (a minute or two of CPU); each must land on its side of the tolerance.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep import load_config, run_chain
from sweep.engine.health import health_check

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
SEEDS = (0, 1)

pytestmark = pytest.mark.slow


def gap(regime: str, seed: int) -> float:
    config = load_config(QUICK, {"recursion.regime": regime, "recursion.real_fraction": 0.0,
                                 "collapse.stop_early": False, "search": None})
    return run_chain(config, seed=seed).attrs["summary"]["quality_gap"]


def test_quick_model_0_passes_the_health_check():
    report = health_check(load_config(QUICK, {"search": None}), seeds=[0, 1])
    assert report.passed, report.reason


@pytest.mark.parametrize("seed", SEEDS)
def test_quick_replace_collapses_and_accumulate_does_not(seed):
    tol = load_config(QUICK).collapse.tolerance
    assert gap("replace", seed) > tol
    assert gap("accumulate", seed) < tol
