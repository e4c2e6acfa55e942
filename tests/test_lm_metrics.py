from __future__ import annotations

import numpy as np
import pytest

from sweep.problems.lm_metrics import (
    distinct_n,
    lm_sample_metrics,
    mean_length,
    rare_ngram_mask,
    repetition_rate,
    unigram_entropy,
)
from sweep.problems.rules import charset_rule, length_rule, repetition_rule, score_rules
from sweep.problems.sources import TextCorpus, TruthLanguage

ROWS = np.array([[5, 6, 5, 6, 0, 0],
                 [7, 8, 9, 0, 3, 3]])  # the 3s are padding after EOS


def test_distinct_n_counts_only_content() -> None:
    assert distinct_n(ROWS, 1) == pytest.approx(5 / 7)  # {5,6,7,8,9} over 7 tokens
    assert distinct_n(ROWS, 2) == pytest.approx(4 / 5)  # 56 65 56 | 78 89
    assert distinct_n(ROWS, 7) == 0.0


def test_distinct_n_agrees_for_large_vocabularies() -> None:
    x = np.random.default_rng(0).integers(1, 50_000, size=(20, 10))
    ref = len({tuple(r[i:i + 5]) for r in x for i in range(6)}) / (20 * 6)
    assert distinct_n(x, 5) == pytest.approx(ref)


def test_unigram_entropy_and_mean_length() -> None:
    assert unigram_entropy(np.array([[1, 2, 1, 2]])) == pytest.approx(np.log(2))
    assert mean_length(ROWS) == pytest.approx((5 + 4) / 2)


def test_repetition_rate_flags_loops() -> None:
    # row 0: 5 6 5 6 -> the last two repeat; row 1: 7 8 9 -> none. Eligible: 3 + 2.
    assert repetition_rate(ROWS) == pytest.approx(2 / 5)
    assert repetition_rate(np.array([[4, 4, 4, 4]])) == 1.0


def test_lm_sample_metrics_with_a_truth() -> None:
    lang = TruthLanguage(minority_share=0.1)
    x = lang.sample(3000, np.random.default_rng(0))
    m = lm_sample_metrics(x, lang)
    assert m["minority_share"] == pytest.approx(0.1, abs=0.02)
    assert m["sample_true_nll"] == pytest.approx(-lang.log_prob(x).sum() / lang.item_size(x).sum())
    uniform = np.random.default_rng(1).integers(1, 32, size=(3000, 24))
    assert lm_sample_metrics(uniform, lang)["sample_true_nll"] > m["sample_true_nll"] + 2
    assert "minority_share" not in lm_sample_metrics(x)


def test_minority_share_ignores_ungrammatical_samples() -> None:
    lang = TruthLanguage(minority_share=0.05)
    real = lang.sample(2000, np.random.default_rng(0))
    noise = np.random.default_rng(1).integers(1, 32, size=(2000, 24))
    assert lang.in_language(real).mean() > 0.98 and not lang.in_language(noise).any()
    m = lm_sample_metrics(np.concatenate([real, noise]), lang)
    assert m["in_language_share"] == pytest.approx(0.5, abs=0.02)
    assert m["minority_share"] == pytest.approx(0.05, abs=0.015)
    assert m["minority_share_all"] > 0.1  # noise alone would look like a rich tail


def test_rare_ngram_mask_picks_blocks_with_unseen_text() -> None:
    train = np.tile(np.frombuffer(b"the cat sat on the mat. ", dtype=np.uint8), (40, 1)).astype(np.int64)
    test = train[:10].copy()
    test[3] = np.frombuffer(b"zq xv jk wy pf gh bn mt. ", dtype=np.uint8)[:24]
    mask = rare_ngram_mask(test, train, quantile=0.1)
    assert mask[3] and mask.sum() == 1


def test_rare_ngram_mask_on_the_builtin_corpus() -> None:
    c = TextCorpus("builtin:tales", block_size=64)
    mask = rare_ngram_mask(c.test_blocks(), c.train_blocks(), quantile=0.1)
    assert 0.05 < mask.mean() <= 0.15


def test_rules_prefer_clean_text() -> None:
    clean = np.frombuffer(b"Once upon a time, a fox.", dtype=np.uint8).astype(np.int64)
    loop = np.frombuffer(b"aaaaaaaaaaaaaaaaaaaaaaaa", dtype=np.uint8).astype(np.int64)
    junk = np.array([200, 201, 3, 4] * 6)
    short = np.concatenate([clean[:3], np.zeros(21, dtype=np.int64)])
    scores = score_rules(np.stack([clean, loop, junk, short]))
    assert (scores[0] > scores[1:]).all()  # (spaces repeat, so clean text is not at 0)
    assert length_rule(min_len=8)(short[None])[0] == pytest.approx(-4 / 8)
    assert repetition_rule()(loop[None])[0] == pytest.approx(-1.0)
    assert charset_rule()(junk[None])[0] == pytest.approx(-1.0)


def test_score_rules_takes_custom_rules_and_weights() -> None:
    def prefers_long(x: np.ndarray) -> np.ndarray:
        return (x != 0).sum(axis=1).astype(float)

    s = score_rules(ROWS, [prefers_long], weights=[2.0])
    np.testing.assert_allclose(s, [8.0, 10.0])
    with pytest.raises(ValueError, match="weights"):
        score_rules(ROWS, [prefers_long], weights=[1.0, 2.0])
