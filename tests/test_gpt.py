from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from models.base import Model
from models.gpt import SIZES, GPTModel, GPTTrainConfig, item_size
from sweep.problems.sources import TruthLanguage

V, L = 16, 12


def tiny(**train: float) -> GPTModel:
    return GPTModel(vocab_size=V, block_size=L, size="xs", device="cpu",
                    train=GPTTrainConfig(**{"lr": 3e-3, "epochs": 4.0, "batch_size": 32, **train}))


@pytest.fixture(scope="module")
def language() -> TruthLanguage:
    return TruthLanguage(vocab_size=V, max_len=L, branching=2, eos_prob=0.15, seed=3)


def test_follows_the_protocol() -> None:
    assert isinstance(tiny(), Model)


def test_unknown_size_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="xs, s, m, l, xl"):
        GPTModel(vocab_size=V, block_size=L, size="huge")


def test_named_sizes_span_50k_to_20m_params() -> None:
    counts = [GPTModel(vocab_size=32, block_size=24, size=s, device="cpu").n_params for s in ("xs", "xl")]
    assert 40_000 < counts[0] < 80_000 and 15e6 < counts[1] < 25e6
    assert list(SIZES) == ["xs", "s", "m", "l", "xl"]


def test_explicit_dims_override_the_size() -> None:
    m = GPTModel(vocab_size=V, block_size=L, size=None, n_layer=1, n_head=2, n_embd=16)
    assert (m.config.n_layer, m.config.n_head, m.config.n_embd) == (1, 2, 16)


def test_kv_cache_sampling_equals_recomputing_the_prefix() -> None:
    m = tiny()
    for opts in ({}, {"temperature": 0.7, "top_k": 5}, {"top_p": 0.8}):
        cached = m.sample(64, np.random.default_rng(5), **opts)
        plain = m.sample(64, np.random.default_rng(5), use_cache=False, **opts)
        np.testing.assert_array_equal(cached, plain)


def test_prompted_samples_continue_their_prompts_with_and_without_the_cache() -> None:
    m = tiny()
    prompt = np.array([[3, 5, 7]] * 20 + [[4, 0, 0]] * 20)  # the second prompt is complete
    cached = m.sample(40, np.random.default_rng(5), prompt=prompt)
    np.testing.assert_array_equal(cached[:, :3], prompt)
    assert (cached[20:, 1:] == 0).all()
    assert len({tuple(row) for row in cached[:20]}) > 1  # continuations are drawn, not fixed
    np.testing.assert_array_equal(
        cached, m.sample(40, np.random.default_rng(5), prompt=prompt, use_cache=False))
    with pytest.raises(ValueError, match="prompt must have shape"):
        m.sample(4, np.random.default_rng(0), prompt=np.ones((4, L), dtype=np.int64))
    with pytest.raises(ValueError, match="prompt must have shape"):
        m.sample(4, np.random.default_rng(0), prompt=prompt)


def test_samples_are_padded_after_eos(language: TruthLanguage) -> None:
    m = tiny(epochs=3)
    m.fit(language.sample(500, np.random.default_rng(0)), np.random.default_rng(1))
    x = m.sample(200, np.random.default_rng(2))
    assert x.shape == (200, L) and x.dtype == np.int64
    eos_seen = np.cumsum(x == 0, axis=1) > 0
    assert (x[eos_seen] == 0).all()
    assert (item_size(x) < L).any()


def test_top_k_one_is_greedy() -> None:
    m = tiny()
    a = m.sample(8, np.random.default_rng(0), top_k=1)
    b = m.sample(8, np.random.default_rng(1), top_k=1)
    np.testing.assert_array_equal(a, b)
    assert (a == a[0]).all()  # every row follows the same argmax path


def test_temperature_and_top_p_narrow_the_samples() -> None:
    m = tiny()
    with torch.no_grad():  # a peaked next-token distribution, so narrowing is visible
        m.net.wte.weight.mul_(20.0)
    def distinct_first(**opts: float) -> int:
        return len(np.unique(m.sample(300, np.random.default_rng(0), max_len=1, **opts)))
    wide = distinct_first()
    assert distinct_first(temperature=0.05) < wide
    assert distinct_first(top_p=0.05) == 1
    assert distinct_first(top_k=3) <= 3


