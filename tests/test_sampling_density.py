"""``sample_log_prob``: the density a model samples from after temperature / top-p / top-k.

The density-ratio ``oracle`` divides by it (an importance weight needs the proposal's
density), so each family's version must be a normalised distribution that matches what
``sample`` draws, and equal ``log_prob`` with the default knobs.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.base import Model
from models.categorical import Categorical
from models.gaussian import Gaussian
from models.gmm import GaussianMixture
from models.gpt import GPTModel
from models.linreg import LinearRegression
from sweep.engine.curation import ScoreContext, get_scorer

GRID = np.linspace(-25.0, 25.0, 200_001)[:, None]  # 1-D integration grid, step 2.5e-4
STEP = float(GRID[1, 0] - GRID[0, 0])


def integral(model, rows: np.ndarray = GRID) -> float:
    return float(np.exp(model.sample_log_prob(rows)).sum() * STEP)


def knobs(model, **values):
    for key, value in values.items():
        setattr(model, key, value)
    return model


def test_defaults_equal_log_prob():
    rng = np.random.default_rng(0)
    g = Gaussian(2, mean=np.array([1.0, -1.0]), cov=np.array([[2.0, 0.3], [0.3, 1.0]]))
    mix = GaussianMixture(2, 1, weights=np.array([0.7, 0.3]), means=np.array([[0.0], [4.0]]),
                          covs=np.array([[[1.0]], [[0.5]]]))
    lin = LinearRegression(rng.standard_normal((5, 3)), weights=np.array([1.0, -2.0, 0.5]))
    cat = Categorical(5, probs=np.array([0.4, 0.3, 0.2, 0.1, 0.0]))
    for model in (g, mix, lin, cat):
        x = model.sample(50, rng)
        np.testing.assert_allclose(model.sample_log_prob(x), model.log_prob(x), rtol=1e-12)


@pytest.mark.parametrize("temperature, top_p", [(2.0, 1.0), (0.5, 1.0), (1.5, 0.8)])
def test_gaussian_is_a_normalised_tempered_truncated_density(temperature, top_p):
    g = knobs(Gaussian(1, mean=np.array([0.5]), cov=np.array([[2.0]])),
              temperature=temperature, top_p=top_p)
    assert integral(g) == pytest.approx(1.0, abs=1e-4)
    # Samples fall where the density is positive, and their spread is the tempered one.
    x = g.sample(20_000, np.random.default_rng(1))
    assert np.isfinite(g.sample_log_prob(x)).all()
    if top_p == 1.0:  # var of N(m, T s^2): 2 T; standard error of a variance ~ var sqrt(2/n)
        assert x.var() == pytest.approx(2.0 * temperature, rel=4 * np.sqrt(2 / len(x)))


def test_gmm_and_linreg_are_normalised_under_temperature():
    mix = knobs(GaussianMixture(2, 1, weights=np.array([0.7, 0.3]), means=np.array([[0.0], [4.0]]),
                                covs=np.array([[[1.0]], [[0.5]]])), temperature=1.7)
    assert integral(mix) == pytest.approx(1.0, abs=1e-4)
    lin = knobs(LinearRegression(np.array([[1.0, 2.0]]), weights=np.array([0.5, -1.0])),
                temperature=3.0)
    rows = np.column_stack([np.ones(len(GRID)), np.full(len(GRID), 2.0), GRID[:, 0]])
    assert integral(lin, rows) == pytest.approx(1.0, abs=1e-4)


def test_categorical_is_what_it_samples():
    cat = knobs(Categorical(5, probs=np.array([0.4, 0.3, 0.2, 0.1, 0.0])), temperature=0.5,
                top_p=0.8)
    outcomes = np.arange(5.0)[:, None]
    p = np.exp(cat.sample_log_prob(outcomes))
    np.testing.assert_allclose(p, cat.sampling_probs())
    assert p.sum() == pytest.approx(1.0) and p[3] == p[4] == 0.0  # cut by top-p


def _all_rows(vocab: int, length: int) -> np.ndarray:
    """Every canonical row: k content tokens, then EOS and padding (or none when k = length)."""
    rows = []
    for k in range(length + 1):
        for content in itertools.product(range(1, vocab), repeat=k):
            rows.append(list(content) + [0] * (length - k))
    return np.array(rows)


@pytest.mark.parametrize("opts", [{"temperature": 0.6}, {"top_k": 2}, {"top_p": 0.7},
                                  {"temperature": 1.4, "top_k": 3, "top_p": 0.9}])
def test_gpt_sampling_density_is_normalised_and_matches_samples(opts):
    m = knobs(GPTModel(vocab_size=4, block_size=3, size="xs", device="cpu"), **opts)
    rows = _all_rows(4, 3)
    p = np.exp(m.sample_log_prob(rows))
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    n = 20_000
    drawn = m.sample(n, np.random.default_rng(2))
    assert np.isfinite(m.sample_log_prob(drawn)).all()  # never a row the knobs rule out
    _, index = np.unique(np.vstack([rows, drawn]), axis=0, return_inverse=True)
    freq = np.bincount(index[len(rows):], minlength=len(rows)) / n
    expected = np.bincount(index[: len(rows)], weights=p, minlength=len(rows))  # same order
    # Binomial standard error per row; 5 sigma over 40 rows keeps false alarms ~1e-5.
    assert np.all(np.abs(freq - expected) <= 5 * np.sqrt(expected * (1 - expected) / n) + 1e-9)


def test_oracle_divides_by_the_sampling_density():
    class Truth:
        def log_prob(self, x):
            return np.zeros(len(x))

    g = knobs(Gaussian(1, mean=np.array([0.0]), cov=np.array([[1.0]])), temperature=2.0)
    x = np.array([[0.0], [1.0]])
    ctx = ScoreContext(model=g, judges=[], truth=Truth(), config=None)
    np.testing.assert_allclose(get_scorer("oracle")(x, ctx), -g.sample_log_prob(x))

    class Plain:  # a family without sample_log_prob does not follow the protocol
        temperature, top_p, top_k = 0.7, 1.0, 0

        def log_prob(self, x):
            return np.zeros(len(x))

    assert isinstance(g, Model) and not isinstance(Plain(), Model)
