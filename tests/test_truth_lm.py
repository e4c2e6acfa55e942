from __future__ import annotations

import itertools

import numpy as np
import pytest

from sweep.problems.sources import TruthLanguage


def all_rows(vocab: int, length: int) -> np.ndarray:
    """Every well-formed row: content then EOS then padding, or full-length content."""
    rows = []
    for n in range(length + 1):  # n content tokens
        for content in itertools.product(range(1, vocab), repeat=n):
            if n < length:
                rows.append(list(content) + [0] * (length - n))
            else:
                rows.append(list(content))
    return np.array(rows)


def test_probabilities_of_all_rows_sum_to_one() -> None:
    lang = TruthLanguage(vocab_size=4, max_len=3, branching=2, eos_prob=0.3, seed=0)
    rows = all_rows(4, 3)
    assert len(rows) == 1 + 3 + 9 + 27
    assert np.exp(lang.log_prob(rows)).sum() == pytest.approx(1.0, abs=1e-12)


def test_log_prob_matches_the_frequencies_of_its_own_samples() -> None:
    lang = TruthLanguage(vocab_size=4, max_len=3, branching=2, eos_prob=0.3, seed=1)
    x = lang.sample(100_000, np.random.default_rng(0))
    rows, counts = np.unique(x, axis=0, return_counts=True)
    expected = np.exp(lang.log_prob(rows)) * len(x)
    frequent = expected > 500
    assert frequent.sum() >= 5
    np.testing.assert_allclose(counts[frequent], expected[frequent], rtol=0.1)


def test_samples_follow_the_token_convention() -> None:
    lang = TruthLanguage()
    x = lang.sample(2000, np.random.default_rng(0))
    assert x.shape == (2000, 24) and x.dtype == np.int64
    assert (x[np.cumsum(x == 0, axis=1) > 0] == 0).all()  # padding after EOS
    sizes = lang.item_size(x)
    assert 5 < sizes.mean() < 15 and (sizes == 24).any() and (x[:, 0] != 0).mean() > 0.99
    assert np.isfinite(lang.log_prob(x)).all()


def test_the_language_is_built_from_its_seed() -> None:
    a, b, c = TruthLanguage(seed=7), TruthLanguage(seed=7), TruthLanguage(seed=8)
    np.testing.assert_array_equal(a.probs, b.probs)
    assert not np.array_equal(a.probs, c.probs)
    np.testing.assert_array_equal(a.sample(50, np.random.default_rng(0)),
                                  b.sample(50, np.random.default_rng(0)))


def test_dialect_posterior_recovers_the_minority_share() -> None:
    lang = TruthLanguage(minority_share=0.2)
    post = lang.dialect_posterior(lang.sample(5000, np.random.default_rng(0)))
    assert post.mean() == pytest.approx(0.2, abs=0.02)  # E[P(minority | x)] = share
    assert ((post < 0.05) | (post > 0.95)).mean() > 0.8  # the dialects are distinguishable


def test_sparsity_makes_the_language_far_from_uniform() -> None:
    lang = TruthLanguage()
    x = lang.sample(2000, np.random.default_rng(0))
    nll = -lang.log_prob(x).sum() / lang.item_size(x).sum()
    assert nll < 0.6 * np.log(32)


def test_bad_arguments_and_rows_are_rejected() -> None:
    with pytest.raises(ValueError, match="branching"):
        TruthLanguage(vocab_size=4, branching=4)
    with pytest.raises(ValueError, match="minority_share"):
        TruthLanguage(minority_share=1.0)
    lang = TruthLanguage(max_len=4)
    with pytest.raises(ValueError, match="L <= 4"):
        lang.log_prob(np.ones((2, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="token ids"):
        lang.log_prob(np.full((2, 3), 32))
