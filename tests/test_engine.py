"""The chain engine: regimes, mixing, curation counts, determinism, resume."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sweep import load_config, run_chain, run_chains
from sweep.engine.chain import Chain
from sweep.engine.curation import candidates_needed, select, select_per_prompt
from sweep.engine.regimes import Pool
from sweep.files.checkpoint import load_checkpoint, save_checkpoint

FAMILIES = ["gaussian", "linreg", "categorical", "gmm"]


def cfg(**sections):
    return load_config(sections)


def record_fits(chain: Chain) -> list[np.ndarray]:
    """Make the chain's model keep a copy of every training set it is fit on."""
    seen: list[np.ndarray] = []
    orig_fit = chain.model.fit
    chain.model.fit = lambda data, rng: (seen.append(data.copy()), orig_fit(data, rng))[1]
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_columns_and_generation_zero_on_real_data(family):
    df = run_chain(cfg(model={"family": family}, recursion={"generations": 3}))
    assert list(df.generation) == [0, 1, 2, 3]
    for col in ("real_nll", "tail_nll", "train_size", "flops", "cumulative_flops"):
        assert df[col].notna().all(), col
    assert df.cumulative_flops.is_monotonic_increasing
    assert np.allclose(df.cumulative_flops, df.flops.cumsum())
    assert df.sample_flops.iloc[0] == 0 and (df.sample_flops.iloc[1:] > 0).all()
    stats = {"gaussian": ["mean", "var"], "linreg": ["param_error"],
             "categorical": ["gini", "support"], "gmm": ["minority_weight"]}[family]
    assert set(stats) <= set(df.columns)


@pytest.mark.parametrize("regime,sizes", [
    ("replace", [100, 100, 100, 100]),
    ("accumulate", [100, 200, 300, 400]),
    ("accumulate-subsample", [100, 100, 100, 100]),
])
def test_training_set_sizes_per_regime(regime, sizes):
    df = run_chain(cfg(recursion={"generations": 3, "regime": regime}))
    assert list(df.train_size) == sizes


def test_accumulate_trains_on_real_plus_every_batch():
    config = cfg(recursion={"generations": 2, "regime": "accumulate"})
    chain = Chain(config)
    seen = record_fits(chain)
    while not chain.done:
        chain.step()
    # D_0 is the first block of every later training set, and D_1 is a prefix of D_2.
    assert np.array_equal(seen[1][:100], seen[0])
    assert np.array_equal(seen[2][:200], seen[1])


def test_subsample_draws_from_union_without_replacement():
    config = cfg(recursion={"generations": 3, "regime": "accumulate-subsample"})
    chain = Chain(config)
    seen = record_fits(chain)
    while not chain.done:
        chain.step()
    union = chain.pool.view()
    assert len(union) == 400
    last = seen[-1]
    assert len(np.unique(last)) == len(last)  # no duplicates: without replacement
    assert np.isin(last, union).all()


def test_real_fraction_puts_real_examples_in_each_batch():
    config = cfg(recursion={"generations": 1, "real_fraction": 0.3, "regime": "replace"})
    chain = Chain(config)
    seen = record_fits(chain)
    chain.step()
    chain.step()
    real = chain.problem.real_train
    batch = seen[1]
    assert len(batch) == 100
    assert np.isin(batch[:30], real).all()  # 30 re-drawn from D_0 ('fixed')
    assert not np.isin(batch[30:], real).any()  # 70 synthetic


def test_fresh_real_source_draws_new_examples():
    config = cfg(recursion={"generations": 1, "real_fraction": 0.5, "real_source": "fresh"})
    chain = Chain(config)
    seen = record_fits(chain)
    chain.step()
    chain.step()
    assert not np.isin(seen[1][:50], chain.problem.real_train).any()


@pytest.mark.parametrize("m,s,expected", [(100, 0.0, 100), (100, 0.5, 200), (70, 0.9, 700),
                                          (100, 0.3, 143), (1, 0.99, 100)])
