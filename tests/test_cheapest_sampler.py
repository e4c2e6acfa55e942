"""The ``cheapest`` sampler: cost-ordered constrained search, no configuration asked twice."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweep.config import ConfigError, load_config
from sweep.search.cheapest import CheapestFeasibleSampler
from sweep.search.space import validate_search

optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = {"a": IntDistribution(0, 9), "b": CategoricalDistribution(["x", "y", "z"])}
FACTOR = {"x": 1.0, "y": 1.5, "z": 3.0}


def cost(p):  # 30 points; 11 of them are cheaper than the optimum (a=4, b=x) and infeasible
    return 2.0 ** p["a"] * FACTOR[p["b"]]


def margin(p):  # feasible (<= 0) from a = 4 on, whatever b
    return 3.5 - p["a"]


def _tell(study, trial, p):
    study._storage.set_trial_system_attr(trial._trial_id, "constraints", [margin(p)])
    study.tell(trial, [cost(p)])


def _run(seed: int, trials: int) -> list[dict]:
    study = optuna.create_study(directions=["minimize"],
                                sampler=CheapestFeasibleSampler(SPACE, cost_index=0, seed=seed))
    asked = []
    for _ in range(trials):
        trial = study.ask(SPACE)
        asked.append(dict(trial.params))
        _tell(study, trial, trial.params)
    return asked


def test_a_finite_space_is_never_asked_twice():
    asked = _run(seed=0, trials=30)
    assert len({(p["a"], p["b"]) for p in asked}) == 30


def test_walks_up_the_cost_to_the_cheapest_feasible_point():
    # A random 10 of the 30 points include the optimum with probability 1/3; the walk finds
    # it in every one of 10 sampler seeds: after the random start (4 trials) the margin
    # model rules out a < 4 and the cost model orders the rest.
    found = [{"a": 4, "b": "x"} in _run(seed=s, trials=10) for s in range(10)]
    assert all(found), found


def test_running_trials_count_as_asked():
    study = optuna.create_study(directions=["minimize"],
                                sampler=CheapestFeasibleSampler(SPACE, cost_index=0, seed=1))
    pending = [study.ask(SPACE) for _ in range(6)]  # six in flight at once (concurrency)
    assert len({(t.params["a"], t.params["b"]) for t in pending}) == 6


def test_continuous_space_suggestions_stay_in_their_distributions():
    space = {"f": FloatDistribution(0.0, 1.0), "g": FloatDistribution(1e-3, 1.0, log=True),
             "n": IntDistribution(10, 10_000, log=True)}
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=CheapestFeasibleSampler(space, cost_index=1, seed=3))
    for _ in range(12):
        trial = study.ask(space)
        p = trial.params
        assert 0.0 <= p["f"] <= 1.0 and 1e-3 <= p["g"] <= 1.0 and 10 <= p["n"] <= 10_000
        study._storage.set_trial_system_attr(trial._trial_id, "constraints", [0.5 - p["f"]])
        study.tell(trial, [p["f"], p["n"] * (1 + p["f"])])
    # after the start, the walk goes to cheap, plausibly feasible points: small n, f > 0.5
    late = [t.params for t in study.trials[8:]]
    assert sum(p["f"] > 0.4 for p in late) >= 3


BASE = {"model": {"family": "gaussian"}, "recursion": {"generations": 2}}


def test_cheapest_is_the_default_and_needs_total_flops():
    spec = validate_search(load_config({**BASE, "search": {
        "space": {"recursion.real_fraction": {"choice": [0.0, 0.5]}}}}))
    assert spec.sampler == "cheapest"
    with pytest.raises(ConfigError, match=r"^search\.sampler: cheapest .*total_flops"):
        validate_search(load_config({**BASE, "search": {
            "objectives": {"quality_gap": "min"},
            "space": {"recursion.real_fraction": {"choice": [0.0, 0.5]}}}}))
