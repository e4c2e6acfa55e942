"""The language-model family (gpt) and its data sources (truth-lm, local text).

One ``Family`` record (``GPT``) and two ``DataSource`` records, registered like any user's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
from pydantic import Field, create_model

from models.base import Model
from models.gpt_settings import SIZES, GPTTrainConfig
from models.tokens import counted_mask
from sweep.config import ChainConfig, ConfigError, FamilyConfig, Section, SourceConfig
from sweep.problems.lm_metrics import lm_sample_metrics, rare_ngram_mask, reference_metrics
from sweep.problems.problem import Problem, TokenSpace, token_tail_mask
from sweep.problems.registry import DataSource, Family, register_family, register_source
from sweep.problems.sources import TextCorpus, TruthLanguage

#: Default samples_per_generation of a language model (the analytic default is 100).
LM_SAMPLES = 1000
#: Samples drawn from each language model for sample-based metrics (not counted as compute):
#: enough that minority_share (5% of rows) has a standard error of ~0.005.
LM_EVAL_SAMPLES = 2000


# --------------------------------------------------------------------------- data sources
class TruthLMData(SourceConfig):
    """A synthetic language with exactly computable probabilities (two dialects)."""

    source: str = "truth-lm"
    vocab_size: int = Field(32, ge=4, le=4096, description="Tokens, EOS (id 0) included.")
    max_len: int = Field(24, ge=2, le=1024, description="Longest sequence, in tokens.")
    minority_share: float = Field(
        0.05, gt=0, lt=1, description="Share of sequences from the minority dialect."
    )
    branching: int = Field(4, ge=1, description="Allowed next tokens per state (sparsity).")
    language_seed: int = Field(1234, description="Seed that builds the language itself.")
    test_size: int = Field(500, ge=10, description="Held-out real sequences for evaluation.")

    def row_length(self) -> int:
        return self.max_len


class TextData(SourceConfig):
    """Local text (file, directory or glob), byte-level, in fixed-length blocks."""

    source: str = "text"
    path: str = Field(
        "builtin:tales", description="File, directory or glob; 'builtin:tales' is the shipped corpus."
    )
    block_size: int = Field(64, ge=2, le=4096, description="Bytes per training block.")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="Documents held out for testing.")
    test_size: int = Field(1000, ge=10, description="Most held-out blocks used for evaluation.")

    def row_length(self) -> int:
        return self.block_size




def _truth_lm_problem(config: ChainConfig, rng: np.random.Generator) -> Problem:
    data = config.data
    assert isinstance(data, TruthLMData)
    n = config.recursion.samples_per_generation
    try:
        truth = TruthLanguage(vocab_size=data.vocab_size, max_len=data.max_len,
                              minority_share=data.minority_share, branching=data.branching,
                              seed=data.language_seed)
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from None
    real_train = truth.sample(n, rng)
    test, dialect = truth.sample_with_dialect(data.test_size, rng)
    token_lp = truth.token_log_prob(test)
    # The tail: held-out *tokens* the truth finds least likely given their prefix (rare
    # transitions, the minority dialect's own), so sequence length does not decide.
    tail = token_tail_mask(token_lp, counted_mask(test))
    reference = reference_metrics(truth.sample(LM_EVAL_SAMPLES, rng), truth)
    return Problem(real_train=real_train, test=test, tail_mask=tail,
                   draw_real=truth.sample, truth=truth, truth_test_log_prob=token_lp.sum(axis=1),
                   tokens=TokenSpace(vocab_size=truth.vocab_size, block_size=truth.max_len),
                   tail_kind="held-out tokens with the lowest truth probability given their "
                   "prefix (bottom decile)",
                   test_groups={"minority": dialect.astype(bool)}, reference=reference)


def _text_problem(config: ChainConfig, rng: np.random.Generator) -> Problem:
    data = config.data
    assert isinstance(data, TextData)
    try:
        corpus = TextCorpus(data.path, block_size=data.block_size,
                            test_fraction=data.test_fraction, seed=0)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"data.path: {exc}") from None
    train_blocks = corpus.train_blocks()
    if len(train_blocks) < 2:
        raise ConfigError(f"data.path: only {len(train_blocks)} training block(s) of "
                          f"{data.block_size} bytes; use a larger corpus or a smaller block_size")
    test = corpus.test_blocks()
    if len(test) > data.test_size:
        test = test[np.sort(rng.choice(len(test), size=data.test_size, replace=False))]
    real_train = corpus.sample_real(config.recursion.samples_per_generation, rng)
    reference = reference_metrics(corpus.sample_real(LM_EVAL_SAMPLES, rng))
    return Problem(real_train=real_train, test=test,
                   tail_mask=rare_ngram_mask(test, train_blocks),
                   draw_real=corpus.sample_real, truth=None,
                   tokens=TokenSpace(vocab_size=corpus.vocab_size, block_size=data.block_size),
                   tail_kind="held-out blocks built from the rarest training 4-grams (bottom "
                   "decile)", reference=reference)


TRUTH_LM = register_source(DataSource(
    name="truth-lm", config=TruthLMData, problem=_truth_lm_problem,
    metrics=("minority_share", "kl", "minority_nll", "minority_kl"), kl=True))
TEXT = register_source(DataSource(
    name="text", config=TextData, problem=_text_problem, has_truth=False, byte_level=True))


# --------------------------------------------------------------------------- the gpt family
def _train_section() -> type[Section]:
    """``model.train``: generated from ``models.gpt_settings.GPTTrainConfig`` (names, types,
    defaults, meanings and bounds have that one home)."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(GPTTrainConfig):
        meta = dict(f.metadata)
        fields[f.name] = (f.type, Field(f.default, description=meta.pop("doc"), **meta))
    return create_model("GPTTrain", __base__=Section, __doc__=GPTTrainConfig.__doc__, **fields)


