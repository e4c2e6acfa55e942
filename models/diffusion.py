"""A small DDPM (Ho et al. 2020) behind the Model protocol.

Items are float images flattened to rows, shape (n, dim), pixels in [0, 1]; inside, pixels
live in [-1, 1]. The network is a residual MLP that predicts the noise epsilon of
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) epsilon from (x_t, t), trained with the "simple"
loss ||epsilon - epsilon_theta(x_t, t)||^2 at t uniform in 1..T. The noise schedule is Ho et
al.'s linear one rescaled to T steps (``linear_alpha_bar``), so a few hundred steps suffice.

Sampling is ancestral. ``sample_steps`` < T respaces the chain (Nichol & Dhariwal, sec. 4):
the model is evaluated at S evenly spaced timesteps with betas recomputed from abar at
those steps, so sampling costs S network passes per item instead of T.

``log_prob`` is the variational bound of Ho et al. eq. (5) on the continuous density of x
in [0, 1]^dim (nats): L_T (closed form) + sum_t KL terms + a Gaussian L_0, with one noise draw
per term from a fixed seed (deterministic scores), all T terms or ``elbo_steps`` of them
(log-spaced, each standing for the terms up to the next). ``denoise_loss`` is the per-item simple loss on given data at fixed
timesteps and noise: the quality metric on held-out real images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from models.fitting import (
    FitRecord,
    TrainConfig,
    cpu_weights,
    image_rows,
    init_linear,
    torch_generator,
    train_minibatches,
)

#: Named sizes (hidden width, residual blocks): parameters for 64-pixel items are about
#: xs 40k, s 0.19M, m 0.7M, l 3.5M, xl 14M.
SIZES: dict[str, tuple[int, int]] = {
    "xs": (64, 2),
    "s": (128, 3),
    "m": (256, 3),
    "l": (512, 4),
    "xl": (1024, 4),
}

_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- the network
@dataclass
class DiffusionConfig:
    dim: int  # pixels per item
    hidden: int = 64  # width of the residual MLP
    blocks: int = 2  # residual blocks
    timesteps: int = 200  # T of the forward process
    time_embd: int = 32  # sinusoidal features of t


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.temb = nn.Linear(width, width)  # time conditioning, added inside the block

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + self.temb(temb)))


class EpsNet(nn.Module):
    """epsilon_theta(x_t, t): x (B, D), t (B,) long -> (B, D)."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.time_mlp = nn.Sequential(nn.Linear(c.time_embd, c.hidden), nn.SiLU(),
                                      nn.Linear(c.hidden, c.hidden))
        self.inp = nn.Linear(c.dim, c.hidden)
        self.blocks = nn.ModuleList([ResBlock(c.hidden) for _ in range(c.blocks)])
        self.out_norm = nn.LayerNorm(c.hidden)
        self.out = nn.Linear(c.hidden, c.dim)

    def init_weights(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear init drawn from ``generator``; the output layer starts at
        zero (the first prediction is epsilon = 0, a stable start)."""
        with torch.no_grad():
            for mod in self.modules():
                if isinstance(mod, nn.Linear):
                    init_linear(mod, generator)
                elif isinstance(mod, nn.LayerNorm):
                    mod.weight.fill_(1.0)
                    mod.bias.zero_()
            self.out.weight.zero_()
            self.out.bias.zero_()

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        half = self.config.time_embd // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None, :]  # (B, half)
        return self.time_mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))  # (B, hidden)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = F.silu(self.embed_time(t))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(F.silu(self.out_norm(h)))


def linear_alpha_bar(timesteps: int) -> torch.Tensor:
    """abar_t for t = 0..T (abar_0 = 1) of Ho et al.'s linear betas, 1e-4 .. 0.02 at T = 1000,
    rescaled by 1000 / T (Nichol & Dhariwal's rescaling), so the last beta stays small: the
    bound's weights beta_t / (1 - beta_t) stay bounded (the cosine schedule's clipped 0.999 at
    t = T would weigh that term 500x)."""
    scale = 1000.0 / timesteps
    betas = torch.linspace(1e-4 * scale, min(0.02 * scale, 0.999), timesteps, dtype=torch.float64)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


# --------------------------------------------------------------------------- the Model
@dataclass
class DiffusionTrainConfig(TrainConfig):
    """The shared budget and optimiser with a DDPM's defaults, the weight average and the
    sampling / scoring steps."""

    lr: float = 2e-3
    batch_size: int = 128
    epochs: float = 100.0
    grad_clip: float = 1.0
    eval_batch_size: int = 1024
    ema: float = 0.995
    """Decay of the exponential moving average of the weights used to sample and score (0 off)."""
    sample_steps: int | None = None
    """Respaced sampling steps S (None: all T)."""
    elbo_steps: int | None = None
    """Terms of the bound that ``log_prob`` evaluates (log-spaced, weighted; None: all T)."""


class DiffusionModel:
    """DDPM over flattened images; see the module docstring for the conventions."""

    def __init__(self, *, dim: int, size: str | None = "xs", hidden: int | None = None,
                 blocks: int | None = None, timesteps: int = 200,
                 train: DiffusionTrainConfig | None = None, device: str | None = None,
                 seed: int = 0) -> None:
        if size is not None and size not in SIZES:
            raise ValueError(f"size: {size!r} (allowed: {', '.join(SIZES)})")
        base = SIZES[size] if size is not None else (None, None)
        dims = [v if v is not None else b for v, b in zip((hidden, blocks), base, strict=True)]
        if any(d is None for d in dims):
            raise ValueError("give size, or both hidden and blocks")
        if dim < 1 or min(dims) < 1 or timesteps < 2:
            raise ValueError(f"need dim, hidden, blocks >= 1 and timesteps >= 2, got {dim}, {dims}, {timesteps}")
        self.config = DiffusionConfig(dim, *dims, timesteps=timesteps)
        self.train_config = tc = train or DiffusionTrainConfig()
        for name, low in (("sample_steps", 1), ("elbo_steps", 2)):
            v = getattr(tc, name)
            if v is not None and not low <= v <= timesteps:
                raise ValueError(f"{name} must lie in [{low}, timesteps={timesteps}], got {v}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        with torch.device("meta"):
            net, ema = EpsNet(self.config), EpsNet(self.config)
        self.net = net.to_empty(device=self.device)
        self.ema = ema.to_empty(device=self.device)  # the weights that sample and score
        self.abar = linear_alpha_bar(timesteps).to(self.device)  # float64, (T + 1,)
        self.temperature = 1.0  # scales the sampling noise
        self.top_p = 1.0  # unused (continuous items)
        self.top_k = 0  # unused (no tokens)
        self._fit = FitRecord()
        self.reset(np.random.default_rng(seed))

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    @property
    def macs(self) -> int:
        """Multiply-adds of one network pass on one item (Linear layers)."""
        return sum(m.weight.numel() for m in self.net.modules() if isinstance(m, nn.Linear))

    def _generator(self, rng: np.random.Generator) -> torch.Generator:
        return torch_generator(rng, self.device)

    def _tensor(self, data: np.ndarray) -> torch.Tensor:
        return image_rows(data, self.config.dim, self.device) * 2.0 - 1.0

    def _noisy(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].float()[:, None]
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    # ---- the protocol
    def reset(self, rng: np.random.Generator) -> None:
        """Re-initialise every weight from ``rng`` (training from scratch)."""
        self.net.init_weights(self._generator(rng))
        self.ema.load_state_dict(self.net.state_dict())

    def fit(self, data: np.ndarray, rng: np.random.Generator) -> None:
        """Train from the current weights (warm start); the caller resets for scratch."""
        tc, T = self.train_config, self.config.timesteps
        x = self._tensor(data)
        gen = self._generator(rng)
        self.ema.load_state_dict(self.net.state_dict())

        def simple_loss(idx: torch.Tensor) -> torch.Tensor:
            t = torch.randint(1, T + 1, (len(idx),), generator=gen, device=self.device)
            eps = torch.randn(len(idx), self.config.dim, generator=gen, device=self.device)
            return F.mse_loss(self.net(self._noisy(x[idx], t, eps), t), eps)

        self._fit = train_minibatches(self.net, len(x), simple_loss, tc, gen=gen,
                                      after_step=self._update_ema)

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        # Warm-up of the decay ((1 + step) / (10 + step) until it reaches ``ema``), so a
        # short fit's average is not dominated by its first, untrained weights.
        d = min(self.train_config.ema, (1 + step) / (10 + step))
        for pe, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
            pe.lerp_(p, 1.0 - d) if d > 0 else pe.copy_(p)

    def _schedule(self, steps: int) -> list[int]:
        """Respaced timesteps T = t_S > ... > t_1 >= 1, evenly spaced."""
        T = self.config.timesteps
        return sorted({int(round(v)) for v in np.linspace(1, T, steps)}, reverse=True)

    @torch.no_grad()
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n images (n, dim) float32 in [0, 1] by ancestral sampling over ``sample_steps``."""
        gen = self._generator(rng)
        self.ema.eval()
        sched = self._schedule(self.train_config.sample_steps or self.config.timesteps)
        temp = math.sqrt(self.temperature)
        out = []
        for start in range(0, n, self.train_config.eval_batch_size):
            b = min(self.train_config.eval_batch_size, n - start)
            x = torch.randn(b, self.config.dim, generator=gen, device=self.device) * temp
            for i, t in enumerate(sched):
                t_prev = sched[i + 1] if i + 1 < len(sched) else 0
                a_t, a_prev = self.abar[t].item(), self.abar[t_prev].item()
                beta = 1 - a_t / a_prev  # the respaced step's beta
                eps = self.ema(x, torch.full((b,), t, device=self.device))
                x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
                # Posterior q(x_{t'} | x_t, x0) mean and variance (Ho et al. eq. 7).
                mean = (math.sqrt(a_prev) * beta / (1 - a_t)) * x0 + \
                       (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)) * x
                if t_prev > 0:
                    var = beta * (1 - a_prev) / (1 - a_t)
                    noise = torch.randn(b, self.config.dim, generator=gen, device=self.device)
                    x = mean + math.sqrt(var) * temp * noise
                else:
                    x = mean
            out.append((x + 1) / 2)
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.config.dim), np.float32)

    def _elbo_schedule(self) -> tuple[list[int], list[int]]:
        """Timesteps of the bound's terms and how many of the T terms each stands for.

        All T by default. With ``elbo_steps`` = k < T: t = 1 (L_0) and k - 1 log-spaced KL
        terms, each weighted by the gap to the next, a Riemann sum dense at small t, where
        the terms are largest (the posterior variance at t = 2 is tiny, its weight ~ 2.5x
        the others on the digits)."""
        T, k = self.config.timesteps, self.train_config.elbo_steps
        if k is None or k >= T:
            return list(range(1, T + 1)), [1] * T
        kl = sorted({int(v) for v in np.round(np.geomspace(2, T, k - 1))})
        weights = np.diff([*kl, T + 1]).tolist()
        return [1, *kl], [1, *weights]

    def _terms(self, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Negative variational bound per item (B,) in nats, for x0 in [-1, 1]."""
        T, D = self.config.timesteps, self.config.dim
        abar = self.abar
        # L_T = KL(q(x_T | x0) || N(0, I)).
        aT = abar[T]
        mu_T = aT.sqrt() * x0.double()
        total = 0.5 * ((mu_T ** 2).sum(-1) + D * ((1 - aT) - 1 - torch.log(1 - aT)))
        ts, weights = self._elbo_schedule()
        for t, weight in zip(ts, weights, strict=True):
            tt = torch.full((len(x0),), t, device=self.device)
            eps = torch.randn(x0.shape, generator=gen, device=self.device)
            a_t, a_prev = abar[t], abar[t - 1]
            beta = 1 - a_t / a_prev
            eps_hat = self.ema(self._noisy(x0, tt, eps), tt)
            err = ((eps - eps_hat).double() ** 2).sum(-1)
            if t > 1:  # KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)), both with variance beta~_t
                var = beta * (1 - a_prev) / (1 - a_t)
                total = total + weight * beta ** 2 / (2 * var * (1 - beta) * (1 - a_t)) * err
            else:  # L_0: -log N(x0; mu_theta(x_1, 1), beta_1)
                total = total + (0.5 * err * (1 - a_t) / a_t / beta
                                 + 0.5 * D * torch.log(2 * math.pi * beta))
        return total

    @torch.no_grad()
    def log_prob(self, data: np.ndarray) -> np.ndarray:
        """The variational lower bound on log p(x) per item (nats, density on [0, 1]^dim)."""
        x = self._tensor(data)
        self.ema.eval()
        gen = torch.Generator(device=self.device).manual_seed(0)
        out = [-self._terms(chunk, gen) for chunk in x.split(self.train_config.eval_batch_size)]
        # x in [0, 1] maps to 2x - 1: the density on [0, 1] is 2^dim times that on [-1, 1].
        return (torch.cat(out) + self.config.dim * math.log(2.0)).cpu().numpy()

    def sample_log_prob(self, data: np.ndarray) -> np.ndarray:
        if self.temperature != 1.0 or self.train_config.sample_steps not in (None, self.config.timesteps):
            raise ValueError("the diffusion bound describes T-step sampling at temperature 1; "
                             "respaced or tempered sampling has no bound here")
        return self.log_prob(data)

    @torch.no_grad()
    def denoise_loss(self, data: np.ndarray, *, draws: int = 4) -> np.ndarray:
        """Per item: mean ||eps - eps_theta(x_t, t)||^2 / dim over ``draws`` (t, eps) pairs
        with t uniform in 1..T, from a fixed seed (the same for every model)."""
        x = self._tensor(data)
        self.ema.eval()
        gen = torch.Generator(device=self.device).manual_seed(1)
        T = self.config.timesteps
        out = []
        for chunk in x.split(self.train_config.eval_batch_size):
            acc = torch.zeros(len(chunk), device=self.device)
            for _ in range(draws):
                t = torch.randint(1, T + 1, (len(chunk),), generator=gen, device=self.device)
                eps = torch.randn(chunk.shape, generator=gen, device=self.device)
                acc += ((self.ema(self._noisy(chunk, t, eps), t) - eps) ** 2).mean(-1)
            out.append(acc / draws)
        return torch.cat(out).double().cpu().numpy()

    def item_size(self, data: np.ndarray) -> None:
        """Every image is one unit: NLLs are per image."""
        return None

    def flops(self, op: str, n_items: int) -> float:
        """FLOPs, 2 per multiply-add of the Linear layers (M = ``macs`` per pass).
        ``fit``: 6 M per item processed, all epochs (the last fit's rows per item scaled to
        ``n_items``; before any fit, ``epochs``); ``sample``: 2 M x S steps per item;
        ``score``: 2 M x the bound's evaluated terms (T, or at most ``elbo_steps``) per item."""
        tc, T = self.train_config, self.config.timesteps
        if op == "fit":
            return 6.0 * self.macs * self._fit.passes(tc.epochs) * n_items
        if op == "sample":
            return 2.0 * self.macs * len(self._schedule(tc.sample_steps or T)) * n_items
        if op == "score":
            return 2.0 * self.macs * len(self._elbo_schedule()[0]) * n_items
        raise ValueError(f"op: {op!r} (allowed: fit, sample, score)")

    def summary(self) -> dict[str, float]:
        f = self._fit
        return {"n_params": float(self.n_params), "train_loss": f.train_loss, "steps": float(f.steps)}

    def state_dict(self) -> dict[str, Any]:
        """Weights and EMA weights (CPU tensors) and fit counts; loadable with weights_only."""
        return {"weights": cpu_weights(self.net), "ema": cpu_weights(self.ema), **self._fit.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict({k: v.to(self.device) for k, v in state["weights"].items()})
        self.ema.load_state_dict({k: v.to(self.device) for k, v in state["ema"].items()})
        self._fit = FitRecord.from_state(state)
