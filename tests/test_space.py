"""search: section validation: every problem is one ConfigError line, before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.config import ConfigError, load_config, trial_config
from sweep.search.space import validate_search

ROOT = Path(__file__).resolve().parents[1]
BASE = {"model": {"family": "gaussian"}}
OK_SPACE = {"recursion.real_fraction": {"uniform": [0.0, 1.0]}}


def _search(**search):
    return load_config({**BASE, "search": {"space": OK_SPACE, **search}})


@pytest.mark.parametrize(("search", "message"), [
    ({"space": {"recursion.regim": {"choice": ["replace"]}}},
     "search.space.recursion.regim: value 'replace' is not valid: recursion.regim: unknown field"),
    ({"space": {"model.size": {"choice": ["xs"]}}}, "search.space.model.size: value 'xs' is not valid"),
    ({"space": {"recursion.regime": {"choice": []}}}, "search.space.recursion.regime: choice: empty list"),
    ({"space": {"recursion.regime": {"choice": ["replace", "bogus"]}}},
     "search.space.recursion.regime: value 'bogus' is not valid: recursion.regime: got 'bogus'"),
    ({"space": {"recursion.real_fraction": {"uniform": [0.9, 0.1]}}},
     "search.space.recursion.real_fraction: uniform: low 0.9 > high 0.1"),
    ({"space": {"recursion.samples_per_generation": {"int": [50, 10]}}},
     "search.space.recursion.samples_per_generation: int: low 50 > high 10"),
    ({"space": {"recursion.real_fraction": {"uniform": [0.0, 2.0]}}},
     "search.space.recursion.real_fraction: value 2.0 is not valid"),
    ({"space": {"sampling.temperature": {"loguniform": [0.0, 2.0]}}},
     "search.space.sampling.temperature: loguniform: low must be > 0"),
    ({"sampler": "cmaes"}, "search.sampler: unknown sampler 'cmaes' (allowed: cheapest, tpe, nsga2, gp, random, grid)"),
    ({"objectives": {"speed": "min"}}, "search.objectives.speed: unknown objective"),
    ({"objectives": {"quality_gap": "down"}}, "search.objectives.quality_gap"),
    ({"concurrency": 0}, "search.concurrency: input should be greater than or equal to 1"),
    ({"trials": 0}, "search.trials: input should be greater than or equal to 1"),
    ({"trails": 3}, "search.trails: unknown field"),
    ({"sampler": "grid"}, "search.space.recursion.real_fraction: the grid sampler needs"),
    ({"space": {"recursion.real_fraction": {"uniform": [0, 1], "choice": [0.5]}}},
     "search.space.recursion.real_fraction: give exactly one of"),
    ({"space": {}}, "search.space: empty"),
])
def test_bad_search_is_one_line(search, message):
    with pytest.raises(ConfigError) as err:
        validate_search(_search(**search))
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_missing_search_and_bad_resources():
    with pytest.raises(ConfigError, match="^search: missing"):
        validate_search(load_config(BASE))
    bad = load_config({**BASE, "search": {"space": OK_SPACE}, "resources": {"tpu": 1}})
    with pytest.raises(ConfigError, match=r"^resources.tpu: unknown resource"):
        validate_search(bad)


def test_run_sweep_rejects_before_ray(tmp_path):
    import ray

    from sweep.search.driver import run_sweep

    was_up = ray.is_initialized()
    with pytest.raises(ConfigError, match="^search.concurrency"):
        run_sweep(_search(concurrency=0), storage=str(tmp_path), progress=False)
    assert not any(tmp_path.iterdir())  # nothing written
    assert ray.is_initialized() == was_up  # and Ray not started by it


def test_grid_space_and_distributions():
    spec = validate_search(_search(sampler="grid", trials=100, space={
        "recursion.real_fraction": {"uniform": [0.0, 1.0], "step": 0.25},
        "recursion.samples_per_generation": {"int": [10, 30], "step": 10},
        "recursion.regime": {"grid": ["replace", "accumulate"]},
    }))
    assert spec.grid_values()["recursion.real_fraction"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert spec.grid_values()["recursion.samples_per_generation"] == [10, 20, 30]
    assert spec.grid_size == 30 and spec.num_trials == 30  # trials capped at the grid
    dists = validate_search(_search(sampler="tpe", space={
        "sampling.temperature": {"loguniform": [0.5, 2.0]},
        "recursion.samples_per_generation": {"int": [10, 1000], "log": True},
    })).distributions()
    assert dists["sampling.temperature"].log and dists["recursion.samples_per_generation"].log


def test_trial_config_applies_params():
    cfg = _search()
    trial = trial_config(cfg, {"recursion.real_fraction": 0.3, "curation.strength": 0.5})
    assert trial.recursion.real_fraction == 0.3 and trial.curation.strength == 0.5
    assert trial.search is None and trial.resources is None


@pytest.mark.parametrize("name", ["quick.yaml", "analytic-sweep.yaml", "cluster-gpu.yaml"])
def test_shipped_sweep_configs_validate(name):
    spec = validate_search(load_config(ROOT / "configs" / name))
    assert spec.trials >= 16
    assert set(spec.objectives) == {"quality_gap", "total_flops"}


def test_set_reaches_search_space_keys_with_dots():
    cfg = load_config(ROOT / "configs" / "quick.yaml",
                      ["search.space.model.size={choice: [xs]}", "search.space.seed={int: [0, 3]}",
                       "search.trials=4"])
    space = cfg.search["space"]
    assert space["model.size"] == {"choice": ["xs"]} and space["seed"] == {"int": [0, 3]}
    assert "model" not in space and space["recursion.regime"]  # the others are untouched
    assert validate_search(cfg).num_trials == 4
