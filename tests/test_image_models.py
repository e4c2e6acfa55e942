"""The image families (models/vae.py, models/diffusion.py): protocol, bounds, FLOPs, state."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from models.base import Model
from models.diffusion import DiffusionModel, DiffusionTrainConfig, linear_alpha_bar
from models.vae import VAEModel, VAETrainConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models are overhead-bound: one torch thread is as fast, and on a loaded machine
    two threads spin-wait on each other (measured 20x slower wall-clock)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(n: int, rng: np.random.Generator, dim: int = 16) -> np.ndarray:
    """Two well-separated image 'classes' (bright left half / bright right half) plus noise."""
    half = rng.random(n) < 0.5
    x = np.zeros((n, dim), np.float32)
    x[half, : dim // 2] = 0.9
    x[~half, dim // 2:] = 0.9
    return x + 0.05 * rng.standard_normal((n, dim)).astype(np.float32)


def looks_like_blobs(s: np.ndarray) -> bool:
    """Samples resemble ``blobs``: one half much brighter (data: 0.9, untrained: ~0), and
    both classes present."""
    d = s[:, :8].mean(1) - s[:, 8:].mean(1)
    return bool(np.abs(d).mean() > 0.45 and 0.2 < (d > 0).mean() < 0.8)


def vae(**kw) -> VAEModel:
    train = VAETrainConfig(steps=kw.pop("steps", 300), iw_samples=kw.pop("iw", 8))
    return VAEModel(dim=16, size="xs", train=train, device="cpu", **kw)


def ddpm(**kw) -> DiffusionModel:
    train = DiffusionTrainConfig(steps=kw.pop("steps", 300), sample_steps=kw.pop("sample_steps", None),
                                 elbo_steps=kw.pop("elbo_steps", None))
    return DiffusionModel(dim=16, size="xs", timesteps=kw.pop("timesteps", 50), train=train,
                          device="cpu", **kw)


@pytest.fixture(scope="module")
def trained_ddpm() -> DiffusionModel:
    m = ddpm(seed=1)
    m.fit(blobs(300, np.random.default_rng(0)), np.random.default_rng(1))
    return m


@pytest.mark.parametrize("make", [vae, ddpm], ids=["vae", "diffusion"])
def test_protocol_training_lowers_the_bound_and_reproduces(make, trained_ddpm):
    rng = np.random.default_rng(0)
    data, test = blobs(300, rng), blobs(200, rng)
    before = make(seed=1).log_prob(test).mean()
    if make is ddpm:
        m = trained_ddpm
    else:
        m = make(seed=1)
        m.fit(data, np.random.default_rng(1))
    assert isinstance(m, Model)
    after = m.log_prob(test)
    assert after.shape == (200,) and np.isfinite(after).all()
    assert after.mean() > before + 5.0  # training raises the likelihood bound a lot
    assert np.array_equal(m.log_prob(test), after)  # scores are deterministic
    s = m.sample(64, np.random.default_rng(2))
    assert s.shape == (64, 16) and np.isfinite(s).all()
    assert looks_like_blobs(s)
    # Same seeds, same model, same samples; state round-trips.
    m2 = make(seed=1)
    m2.fit(data, np.random.default_rng(1))
    assert np.allclose(m2.sample(64, np.random.default_rng(2)), s)
    m3 = make(seed=99)
    m3.load_state_dict(m.state_dict())
    assert np.allclose(m3.log_prob(test), after)
    assert m3.flops("fit", 300) == m.flops("fit", 300)


def test_vae_importance_weighted_bound_is_tighter_than_the_elbo():
    rng = np.random.default_rng(0)
    data = blobs(300, rng)
    m = vae(seed=0, iw=1)
    m.fit(data, np.random.default_rng(1))
    elbo = m.log_prob(data[:100]).mean()
    m.train_config.iw_samples = 64
    iw = m.log_prob(data[:100]).mean()
    assert iw > elbo  # Burda et al.: the K-sample bound rises with K


def test_vae_gaussian_decoder_is_a_density():
    """With one latent dim and the decoder frozen, exp(log_prob) of the IWAE bound with many
    samples integrates to ~1 over a 1-D pixel grid (the bound is a proper density's)."""
    m = VAEModel(dim=1, hidden=8, layers=1, latent=1, size=None, min_sigma=0.2,
                 train=VAETrainConfig(iw_samples=2000), device="cpu")
    grid = np.linspace(-4, 5, 2001, dtype=np.float32)[:, None]
    mass = np.exp(m.log_prob(grid)).sum() * (grid[1, 0] - grid[0, 0])
    assert 0.9 < mass <= 1.02


def test_vae_and_ddpm_flops_formulas():
    m = vae(seed=0, steps=10)
    enc = sum(p.numel() for n, p in m.net.encoder.named_parameters() if n.endswith("weight"))
    dec = sum(p.numel() for n, p in m.net.decoder.named_parameters() if n.endswith("weight"))
    m.fit(blobs(100, np.random.default_rng(0)), np.random.default_rng(0))
    processed = 5 * 100  # 10 steps of 64 + 36 rows: 5 epochs of 100 rows
    assert m.flops("fit", 100) == pytest.approx(6 * (enc + dec) * processed)
    assert m.flops("sample", 7) == pytest.approx(2 * dec * 7)
    assert m.flops("score", 7) == pytest.approx(2 * (enc + 8 * dec) * 7)
    d = ddpm(seed=0, steps=5, sample_steps=10, elbo_steps=20)
    assert d.flops("sample", 3) == pytest.approx(2 * d.macs * 10 * 3)
    assert d.flops("score", 3) == pytest.approx(2 * d.macs * len(d._elbo_schedule()[0]) * 3)
    assert 15 <= len(d._elbo_schedule()[0]) <= 20 and sum(d._elbo_schedule()[1]) == 50
    d.fit(blobs(100, np.random.default_rng(0)), np.random.default_rng(0))
    assert d.flops("fit", 100) == pytest.approx(6 * d.macs * 5 * 100)
    with pytest.raises(ValueError, match="op"):
        d.flops("train", 1)


def test_ddpm_schedule_and_respaced_sampling(trained_ddpm):
    abar = linear_alpha_bar(200)
    assert abar[0] == 1 and abar[-1] < 1e-3 and torch.all(abar[1:] < abar[:-1])
    betas = 1 - abar[1:] / abar[:-1]
    assert betas.max() < 0.11  # the bound's weights beta / (1 - beta) stay bounded
    m = copy.deepcopy(trained_ddpm)
    full = m.sample(200, np.random.default_rng(1))
    m.train_config.sample_steps = 10
    few = m.sample(200, np.random.default_rng(1))
    assert m.flops("sample", 1) == trained_ddpm.flops("sample", 1) / 5
    assert looks_like_blobs(full) and looks_like_blobs(few)
    with pytest.raises(ValueError, match="sample_steps"):
        ddpm(sample_steps=51)


def test_ddpm_strided_bound_estimates_the_full_one(trained_ddpm):
    m = copy.deepcopy(trained_ddpm)
    test = blobs(300, np.random.default_rng(5))
    full = m.log_prob(test).mean()
    m.train_config.elbo_steps = 25
    strided = m.log_prob(test).mean()
    assert abs(strided - full) < 0.05 * abs(full) + 2.0
    loss = m.denoise_loss(test)
    assert loss.shape == (300,) and 0 < loss.mean() < 1.0  # below the untrained 1.0


def test_inputs_are_validated():
    m = vae()
    with pytest.raises(ValueError, match="pixels"):
        m.log_prob(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        m.fit(np.full((3, 16), math.nan), np.random.default_rng(0))
    with pytest.raises(ValueError, match="size"):
        VAEModel(dim=4, size="huge")