def test_candidates_needed_is_ceil(m, s, expected):
    assert candidates_needed(m, s) == expected == math.ceil(round(m / (1 - s), 9))


def test_curation_counts_candidates_and_their_compute():
    base = {"recursion": {"generations": 2}}
    plain = run_chain(cfg(**base))
    curated = run_chain(cfg(**base, curation={"scorer": "self", "strength": 0.75}))
    assert list(curated.candidates.iloc[1:]) == [400, 400]
    assert (curated.sample_flops.iloc[1:] == 4 * plain.sample_flops.iloc[1:]).all()
    assert (curated.score_flops.iloc[1:] > 0).all() and (plain.score_flops == 0).all()


def test_self_curation_keeps_the_models_most_likely_samples_and_narrows_it():
    plain = run_chain(cfg(recursion={"generations": 5}))
    curated = run_chain(cfg(recursion={"generations": 5},
                            curation={"scorer": "self", "strength": 0.5}))
    # Keeping the most likely half of a Gaussian's samples shrinks the fitted variance.
    assert curated["var"].iloc[-1] < 0.5 * plain["var"].iloc[-1]


def test_oracle_likelihood_agreement_is_recorded_and_perfect():
    df = run_chain(cfg(recursion={"generations": 2},
                       curation={"scorer": "oracle-likelihood", "strength": 0.5}))
    assert np.isnan(df.scorer_agreement.iloc[0])
    assert (df.scorer_agreement.iloc[1:] > 0.999).all()


@pytest.mark.parametrize("selection", ["top", "sample"])
def test_oracle_density_ratio_curation_prevents_gaussian_collapse(selection):
    # 20 generations of n = 100 under replace: the uncurated variance decays (E = 0.99^21 =
    # 0.81, this seed reaches 0.20, gap +76%); resampling by p_truth / p_model pulls every
    # batch back towards N(0, 1). On real_nll (the thresholds are for its relative gap).
    base = {"recursion": {"generations": 20}, "collapse": {"metric": "real_nll"}}
    plain = run_chain(cfg(**base)).attrs["summary"]["quality_gap"]
    curated = run_chain(cfg(**base, curation={"scorer": "oracle", "strength": 0.5,
                                              "selection": selection}))
    assert plain > 0.5
    assert curated.attrs["summary"]["quality_gap"] < 0.1
    assert curated.score_flops.iloc[1] > 0


def test_judge_scorer_uses_an_ensemble():
    config = cfg(recursion={"generations": 2},
                 curation={"scorer": "judge", "strength": 0.5, "judge_models": 3})
    chain = Chain(config)
    chain.step()
    assert len(chain.judges) == 3
    df = run_chain(config)
    assert df.fit_flops.iloc[0] > 3 * df.fit_flops.iloc[1] * 0.99  # judges' training counted once


def test_select_top_and_sample():
    rng = np.random.default_rng(0)
    scores = np.arange(10.0)
    assert list(select(scores, 3, how="top", temperature=1, rng=rng)) == [7, 8, 9]
    picks = np.concatenate([select(scores, 3, how="sample", temperature=1.0, rng=rng)
                            for _ in range(300)])
    assert np.mean(picks >= 7) > 0.6  # Bradley-Terry style: the better ones usually win