GPTTrain = _train_section()


class GPTModelCfg(FamilyConfig):
    """A small decoder-only transformer (models/gpt.py)."""

    family: str = "gpt"
    size: Literal[tuple(SIZES)] = Field(  # type: ignore[valid-type]
        "xs", description="Named size, xs (~50k params) ... xl (~20M); overridden by n_* below."
    )
    n_layer: int | None = Field(None, ge=1, description="Explicit number of layers.")
    n_head: int | None = Field(None, ge=1, description="Explicit number of attention heads.")
    n_embd: int | None = Field(None, ge=8, description="Explicit embedding width.")
    train: GPTTrain = Field(default_factory=GPTTrain, description="Training per generation.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses the GPU Ray assigned (cuda) when present, else cpu."
    )


def build_gpt(m: GPTModelCfg, problem: Problem, rng: np.random.Generator) -> Model:
    from models.gpt import GPTModel

    if problem.tokens is None:
        raise ConfigError("model.family: gpt learns token rows; use data.source truth-lm | text")
    train = GPTTrainConfig(**m.train.model_dump())
    try:
        return GPTModel(vocab_size=problem.tokens.vocab_size, block_size=problem.tokens.block_size,
                        size=m.size, n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd,
                        train=train, device=None if m.device == "auto" else m.device,
                        seed=int(rng.integers(2**31 - 1)))
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None


def _gpt_sample_metrics(model: Model, problem: Problem, rng: np.random.Generator
                        ) -> tuple[dict[str, float], np.ndarray]:
    samples = model.sample(LM_EVAL_SAMPLES, rng)
    return {**lm_sample_metrics(samples, problem.truth), **problem.reference}, samples


GPT = register_family(Family(
    name="gpt", config=GPTModelCfg, title="GPT", build=build_gpt,
    sample_metrics=_gpt_sample_metrics, sources=("truth-lm", "text"), tokens=True,
    samples_per_generation=LM_SAMPLES, size_axes=("size", "n_layer", "n_embd")))
