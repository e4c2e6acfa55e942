"""The ``hf`` family: any causal LM of Hugging Face ``transformers`` by local path, on the
byte-level ``text`` source the gpt family uses (so the two share data, curation and judges)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from pydantic import Field

from models.base import Model
from sweep.config import ConfigError, FamilyConfig, Section
from sweep.problems.lm_metrics import lm_sample_metrics
from sweep.problems.problem import Problem
from sweep.problems.registry import Family, register_family

#: Samples drawn from the LM each generation for sample-based metrics (not counted as compute).
HF_EVAL_SAMPLES = 128


class HFTrain(Section):
    """How a Hugging Face causal LM is fine-tuned each generation."""

    lr: float = Field(5e-4, gt=0, description="AdamW peak learning rate (cosine decay to lr / 10).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(16, ge=1, description="Rows per optimisation step.")
    epochs: float = Field(1.0, gt=0, description="Budget: passes over this generation's training set.")
    steps: int | None = Field(
        None, ge=1, description="If set, exactly this many optimisation steps instead of `epochs`."
    )
    grad_clip: float = Field(1.0, ge=0, description="Gradient norm clip (0 disables).")


class HFModelCfg(FamilyConfig):
    """Any causal LM of `transformers` with its own tokenizer, on byte-level text (models/hf.py).
    `recursion.init: base` fine-tunes the checkpoint every generation."""

    family: str = "hf"
    path: str = Field(
        description="Local checkpoint directory (config, weights, tokenizer); the size axis is "
        "a choice of paths. A hub name works where the network is, with local_only false."
    )
    local_only: bool = Field(
        True, description="Never download: load `path` from disk (or the local HF cache) only."
    )
    train: HFTrain = Field(default_factory=HFTrain, description="Fine-tuning per generation.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses the GPU Ray assigned (cuda) when present, else cpu."
    )


def build_hf(m: HFModelCfg, problem: Problem, rng: np.random.Generator) -> Model:
    from models.hf import HFModel, HFTrainConfig

    if problem.tokens is None or problem.tokens.vocab_size != 256:
        raise ConfigError("model.family: hf learns byte-level text; use data.source text")
    fields = {f.name for f in dataclasses.fields(HFTrainConfig)}
    train = HFTrainConfig(**{k: v for k, v in m.train.model_dump().items() if k in fields})
    try:
        return HFModel(m.path, block_size=problem.tokens.block_size, train=train,
                       device=None if m.device == "auto" else m.device, local_only=m.local_only,
                       seed=int(rng.integers(2**31 - 1)))
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"model.path: {exc}") from None


def _hf_sample_metrics(model: Model, problem: Problem, rng: np.random.Generator
                       ) -> tuple[dict[str, float], np.ndarray]:
    samples = model.sample(HF_EVAL_SAMPLES, rng)
    return lm_sample_metrics(samples, problem.truth), samples


def _reload_checkpoint(model: Model) -> None:
    model.load_pretrained()  # type: ignore[attr-defined]


HF = register_family(Family(
    name="hf", config=HFModelCfg, title="HF causal LM", build=build_hf,
    sample_metrics=_hf_sample_metrics, sources=("text",), size_axes=("path",),
    default_init="base", reload_base=_reload_checkpoint))