def test_select_per_prompt_keeps_one_continuation_of_every_prompt():
    rng = np.random.default_rng(0)
    scores = np.array([0.0, 2.0, 1.0, 5.0, 4.0, 3.0])
    assert list(select_per_prompt(scores, 3, how="top", temperature=1, rng=rng)) == [1, 3]
    # 'sample' is a softmax draw per prompt: with scores (0, log 4) the second wins with
    # probability 0.8; 4000 prompts give a standard error of 0.0063, tolerance 4 of them.
    pairs = np.tile([0.0, np.log(4.0)], 4000)
    keep = select_per_prompt(pairs, 2, how="sample", temperature=1.0, rng=rng)
    assert len(keep) == 4000 and (keep // 2 == np.arange(4000)).all()
    assert abs(np.mean(keep % 2) - 0.8) < 4 * 0.0063


def test_prompted_candidates_continue_real_prefixes():
    config = load_config({
        "model": {"family": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8,
                  "train": {"epochs": 1}, "device": "cpu"},
        "data": {"source": "truth-lm", "vocab_size": 8, "max_len": 6, "test_size": 20},
        "recursion": {"generations": 1, "samples_per_generation": 40},
        "curation": {"scorer": "oracle", "strength": 0.6, "selection": "sample"},
        "sampling": {"prompt_tokens": 2}})
    chain = Chain(config)
    chain.step()
    candidates, per_prompt = chain._candidates(chain.model, 10)
    assert per_prompt == 3 and candidates.shape == (30, 6)  # ceil(1 / (1 - 0.6)) per prompt
    prefixes = candidates[:, :2].reshape(10, 3, 2)
    assert (prefixes == prefixes[:, :1]).all()
    real = {tuple(row) for row in chain.problem.real_train[:, :2]}
    assert {tuple(p) for p in prefixes[:, 0]} <= real
    assert list(run_chain(config).candidates.iloc[1:]) == [120]


def test_same_config_and_seed_gives_identical_frame():
    config = cfg(model={"family": "gmm"}, recursion={"generations": 4, "regime": "accumulate"},
                 curation={"scorer": "self", "strength": 0.3})
    pd.testing.assert_frame_equal(run_chain(config), run_chain(config))
    assert not run_chain(config, seed=1).equals(run_chain(config, seed=2))


def test_run_chains_matches_run_chain_per_seed():
    config = cfg(recursion={"generations": 3})
    many = run_chains(config, range(20), workers=2)
    assert sorted(many.seed.unique()) == list(range(20))
    one = run_chain(config, seed=7)
    got = many[many.seed == 7].drop(columns="seed").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, one[got.columns], check_dtype=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_from_checkpoint_gives_the_same_frame(tmp_path, family):
    config = cfg(model={"family": family}, recursion={"generations": 6, "regime": "accumulate-subsample"},
                 curation={"scorer": "self", "strength": 0.2})
    full = run_chain(config)
    chain = Chain(config)
    for _ in range(3):
        chain.step()
    save_checkpoint(tmp_path, chain.state_dict())
    resumed = run_chain(config, checkpoint_dir=tmp_path)
    pd.testing.assert_frame_equal(resumed, full)


def test_checkpoint_rejects_another_config(tmp_path):
    chain = Chain(cfg(recursion={"generations": 2}))
    chain.step()
    save_checkpoint(tmp_path, chain.state_dict())
    other = Chain(cfg(recursion={"generations": 2, "regime": "accumulate"}))
    with pytest.raises(ValueError, match="different config"):
        other.load_state_dict(load_checkpoint(tmp_path))


def test_pool_is_compact_and_grows_amortised():
    pool = Pool(np.zeros((100, 24), dtype=np.int64))
    for _ in range(50):
        pool.append(np.ones((100, 24), dtype=np.int64))
    assert len(pool) == 5100 and pool.view().shape == (5100, 24)
    assert pool.nbytes == 5100 * 24 * 8


def test_collapse_summary_direction_and_any():
    df = run_chain(cfg(recursion={"generations": 30}))
    s = df.attrs["summary"]
    assert s["collapsed"] and s["quality_gap"] > 0.1
    acc = run_chain(cfg(recursion={"generations": 30, "regime": "accumulate"},
                        collapse={"metric": "var", "tolerance": 0.2}))
    assert not acc.attrs["summary"]["collapsed"]


def test_stop_early_when_clearly_collapsed():
    config = cfg(recursion={"generations": 200, "samples_per_generation": 10},
                 collapse={"stop_early": True, "tolerance": 0.1, "stop_factor": 2})
    df = run_chain(config)
    assert df.attrs["summary"]["status"] == "stopped_collapsed"
    assert len(df) < 201