def test_default_sampling_options_come_from_attributes() -> None:
    m = tiny()
    m.top_k = 1
    np.testing.assert_array_equal(m.sample(4, np.random.default_rng(0)),
                                  m.sample(4, np.random.default_rng(9), top_k=1))


def test_log_prob_counts_tokens_up_to_the_first_eos() -> None:
    m = tiny()
    x = np.array([[3, 4, 0, 0, 0], [3, 4, 0, 7, 9]])  # identical up to EOS, junk after
    lp = m.log_prob(x)
    assert lp[0] == pytest.approx(lp[1], abs=1e-5) and lp[0] < 0
    np.testing.assert_array_equal(m.item_size(x), [3, 3])


def test_log_prob_is_a_normalised_distribution() -> None:
    """Summed over all rows of length <= 2 (with truncation at 2), probabilities sum to 1."""
    m = GPTModel(vocab_size=4, block_size=2, size="xs", device="cpu")
    rows = [[0, 0]] + [[a, b] for a in range(1, 4) for b in range(4)]
    assert np.exp(m.log_prob(np.array(rows))).sum() == pytest.approx(1.0, abs=1e-5)


def test_training_beats_uniform_on_the_truth_language(language: TruthLanguage) -> None:
    data = language.sample(1000, np.random.default_rng(0))
    test = language.sample(500, np.random.default_rng(1))
    m = tiny(epochs=3, lr=1e-2)
    m.fit(data, np.random.default_rng(2))
    nll = -m.log_prob(test).sum() / item_size(test).sum()
    true_nll = -language.log_prob(test).sum() / item_size(test).sum()
    assert nll < math.log(V) - 0.5
    assert nll > true_nll - 0.05  # cannot beat the truth (up to sampling noise)
    s = m.summary()
    # A fixed budget by default: all 3 epochs, no validation split (early_stopping is off).
    assert s["epochs_run"] == 3 and math.isfinite(s["train_loss"]) and math.isnan(s["val_loss"])


def test_fit_is_deterministic_on_cpu(language: TruthLanguage) -> None:
    data = language.sample(300, np.random.default_rng(0))
    weights = []
    for _ in range(2):
        m = tiny(epochs=1)
        m.reset(np.random.default_rng(4))
        m.fit(data, np.random.default_rng(5))
        weights.append(m.state_dict()["weights"])
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=0)


def test_fit_marks_its_phases_for_the_profiler(language: TruthLanguage) -> None:
    """benchmarks/gpt_utilisation.py splits a fit's time by these ranges."""
    from torch.profiler import ProfilerActivity, profile

    m = tiny(epochs=1, early_stopping=True)
    data = language.sample(128, np.random.default_rng(0))  # 115 training rows: 4 steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        m.fit(data, np.random.default_rng(1))
    counts: dict[str, int] = {}
    for event in prof.events():
        if event.name.startswith("gpt."):
            counts[event.name] = counts.get(event.name, 0) + 1
    steps = m.summary()["steps"]
    assert steps == 4
    assert counts == {"gpt.data": steps, "gpt.forward": steps, "gpt.backward": steps,
                      "gpt.clip": steps, "gpt.optimizer": steps, "gpt.validate": steps}


def test_the_optimizer_is_fused_adamw_on_cpu() -> None:
    opt = tiny()._optimizer()
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True


def test_reset_depends_only_on_the_rng() -> None:
    a, b = tiny(), tiny()
    a.reset(np.random.default_rng(1))
    b.reset(np.random.default_rng(1))
    np.testing.assert_array_equal(a.log_prob(np.array([[1, 2, 0]])), b.log_prob(np.array([[1, 2, 0]])))
    b.reset(np.random.default_rng(2))
    assert a.log_prob(np.array([[1, 2, 0]])) != b.log_prob(np.array([[1, 2, 0]]))


