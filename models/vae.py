"""A small MLP variational autoencoder (Kingma & Welling 2014) behind the Model protocol.

Items are float images flattened to rows, shape (n, dim), pixel values roughly in [0, 1]
(the 8x8 digits: dim 64). The decoder is a Gaussian with a learned per-pixel standard
deviation (floored at ``min_sigma``, so constant pixels such as the digits' blank corners
cannot buy unbounded density), which makes ``log_prob`` a bound on a proper continuous
density:

    log p(x) >= log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x)

the ELBO for K = 1 and the importance-weighted bound of Burda et al. (2016) for K > 1
(``iw_samples``; tighter as K grows, and cheap here: K decoder passes per item).
``sample`` draws z from the prior N(0, temperature * I) and x from the decoder.

Everything random flows from the ``numpy.random.Generator`` the caller passes in (through a
``torch.Generator``); nothing global is seeded. Training per generation follows the GPT's:
the caller resets (scratch), keeps (warm) or reloads model 0 (base) before ``fit``, and the
budget is ``epochs`` over this generation's training set (or a fixed number of ``steps``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from models.fitting import (
    FitRecord,
    TrainConfig,
    cpu_weights,
    image_rows,
    init_linear,
    torch_generator,
    train_minibatches,
)

#: Named sizes (hidden width, hidden layers per side, latent dim): parameters for 64-pixel
#: items are about xs 9k, s 53k, m 0.18M, l 1.2M, xl 4.5M.
SIZES: dict[str, tuple[int, int, int]] = {
    "xs": (64, 1, 4),
    "s": (128, 2, 8),
    "m": (256, 2, 16),
    "l": (512, 3, 32),
    "xl": (1024, 3, 64),
}

_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- the network
@dataclass
class VAEConfig:
    dim: int  # pixels per item
    hidden: int = 64  # width of every hidden layer
    layers: int = 1  # hidden layers in the encoder and in the decoder
    latent: int = 4  # dimension of z
    min_sigma: float = 0.05  # floor of the decoder's per-pixel standard deviation


def _mlp(sizes: list[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        mods.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(nn.SiLU())
    return nn.Sequential(*mods)


class VAENet(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.encoder = _mlp([c.dim] + [c.hidden] * c.layers + [2 * c.latent])  # -> (mu, log var)
        self.decoder = _mlp([c.latent] + [c.hidden] * c.layers + [c.dim])  # -> pixel means
        self.sigma_raw = nn.Parameter(torch.empty(c.dim))  # per-pixel decoder scale

    def init_weights(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear init (U(+-1/sqrt(fan_in))), drawn from ``generator``."""
        with torch.no_grad():
            for mod in self.modules():
                if isinstance(mod, nn.Linear):
                    init_linear(mod, generator)
            self.sigma_raw.fill_(math.log(0.3))  # sigma starts at min_sigma + 0.3

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.encoder(x).chunk(2, dim=-1)  # (B, latent) each
        return mu, log_var.clamp(-12.0, 8.0)

    def sigma(self) -> torch.Tensor:
        floor = self.config.min_sigma
        return floor + torch.exp(self.sigma_raw)  # (dim,)

    def log_px_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log N(x; decoder(z), sigma^2), summed over pixels: x (B, D), z (..., B, latent)."""
        sigma = self.sigma()
        r = (x - self.decoder(z)) / sigma
        return -0.5 * (r * r).sum(-1) - torch.log(sigma).sum() - 0.5 * x.size(-1) * _LOG_2PI

    def elbo(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Single-sample ELBO per item (B,) with the reparameterised noise eps (B, latent)."""
        mu, log_var = self.encode(x)
        z = mu + torch.exp(0.5 * log_var) * eps
        kl = 0.5 * (mu * mu + log_var.exp() - 1.0 - log_var).sum(-1)  # KL(q(z|x) || N(0, I))
        return self.log_px_z(x, z) - kl

    def iw_bound(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Importance-weighted bound per item (B,) from K draws eps (K, B, latent)."""
        mu, log_var = self.encode(x)
        std = torch.exp(0.5 * log_var)
        z = mu + std * eps  # (K, B, latent)
        log_q = (-0.5 * eps * eps - torch.log(std) - 0.5 * _LOG_2PI).sum(-1)  # (K, B)
        log_prior = (-0.5 * z * z - 0.5 * _LOG_2PI).sum(-1)
        log_w = self.log_px_z(x, z) + log_prior - log_q
        return torch.logsumexp(log_w, dim=0) - math.log(eps.size(0))


# --------------------------------------------------------------------------- the Model
@dataclass
class VAETrainConfig(TrainConfig):
    """The shared budget and optimiser (``TrainConfig``'s defaults), and the bound's K."""

    iw_samples: int = 8
    """K of the importance-weighted bound that ``log_prob`` returns (1 = the ELBO)."""


class VAEModel:
    """MLP VAE over flattened images; see the module docstring for the conventions."""

    def __init__(self, *, dim: int, size: str | None = "xs", hidden: int | None = None,
                 layers: int | None = None, latent: int | None = None, min_sigma: float = 0.05,
                 train: VAETrainConfig | None = None, device: str | None = None,
                 seed: int = 0) -> None:
        if size is not None and size not in SIZES:
            raise ValueError(f"size: {size!r} (allowed: {', '.join(SIZES)})")
        base = SIZES[size] if size is not None else (None, None, None)
        dims = [v if v is not None else b for v, b in zip((hidden, layers, latent), base, strict=True)]
        if any(d is None for d in dims):
            raise ValueError("give size, or all of hidden, layers and latent")
        if dim < 1 or min(dims) < 1 or min_sigma <= 0:
            raise ValueError(f"need dim, hidden, layers, latent >= 1 and min_sigma > 0, got "
                             f"{dim}, {dims}, {min_sigma}")
        self.config = VAEConfig(dim, *dims, min_sigma=min_sigma)
        self.train_config = train or VAETrainConfig()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        with torch.device("meta"):  # no default init, no global RNG use: reset() initialises
            net = VAENet(self.config)
        self.net = net.to_empty(device=self.device)
        self.temperature = 1.0  # prior variance scale when sampling
        self.top_p = 1.0  # unused (continuous items); kept for the sampling-knob interface
        self.top_k = 0  # unused (no tokens)
        self._fit = FitRecord()
        self.reset(np.random.default_rng(seed))

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def _macs(self, module: nn.Module) -> int:
        return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))

    def _generator(self, rng: np.random.Generator) -> torch.Generator:
        return torch_generator(rng, self.device)

    def _tensor(self, data: np.ndarray) -> torch.Tensor:
        return image_rows(data, self.config.dim, self.device)

    # ---- the protocol
    def reset(self, rng: np.random.Generator) -> None:
        """Re-initialise every weight from ``rng`` (training from scratch)."""
        self.net.init_weights(self._generator(rng))

    def fit(self, data: np.ndarray, rng: np.random.Generator) -> None:
        """Train from the current weights (warm start); the caller resets for scratch."""
        tc = self.train_config
        x = self._tensor(data)
        gen = self._generator(rng)

        def neg_elbo(idx: torch.Tensor) -> torch.Tensor:
            eps = torch.randn(len(idx), self.config.latent, generator=gen, device=self.device)
            return -self.net.elbo(x[idx], eps).mean()

        self._fit = train_minibatches(self.net, len(x), neg_elbo, tc, gen=gen)

    @torch.no_grad()
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n items (n, dim) float32: z ~ N(0, temperature I), x ~ N(decoder(z), sigma^2)."""
        gen = self._generator(rng)
        self.net.eval()
        c = self.config
        out = []
        for start in range(0, n, self.train_config.eval_batch_size):
            b = min(self.train_config.eval_batch_size, n - start)
            z = torch.randn(b, c.latent, generator=gen, device=self.device) * math.sqrt(self.temperature)
            noise = torch.randn(b, c.dim, generator=gen, device=self.device)
            out.append(self.net.decoder(z) + self.net.sigma() * noise)
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, c.dim), np.float32)

    @torch.no_grad()
    def log_prob(self, data: np.ndarray) -> np.ndarray:
        """A lower bound on log p(x) per item (nats): the K-sample importance-weighted bound
        (K = ``iw_samples``; the ELBO for K = 1). Its noise comes from a fixed seed, so the
        same items always get the same scores."""
        x = self._tensor(data)
        self.net.eval()
        gen = torch.Generator(device=self.device).manual_seed(0)
        k = self.train_config.iw_samples
        out = []
        for chunk in x.split(self.train_config.eval_batch_size):
            eps = torch.randn(k, len(chunk), self.config.latent, generator=gen, device=self.device)
            out.append(self.net.iw_bound(chunk, eps))
        return torch.cat(out).double().cpu().numpy()

    def sample_log_prob(self, data: np.ndarray) -> np.ndarray:
        """The bound under the sampling distribution: the prior scaled by the temperature."""
        if self.temperature != 1.0:
            raise ValueError("the VAE's sampling density at temperature != 1 has no bound here; "
                             "sample with temperature 1 to score by it")
        return self.log_prob(data)

    def item_size(self, data: np.ndarray) -> None:
        """Every image is one unit: NLLs are per image."""
        return None

    def flops(self, op: str, n_items: int) -> float:
        """FLOPs: 2 per multiply-add of the Linear layers (activations and the loss are
        negligible). ``fit``: 6 x (encoder + decoder MACs) per item processed, all epochs
        (the last fit's rows per item, scaled to ``n_items``; before any fit, ``epochs``);
        ``sample``: 2 x decoder MACs per item; ``score``: 2 x (encoder + K decoder) MACs.
        """
        enc, dec = self._macs(self.net.encoder), self._macs(self.net.decoder)
        if op == "fit":
            return 6.0 * (enc + dec) * self._fit.passes(self.train_config.epochs) * n_items
        if op == "sample":
            return 2.0 * dec * n_items
        if op == "score":
            return 2.0 * (enc + self.train_config.iw_samples * dec) * n_items
        raise ValueError(f"op: {op!r} (allowed: fit, sample, score)")

    @torch.no_grad()
    def summary(self) -> dict[str, float]:
        f = self._fit
        return {"n_params": float(self.n_params), "train_loss": f.train_loss,
                "steps": float(f.steps), "decoder_sigma": float(self.net.sigma().mean())}

    def state_dict(self) -> dict[str, Any]:
        """Weights (CPU tensors) and the last fit's counts; loadable with weights_only."""
        return {"weights": cpu_weights(self.net), **self._fit.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict({k: v.to(self.device) for k, v in state["weights"].items()})
        self._fit = FitRecord.from_state(state)
