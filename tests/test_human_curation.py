"""The ``human`` scorer (a simulated labeller with an error rate and a cost per label) and
``judge`` ensembles that mix families."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sweep.config import ConfigError, load_config
from sweep.engine.chain import Chain, run_chain
from sweep.engine.curation import labeller_scores

SEEDS = range(120)


def test_labeller_pair_error_matches_its_rate():
    """P(a random pair is ordered against the reference) = error, for every error in [0, .5]."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(20_000)
    i, j = rng.integers(len(ref), size=(2, 200_000))
    keep = i != j
    i, j = i[keep], j[keep]
    for error in (0.0, 0.1, 0.25, 0.4, 0.5):
        labels = labeller_scores(ref, error, np.random.default_rng(1))
        wrong = np.mean(np.sign(labels[i] - labels[j]) != np.sign(ref[i] - ref[j]))
        # Ties (a guess equal to the partner's score) are rare: n = 20k distinct scores.
        assert wrong == pytest.approx(error, abs=0.005)
    assert np.array_equal(labeller_scores(ref, 0.0, np.random.default_rng(1)), ref)


def _gaps(curation: dict) -> np.ndarray:
    config = load_config({"recursion": {"generations": 6, "samples_per_generation": 50},
                          "collapse": {"metric": "real_nll"},  # the docstring's real-NLL gap
                          "curation": {"strength": 0.5, "selection": "sample", **curation}})
    out = []
    for seed in SEEDS:
        chain = Chain(config, seed=seed)
        while not chain.done:
            chain.step()
        out.append(chain.summary()["quality_gap"])
    return np.array(out)


def test_perfect_labeller_is_the_oracle_and_a_coin_flipper_is_no_curation():
    """Gaussian chains, strength 0.5, importance resampling (selection: sample) by the
    oracle density ratio: the oracle nearly removes the real-NLL gap. A labeller with 0%
    error keeps exactly the oracle's candidates (same gaps, seed by seed); with 50% error its
    labels are independent of quality, so its gaps match no curation in distribution (same
    mean within 3 standard errors of the difference, 120 fixed seeds)."""
    oracle = _gaps({"scorer": "oracle"})
    none = _gaps({"scorer": "none"})
    perfect = _gaps({"scorer": "human", "human_error": 0.0})
    coin = _gaps({"scorer": "human", "human_error": 0.5})
    np.testing.assert_array_equal(perfect, oracle)
    se = np.sqrt(coin.var(ddof=1) / len(coin) + none.var(ddof=1) / len(none))
    assert abs(coin.mean() - none.mean()) < 3 * se
    assert coin.mean() - oracle.mean() > 5 * se  # and curation did matter here


def test_label_cost_and_budget_in_rows_and_summary():
    base = {"recursion": {"generations": 4, "samples_per_generation": 40},
            "curation": {"scorer": "human", "strength": 0.5, "human_error": 0.1,
                         "label_cost": 0.25}}
    df = run_chain(load_config(base))
    assert list(df["labels"].iloc[1:]) == [80] * 4  # ceil(40 / 0.5) candidates, all labelled
    assert list(df["label_cost"].iloc[1:]) == [20.0] * 4
    assert df.attrs["summary"]["total_label_cost"] == 80.0
    # Scorer FLOPs are not charged for a human: the labels are the cost.
    assert (df["score_flops"] == 0).all()
    budgeted = run_chain(load_config(base, {"curation.label_budget": 100}))
    assert list(budgeted["labels"].iloc[1:]) == [80, 20, 0, 0]
    assert budgeted.attrs["summary"]["total_label_cost"] == 25.0
    assert run_chain(load_config({})).attrs["summary"]["total_label_cost"] == 0.0


def test_label_cost_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sweep.observe.board import ChainLogger

    config = load_config({"recursion": {"generations": 2, "samples_per_generation": 20},
                          "curation": {"scorer": "human", "strength": 0.5, "label_cost": 2.0}})
    with ChainLogger(tmp_path / "tb", config=config, params={}) as logger:
        df = run_chain(config, on_generation=logger.log_generation)
        logger.close(df.attrs["summary"])
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    costs = {e.step: e.value for e in acc.Scalars("compute/label_cost")}
    assert costs == {1: 80.0, 2: 80.0}
    assert "final/total_label_cost" in acc.Tags()["scalars"]


@pytest.mark.parametrize("overrides,message", [
    ({"curation.scorer": "human", "curation.human_error": 0.6}, "curation.human_error"),
    ({"model.family": "vae", "curation.scorer": "human"}, "human_reference: 'oracle' needs a known truth"),
    ({"curation.scorer": "human", "curation.human_reference": "none"}, "cannot be a labeller's reference"),
    ({"curation.scorer": "judge", "curation.judge_families": [{"family": "gpt"}]},
     "judge_families.0.family: 'gpt' cannot judge truth items"),
    ({"model.family": "vae", "curation.scorer": "judge",
      "curation.judge_families": [{"family": "diffusion", "timesteps": 1}]},
     "judge_families.0.timesteps"),
    ({"curation.judge_families": [{"family": "gaussian"}]}, "only scorer judge"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config({}, overrides)


def test_judge_ensemble_mixes_families_and_resumes():
    config = load_config({
        "model": {"family": "vae", "size": "xs", "train": {"steps": 20}},
        "data": {"eval_samples": 100, "test_size": 100},
        "recursion": {"generations": 1, "samples_per_generation": 60},
        "curation": {"scorer": "judge", "strength": 0.5, "judge_models": 2,
                     "judge_families": [{"family": "diffusion", "timesteps": 20,
                                         "elbo_steps": 5, "train": {"steps": 10}}]}})
    chain = Chain(config)
    row0 = chain.step()
    assert [type(j).__name__ for j in chain.judges] == ["VAEModel", "VAEModel", "DiffusionModel"]
    # Generation 0 pays for fitting the two independent judges.
    assert row0["fit_flops"] > chain.model.flops("fit", 60)
    row1 = chain.step()
    judges_cost = sum(j.flops("score", 120) for j in chain.judges)
    assert row1["score_flops"] == pytest.approx(judges_cost)
    again = Chain(config)
    again.load_state_dict(chain.state_dict())
    assert [type(j).__name__ for j in again.judges] == ["VAEModel", "VAEModel", "DiffusionModel"]
    x = chain.problem.test[:10]
    for a, b in zip(chain.judges, again.judges, strict=True):
        np.testing.assert_allclose(a.log_prob(x), b.log_prob(x))


@pytest.mark.slow
def test_sweep_minimises_label_cost_as_a_third_objective(ray_session, tmp_path, capsys):
    from sweep.analysis.core import analyze
    from sweep.search.driver import run_sweep

    config = load_config({
        "name": "labels", "recursion": {"generations": 3, "samples_per_generation": 30},
        "curation": {"scorer": "human", "strength": 0.5, "selection": "sample"},
        "collapse": {"tolerance": 0.5},
        "search": {"sampler": "grid", "trials": 4,
                   "space": {"curation.label_cost": {"choice": [0.5, 2.0]},
                             "curation.human_error": {"choice": [0.0, 0.3]}},
                   "objectives": {"quality_gap": "min", "total_flops": "min",
                                  "total_label_cost": "min"}}})
    run_dir = run_sweep(config, storage=str(tmp_path), progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert sorted(df["total_label_cost"]) == [90.0, 90.0, 360.0, 360.0]  # 3 gens x 60 labels
    summary = analyze(run_dir)
    assert all("total_label_cost" in t for t in summary["pareto_front"])
    assert "label cost" in capsys.readouterr().out