def test_state_dict_round_trips_through_weights_only_load(language: TruthLanguage) -> None:
    m = tiny(epochs=1)
    m.fit(language.sample(200, np.random.default_rng(0)), np.random.default_rng(1))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = tiny()
    other.load_state_dict(state)
    x = language.sample(20, np.random.default_rng(3))
    np.testing.assert_allclose(other.log_prob(x), m.log_prob(x), rtol=0, atol=0)
    assert other.flops("fit", 200) == m.flops("fit", 200)


def test_flops_follow_the_documented_formulas(language: TruthLanguage) -> None:
    m = tiny(epochs=2, val_fraction=0.0)
    data = language.sample(256, np.random.default_rng(0))
    m.fit(data, np.random.default_rng(1))
    tokens = m.summary()["tokens_trained"]
    width = item_size(data).max()
    assert tokens == 2 * 256 * width  # two epochs over the trimmed rows
    c = m.config
    assert m.flops("fit", 256) == pytest.approx(6 * tokens * (m.n_flop_params + c.n_layer * L * c.n_embd))
    assert m.flops("fit", 512) == pytest.approx(2 * m.flops("fit", 256))
    assert m.flops("score", 10) == pytest.approx(2 * 10 * L * (m.n_flop_params + c.n_layer * L * c.n_embd))
    with pytest.raises(ValueError, match="allowed"):
        m.flops("dance", 1)


def test_token_budget_sets_the_training_length(language: TruthLanguage) -> None:
    m = tiny(token_budget=2000, val_fraction=0.0)
    data = language.sample(500, np.random.default_rng(0))
    m.fit(data, np.random.default_rng(1))
    counted_per_step = 32 * item_size(data).mean()
    assert m.summary()["steps"] == pytest.approx(2000 / counted_per_step, abs=1.5)


def test_bad_items_are_rejected() -> None:
    m = tiny()
    with pytest.raises(ValueError, match="block_size"):
        m.log_prob(np.ones((2, L + 1), dtype=np.int64))
    with pytest.raises(ValueError, match="token ids"):
        m.log_prob(np.full((2, 3), V))
    with pytest.raises(ValueError, match="empty"):
        m.fit(np.zeros((0, 3), dtype=np.int64), np.random.default_rng(0))


def test_dropout_fits_are_reproducible_and_leave_the_global_rng_alone(language: TruthLanguage) -> None:
    data = language.sample(200, np.random.default_rng(0))
    before = torch.random.get_rng_state()
    losses = []
    for _ in range(2):
        m = GPTModel(vocab_size=V, block_size=L, size="xs", device="cpu", dropout=0.2,
                     train=GPTTrainConfig(lr=3e-3, batch_size=32, epochs=1, val_fraction=0.0))
        m.fit(data, np.random.default_rng(1))
        losses.append(m.summary()["train_loss"])
    assert losses[0] == losses[1]
    assert torch.equal(before, torch.random.get_rng_state())


@pytest.mark.slow
def test_a_five_generation_xs_chain_degrades_and_stays_finite() -> None:
    """Recursive training on own samples (replace): the held-out NLL rises from model 0."""
    lang = TruthLanguage()
    rng = np.random.default_rng(0)
    data, test = lang.sample(1000, rng), lang.sample(1000, rng)
    m = GPTModel(vocab_size=32, block_size=24, size="xs", device="cpu",
                 train=GPTTrainConfig(lr=1e-2, batch_size=32, epochs=8))
    nll = []
    for _ in range(6):
        m.reset(rng)
        m.fit(data, rng)
        nll.append(-m.log_prob(test).sum() / item_size(test).sum())
        data = m.sample(1000, rng)
    assert np.isfinite(nll).all() and nll[0] < math.log(32) - 1.0
    assert nll[-1] > nll[0]


def test_config_training_section_is_the_models_settings():
    """One home: model.train is generated from GPTTrainConfig (no field dropped, same defaults)."""
    import dataclasses

    from sweep.config import ConfigError, load_config

    train = load_config({"model": {"family": "gpt"}}).model.train
    assert train.model_dump() == dataclasses.asdict(GPTTrainConfig())
    with pytest.raises(ConfigError, match=r"^model.train.patience: input should be greater"):
        load_config({"model": {"family": "gpt", "train": {"patience": 0}}})
