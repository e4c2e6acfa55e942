"""The language-model problem: truth-lm or local text as real data, a GPT as the model."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sweep.config import ChainConfig, ConfigError


def build_lm_problem(config: ChainConfig, rng: np.random.Generator):
    from sweep.problems.problem import Problem, tail_mask
    from sweep.problems.sources import TextCorpus, TruthLanguage

    data = config.data
    n = config.recursion.samples_per_generation
    if data.source == "truth-lm":
        try:
            truth = TruthLanguage(vocab_size=data.vocab_size, max_len=data.max_len,
                                  minority_share=data.minority_share, branching=data.branching,
                                  seed=data.language_seed)
        except ValueError as exc:
            raise ConfigError(f"data: {exc}") from None
        real_train = truth.sample(n, rng)
        test = truth.sample(data.test_size, rng)
        truth_lp = truth.log_prob(test)
        # The tail: held-out sequences the truth finds least likely per token (rare dialect,
        # rare transitions), so length alone does not decide.
        per_token = truth_lp / np.maximum(truth.item_size(test), 1)
        return Problem(real_train=real_train, test=test, tail_mask=tail_mask(per_token),
                       draw_real=truth.sample, truth=truth, truth_test_log_prob=truth_lp,
                       extras={"vocab_size": truth.vocab_size, "block_size": truth.max_len})
    from sweep.problems.lm_metrics import rare_ngram_mask

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
    real_train = corpus.sample_real(n, rng)
    return Problem(real_train=real_train, test=test,
                   tail_mask=rare_ngram_mask(test, train_blocks),
                   draw_real=corpus.sample_real, truth=None,
                   extras={"vocab_size": corpus.vocab_size, "block_size": data.block_size,
                           "corpus": corpus})


def build_gpt(config: ChainConfig, problem: Any, rng: np.random.Generator):
    from models.gpt import GPTModel, GPTTrainConfig

    m = config.model
    fields = {f.name for f in dataclasses.fields(GPTTrainConfig)}
    train = GPTTrainConfig(**{k: v for k, v in m.train.model_dump().items() if k in fields})
    try:
        return GPTModel(vocab_size=problem.extras["vocab_size"], block_size=problem.extras["block_size"],
                        size=m.size, n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd,
                        train=train, device=None if m.device == "auto" else m.device,
                        seed=int(rng.integers(2**31 - 1)))
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
