"""A trial's device is the one Ray assigned it, not whatever GPU the node happens to have.

:func:`place_trial` runs at the start of a trial, before torch touches CUDA:

- ``resources.gpu == 0``: Ray 2.60 leaves every GPU of the node visible to such a trial,
  so it hides them (``CUDA_VISIBLE_DEVICES=""``) and the model runs on the CPU; a config
  that asks for ``model.device: cuda`` without a GPU is an error.
- ``resources.gpu > 0``: Ray has set ``CUDA_VISIBLE_DEVICES`` to the assigned GPU(s)
  (``ray.get_gpu_ids()``); the model runs on ``cuda`` (the first of them). A torch
  without CUDA, or one that cannot reach the GPU, fails the trial with one line instead
  of falling back to the CPU. A fractional share (``gpu: 0.25``) caps the process's CUDA
  memory at that fraction of the GPU (``torch.cuda.set_per_process_memory_fraction``),
  so that trials sharing a GPU cannot starve each other.

``model.device: auto`` therefore means "what Ray assigned", never
``torch.cuda.is_available()``, inside a trial.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from sweep.config import ChainConfig


class DeviceError(RuntimeError):
    """The trial's resources and its torch / model.device cannot work together (one line)."""


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    gpu_ids: tuple[str, ...]  # what Ray assigned (() for none; ("?",) outside Ray)
    share: float  # resources.gpu
    memory_fraction: float | None  # the CUDA memory cap set, if any
    hidden: bool  # CUDA_VISIBLE_DEVICES was set to "" by this call

    def describe(self) -> str:
        if self.device == "cpu":
            return "cpu" + (" (GPUs hidden)" if self.hidden else "")
        cap = f", {self.memory_fraction:.0%} of its memory" if self.memory_fraction else ""
        return f"cuda (GPU {','.join(self.gpu_ids)}, share {self.share:g}{cap})"


def assigned_gpu_ids() -> list[str] | None:
    """GPU ids Ray assigned to the calling task or actor; None outside a Ray worker."""
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return None
    if not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    # The driver holds no GPU; it is told apart by its mode, since asking it for a task id
    # logs a WARNING (run_trial runs in a driver in tests and benchmarks)
    if getattr(getattr(ctx, "worker", None), "mode", None) != ray.WORKER_MODE or (
            ctx.get_task_id() is None):
        return None
    return [str(i) for i in ray.get_gpu_ids()]


def gpu_share(config: ChainConfig) -> float:
    """resources.gpu of a sweep config (0 when not set)."""
    return float((config.resources or {}).get("gpu", 0) or 0)


def place_trial(config: ChainConfig, *, gpus: float, assigned: list[str] | None,
                hide: bool | None = None) -> tuple[ChainConfig, Placement]:
    """The trial's config with ``model.device`` resolved, and what was decided.

    ``assigned``: :func:`assigned_gpu_ids` (None outside Ray). ``hide``: set
    ``CUDA_VISIBLE_DEVICES=""`` for a trial without GPUs (default: inside Ray only, so that
    calling this in a test or a notebook leaves the process alone). torch is imported only
    to place a model on a GPU: a trial of a numpy family never loads it.
    """
    wanted = getattr(config.model, "device", None)  # None: a family without a device
    if gpus <= 0:
        if wanted == "cuda":
            raise DeviceError("model.device is 'cuda' but resources.gpu is 0: this trial "
                              "has no GPU (set resources.gpu, e.g. 1 or 0.25)")
        hidden = False
        torch = sys.modules.get("torch")  # not imported yet: CUDA cannot have started
        cuda_started = torch is not None and torch.cuda.is_initialized()
        if (assigned is not None if hide is None else hide) and not cuda_started:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
            hidden = True
        placement = Placement("cpu", tuple(assigned or ()), 0.0, None, hidden)
        return _with_device(config, "cpu"), placement

    if assigned is not None and not assigned:
        raise DeviceError(f"resources.gpu is {gpus:g} but Ray assigned this trial no GPU")
    ids = tuple(assigned) if assigned is not None else ("?",)
    if wanted in (None, "cpu"):  # a numpy family, or cpu asked for: the share goes unused
        return config, Placement("cpu", ids, gpus, None, False)
    import torch

    if torch.version.cuda is None:
        raise DeviceError(f"resources.gpu is {gpus:g} but torch {torch.__version__} on this "
                          "node is a CPU-only build: install the CUDA build (PyPI's "
                          "torch wheel for Linux x86_64) or set resources.gpu: 0")
    if not torch.cuda.is_available():
        raise DeviceError(f"resources.gpu is {gpus:g} (GPU {','.join(ids)}) but torch "
                          f"{torch.__version__} cannot use CUDA {torch.version.cuda} here "
                          "(no driver, or one too old for it)")
    fraction = None
    if gpus < 1:
        fraction = float(gpus)
        torch.cuda.set_per_process_memory_fraction(fraction, 0)
    return _with_device(config, "cuda"), Placement("cuda", ids, gpus, fraction, False)


def _with_device(config: ChainConfig, device: str) -> ChainConfig:
    if getattr(config.model, "device", None) is None:
        return config
    return config.model_copy(update={"model": config.model.model_copy(update={"device": device})})
