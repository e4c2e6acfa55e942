"""What a chain measures: the excess loss over the truth, the tail per family, the minority
dialect, the real data's reference values, deterministic GPT cost, and the health check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.gpt import GPTModel, GPTTrainConfig
from models.tokens import counted_mask, item_size
from sweep import load_config, run_chain
from sweep.cli.main import main
from sweep.engine.chain import Chain
from sweep.engine.health import health_check, longer_budget, no_synthetic_control
from sweep.problems import build_model, build_problem, excess_loss, family_of
from sweep.problems.lm_metrics import minority_share, reference_metrics
from sweep.problems.problem import rarest_outcomes
from sweep.problems.sources import TruthLanguage

TINY_LM = {"model": {"family": "gpt", "size": "xs", "train": {"batch_size": 32}},
           "data": {"source": "truth-lm", "vocab_size": 8, "max_len": 8, "test_size": 500},
           "recursion": {"generations": 1, "samples_per_generation": 300},
           "collapse": {"tolerance": 0.5}}


def problem(sections: dict, seed: int = 0):
    config = load_config(sections)
    return config, build_problem(config, np.random.default_rng(seed))


def excess(config, model, pb) -> float:
    return excess_loss(family_of(config), model, pb, model.log_prob(pb.test))


# --------------------------------------------------------------------------- excess loss
def test_excess_is_the_default_metric_and_text_falls_back_to_real_nll():
    assert load_config({}).collapse.metric == "excess"
    text = load_config({"model": {"family": "gpt"}, "data": {"source": "text"}})
    assert text.collapse.metric == "real_nll"


def test_excess_on_text_is_a_one_line_error(capsys):
    code = main(["chain", "--set", "model.family=gpt", "--set", "data.source=text",
                 "--set", "collapse.metric=excess"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("collapse-sweep: error: collapse.metric:") and "\n" not in err


def test_gaussian_excess_is_the_closed_form_kl():
    config, pb = problem({"model": {"family": "gaussian", "dim": 3}})
    model = build_model(config, pb, np.random.default_rng(0))
    model.fit(pb.real_train)
    exact = excess(config, model, pb)
    big = pb.truth.sample(400_000, np.random.default_rng(1))  # Monte Carlo KL(truth || model)
    mc = np.mean(pb.truth.log_prob(big) - model.log_prob(big))
    assert exact > 0 and abs(exact - mc) < 0.05 * exact + 2e-3
    assert excess(config, pb.truth, pb) == pytest.approx(0, abs=1e-12)


def test_categorical_excess_is_kl_with_the_scoring_floor():
    config, pb = problem({"model": {"family": "categorical", "outcomes": 20, "truth": "zipf"},
                          "recursion": {"samples_per_generation": 30}})
    model = build_model(config, pb, np.random.default_rng(0))
    model.fit(pb.real_train)
    p, q = pb.truth.probs, np.maximum(model.probs, model.nll_floor)
    assert (model.probs == 0).any()  # a lost outcome costs -log(floor), not infinity
    assert excess(config, model, pb) == pytest.approx(np.sum(p * np.log(p / q)))


def test_linreg_excess_is_parameter_error_and_gmm_excess_vanishes_at_the_truth():
    config, pb = problem({"model": {"family": "linreg", "dim": 5}})
    model = build_model(config, pb, np.random.default_rng(0))
    model.fit(pb.real_train)
    assert excess(config, model, pb) == model.param_error(pb.family_data.w_star)
    config, pb = problem({"model": {"family": "gmm"}})
    assert excess(config, pb.truth, pb) == pytest.approx(0, abs=1e-12)


def test_gap_on_excess_is_relative_growth_of_the_distance_to_the_truth():
    df = run_chain(load_config({"recursion": {"generations": 5}}))
    s = df.attrs["summary"]
    assert s["quality_gap"] == pytest.approx(df.excess.iloc[-1] / df.excess.iloc[0] - 1)
    assert s["excess_0"] == df.excess.iloc[0] and s["excess_final"] == df.excess.iloc[-1]
    old = run_chain(load_config({"recursion": {"generations": 5},
                                 "collapse": {"metric": "real_nll"}})).attrs["summary"]
    assert old["quality_gap"] == pytest.approx(df.real_nll.iloc[-1] / df.real_nll.iloc[0] - 1)


# --------------------------------------------------------------------------- the tail
def test_categorical_tail_is_the_rarest_outcomes_by_the_truth():
    _, zipf = problem({"model": {"family": "categorical", "outcomes": 30, "truth": "zipf"}})
    rare = rarest_outcomes(zipf.truth.probs)
    assert list(rare) == [27, 28, 29]  # Zipf: the highest ids are the least likely
    outcome = zipf.test[:, 0].astype(int)
    assert np.array_equal(zipf.tail_mask, np.isin(outcome, rare))
    _, uniform = problem({"model": {"family": "categorical", "outcomes": 30}})
    assert 0 < uniform.tail_mask.mean() < 0.3  # not the whole test set on a uniform truth
    assert "rarest" in uniform.tail_kind


def test_linreg_tail_is_the_high_leverage_inputs():
    _, pb = problem({"model": {"family": "linreg", "dim": 4}})
    norm = np.linalg.norm(pb.test[:, :4], axis=1)
    assert pb.tail_mask.mean() == pytest.approx(0.1, abs=0.01)
    assert norm[pb.tail_mask].min() >= norm[~pb.tail_mask].max()


@pytest.mark.parametrize("family", ["gaussian", "gmm"])
def test_continuous_tail_is_the_lowest_truth_density_decile(family):
    _, pb = problem({"model": {"family": family}})
    lp = pb.truth_test_log_prob
    assert pb.tail_mask.mean() == pytest.approx(0.1, abs=0.01)
    assert lp[pb.tail_mask].max() <= lp[~pb.tail_mask].min()


def test_truth_lm_tail_is_tokens_with_the_lowest_truth_probability():
    config, pb = problem(TINY_LM | {"data": {"source": "truth-lm", "vocab_size": 16,
                                             "max_len": 16, "test_size": 2000}})
    tail, counted = pb.tail_mask, counted_mask(pb.test)
    assert tail.shape == pb.test.shape and not (tail & ~counted).any()
    token_lp = pb.truth.token_log_prob(pb.test)
    assert tail.sum() / counted.sum() == pytest.approx(0.1, abs=0.03)
    assert token_lp[tail].max() <= token_lp[counted & ~tail].min()
    # Length does not decide: rows holding tail tokens are not the short ones.
    lengths = item_size(pb.test)
    assert lengths[tail.any(axis=1)].mean() >= lengths.mean()


def test_truth_token_log_prob_sums_to_the_row_log_prob_and_gpt_agrees():
    truth = TruthLanguage(vocab_size=10, max_len=10)
    x = truth.sample(300, np.random.default_rng(0))
    assert np.allclose(truth.token_log_prob(x).sum(axis=1), truth.log_prob(x))
    model = GPTModel(vocab_size=10, block_size=10)
    assert np.allclose(model.token_log_prob(x).sum(axis=1), model.log_prob(x), atol=1e-4)
    rows, dialect = truth.sample_with_dialect(300, np.random.default_rng(0))
    assert np.array_equal(rows, x) and 0 < dialect.mean() < 0.2


# --------------------------------------------------------------------------- LM metrics
@pytest.fixture(scope="module")
def tiny_lm_rows():
    chain = Chain(load_config(TINY_LM, {"model.train.epochs": 2}), seed=0)
    while not chain.done:
        chain.step()
    return chain.rows


def test_lm_rows_carry_minority_nll_and_the_real_data_beside_the_model(tiny_lm_rows):
    row = tiny_lm_rows[-1]
    for key in ("excess", "kl", "minority_nll", "minority_kl", "minority_share",
                "minority_share_se", "minority_share_truth", "minority_share_truth_se",
                "distinct_2", "distinct_2_real", "repetition_rate_real"):
        assert np.isfinite(row[key]), key
    assert row["excess"] == row["kl"]
    # The real data's values are measured once and are the same in every row.
    assert {r["distinct_2_real"] for r in tiny_lm_rows} == {row["distinct_2_real"]}
    # From >= 2000 samples: a standard error small enough to resolve a 5% share.
    assert row["minority_share_truth_se"] < 0.01


def test_minority_share_of_the_truth_and_its_standard_error():
    truth = TruthLanguage(vocab_size=16, max_len=16, minority_share=0.05)
    shares, ses = [], []
    for seed in range(8):
        share, se, _ = minority_share(truth.sample(2000, np.random.default_rng(seed)), truth)
        shares.append(share)
        ses.append(se)
    # The se predicts the seed-to-seed spread (within a factor of 2 over 8 draws).
    assert 0.5 < np.std(shares, ddof=1) / np.mean(ses) < 2.0
    ref = reference_metrics(truth.sample(2000, np.random.default_rng(9)), truth)
    assert abs(ref["minority_share_truth"] - 0.05) < 4 * ref["minority_share_truth_se"] + 0.01


# --------------------------------------------------------------------------- cost
def test_gpt_fit_cost_does_not_depend_on_the_seed_by_default():
    truth = TruthLanguage(vocab_size=8, max_len=8)
    data = truth.sample(200, np.random.default_rng(0))
    flops = []
    for seed in range(3):
        model = GPTModel(vocab_size=8, block_size=8, train=GPTTrainConfig(epochs=3), seed=seed)
        model.fit(data, np.random.default_rng(seed))
        flops.append(model.flops("fit", len(data)))
        assert model.summary()["epochs_run"] == 3
    assert len(set(flops)) == 1


def test_early_stopping_counts_its_validation_passes():
    truth = TruthLanguage(vocab_size=8, max_len=8)
    data = truth.sample(200, np.random.default_rng(0))
    model = GPTModel(vocab_size=8, block_size=8,
                     train=GPTTrainConfig(epochs=3, early_stopping=True, patience=100))
    model.fit(data, np.random.default_rng(0))
    c = model.config
    per_position = model.n_flop_params + c.n_layer * c.block_size * c.n_embd
    rec = model._fit
    assert rec.val_tokens > 0
    assert model.flops("fit", rec.items) == pytest.approx((6 * rec.tokens + 2 * rec.val_tokens)
                                                          * per_position)


def test_sampling_cost_counts_the_positions_run():
    model = GPTModel(vocab_size=8, block_size=8, train=GPTTrainConfig(eval_batch_size=50))
    x = model.sample(100, np.random.default_rng(0))
    c = model.config
    per_position = model.n_flop_params + c.n_layer * c.block_size * c.n_embd
    # A batch runs until its last row ends: at least the longest row, at most block_size.
    flops = model.flops("sample", 100)
    assert 2 * 100 * item_size(x).max() * per_position <= flops + 1e-6 or \
        flops >= 2 * item_size(x).sum() * per_position
    assert flops <= 2 * 100 * c.block_size * per_position


# --------------------------------------------------------------------------- health check
def test_control_and_longer_budget_configs():
    config = load_config(TINY_LM, {"recursion.regime": "accumulate", "recursion.real_fraction": 0.2,
                                   "curation.scorer": "self", "curation.strength": 0.5})
    control = no_synthetic_control(config)
    assert (control.recursion.regime, control.recursion.real_fraction) == ("replace", 1.0)
    assert control.curation.scorer == "none" and control.model == config.model
    assert longer_budget(config).model.train.epochs == 2 * config.model.train.epochs
    assert longer_budget(load_config({"model": {"family": "gmm", "max_iter": 7}})).model.max_iter == 14
    assert longer_budget(load_config({})) is None  # closed-form fit


def test_check_command_passes_on_a_closed_form_family(tmp_path, capsys):
    out = tmp_path / "health.json"
    assert main(["check", "--set", "recursion.generations=3", "--json", str(out)]) == 0
    assert "health check passed" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["passed"] and report["converged"] and len(report["control_gaps"]) == 3


@pytest.mark.slow
def test_health_check_fires_on_an_undertrained_model_0_and_not_on_a_trained_one():
    # Measured (3 seeds, tolerance 0.5): 1 epoch -> 2x the budget lowers the KL by ~17% (limit
    # 12.5%) and the control's gap is +0.16 +- 0.17; 8 epochs -> 2x overfits (KL +38%), the
    # control's gap +0.08 +- 0.06 (limit 0.167).
    under = health_check(load_config(TINY_LM, {"model.train.epochs": 1}))
    assert not under.passed and not under.converged
    assert "not trained to convergence" in under.reason
    trained = health_check(load_config(TINY_LM, {"model.train.epochs": 8}))
    assert trained.passed, trained.reason
