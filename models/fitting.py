"""The minibatch training loop the image families (vae, diffusion) share.

One fit = ``steps`` Adam steps (or ``ceil(epochs x batches per epoch)``) over a fresh shuffle
of the training rows each epoch, the learning rate on a cosine from ``lr`` down to ``lr / 10``,
gradient-norm clipping. Every random draw comes from the one ``torch.Generator`` passed in, in
a fixed order per step: the epoch's shuffle when one starts, then whatever the family's
``loss`` draws; so a fixed seed gives the same weights whichever family calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from models.base import check_items


@dataclass
class TrainConfig:
    """The budget and optimiser of one fit (each family subclasses it with its defaults)."""

    lr: float = 3e-3
    """Adam peak learning rate (cosine decay to lr / 10)."""
    batch_size: int = 64
    """Items per optimisation step."""
    epochs: float = 40.0
    """Budget: passes over this generation's training set, so accumulated data costs compute."""
    steps: int | None = None
    """If set, train for exactly this many steps instead of ``epochs``."""
    grad_clip: float = 5.0
    """Gradient norm clip (0 disables)."""
    eval_batch_size: int = 512
    """Items per batch when scoring and sampling."""


@dataclass
class FitRecord:
    """What the last fit did (for FLOPs and the logged summary)."""

    items: int = 0  # rows in the last fit's training set
    processed: int = 0  # rows processed by the optimiser, all epochs
    steps: int = 0
    train_loss: float = float("nan")  # last step's loss

    def state(self) -> dict[str, int]:
        """The counts a checkpoint keeps (FLOPs of a restored model need them)."""
        return {"fit_items": self.items, "fit_processed": self.processed}

    @classmethod
    def from_state(cls, state: dict) -> FitRecord:
        return cls(items=int(state.get("fit_items", 0)), processed=int(state.get("fit_processed", 0)))

    def passes(self, default: float) -> float:
        """Rows processed per training row (``default`` before any fit)."""
        return self.processed / self.items if self.items else default


def torch_generator(rng: np.random.Generator, device: str) -> torch.Generator:
    """A torch generator seeded from ``rng`` (one draw), so nothing global is seeded."""
    return torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))


@torch.no_grad()
def init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default Linear init, U(+-1/sqrt(fan_in)) for weight then bias, from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    layer.weight.uniform_(-bound, bound, generator=generator)
    layer.bias.uniform_(-bound, bound, generator=generator)


def cpu_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as detached CPU copies (loadable with ``weights_only``)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def image_rows(data: np.ndarray, dim: int, device: str) -> torch.Tensor:
    """Validated float32 tensor (n, dim) of flattened images."""
    x = check_items(data, ndim=2)
    if x.shape[1] != dim:
        raise ValueError(f"items have {x.shape[1]} pixels, the model {dim}")
    if not np.isfinite(x).all():
        raise ValueError("items hold NaN or infinite pixels")
    return torch.as_tensor(x, dtype=torch.float32, device=device)


def train_minibatches(net: nn.Module, n_items: int,
                      loss: Callable[[torch.Tensor], torch.Tensor], config: TrainConfig, *,
                      gen: torch.Generator,
                      after_step: Callable[[int], None] | None = None) -> FitRecord:
    """Train ``net`` from its current weights on ``n_items`` rows as ``config`` says;
    ``loss(idx)`` is the mean loss of the rows ``idx`` (a long tensor), drawing any noise it
    needs from ``gen``; ``after_step(step)`` runs after each optimiser step (e.g. a weight
    average)."""
    device, lr, batch_size = gen.device, config.lr, config.batch_size
    steps, epochs, grad_clip = config.steps, config.epochs, config.grad_clip
    steps_per_epoch = max(1, math.ceil(n_items / batch_size))
    total = steps if steps is not None else max(1, math.ceil(epochs * steps_per_epoch))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    record = FitRecord(items=n_items)
    order = torch.empty(0, dtype=torch.long, device=device)
    net.train()
    value = torch.tensor(float("nan"))
    for step in range(total):
        if len(order) == 0:  # a fresh shuffle each epoch, from the fit's generator
            order = torch.randperm(n_items, generator=gen, device=device)
        idx, order = order[:batch_size], order[batch_size:]
        for g in opt.param_groups:
            g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * step / total)))
        value = loss(idx)
        opt.zero_grad(set_to_none=True)
        value.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        if after_step is not None:
            after_step(step)
        record.processed += len(idx)
        record.steps += 1
    record.train_loss = float(value.detach())
    return record
