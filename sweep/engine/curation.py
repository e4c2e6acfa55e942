"""Curation: generate more candidates than needed, keep the best by a scorer.

Strength s in [0, 1): for m synthetic slots, ceil(m / (1 - s)) candidates are generated and
m are kept, so every discarded candidate still costs sampling and scoring compute.

Scorers map candidates to one score per item (higher is better), in nats per token for
language models so that length does not decide. Register new ones with ``register_scorer``
(or name one by dotted path, ``curation.scorer: "mypkg.rewards:score"``, or install an entry
point of the group ``collapse_sweep.scorers``): the built-ins register the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.base import Model, Truth
from sweep.config import SCORERS, ChainConfig


@dataclass
class ScoreContext:
    """What a scorer may look at: the current model, the judges, the truth."""

    model: Model
    judges: list[Model]
    truth: Truth | None
    config: ChainConfig | None
    rng: np.random.Generator | None = None
    """The chain's random stream, for scorers that draw (the ``human`` labeller's errors)."""


Scorer = Callable[[np.ndarray, ScoreContext], np.ndarray]


def register_scorer(name: str, fn: Scorer, *, replace: bool = False) -> None:
    """Make ``curation.scorer: name`` available (e.g. a reward model of your own)."""
    SCORERS.register(name, fn, replace=replace)


def get_scorer(name: str) -> Scorer:
    """The scorer called ``name`` (registered, a dotted path, or an entry point)."""
    return SCORERS.get(name)


def scorer_names() -> list[str]:
    return SCORERS.names()


def per_item(model: Truth, candidates: np.ndarray) -> np.ndarray:
    """Log-likelihood per item, divided by the item's token count for language models."""
    lp = model.log_prob(candidates)
    size = model.item_size(candidates)
    return lp if size is None else lp / np.maximum(size, 1)


def _self(c: np.ndarray, ctx: ScoreContext) -> np.ndarray:
    return per_item(ctx.model, c)


def _oracle(c: np.ndarray, ctx: ScoreContext) -> np.ndarray:
    """log p_truth(x) - log q(x): how much more the truth wants x than the sampler, where q
    is the density the candidates were drawn from (the model after temperature / top-p /
    top-k, ``sample_log_prob``).

    This is the importance weight of x; with ``selection: sample`` (Gumbel top-m of the
    log weights) the kept set is an importance resample of the candidates towards the
    truth, the perfect verifier of Feng et al. Ranking by the truth's likelihood alone is
    ``oracle-likelihood``, a reward whose maximisers the chain converges to (Ferbach).
    """
    truth = _need_truth(ctx, "oracle")
    return truth.log_prob(c) - sampler_log_prob(ctx.model, c)


def sampler_log_prob(model: Model, candidates: np.ndarray) -> np.ndarray:
    """log q(x) of the distribution the candidates were drawn from: the model's density after
    the sampling knobs (temperature, top-p, top-k), which is what an importance weight needs."""
    return model.sample_log_prob(candidates)


def _oracle_likelihood(c: np.ndarray, ctx: ScoreContext) -> np.ndarray:
    return per_item(_need_truth(ctx, "oracle-likelihood"), c)


def _need_truth(ctx: ScoreContext, name: str) -> Truth:
    if ctx.truth is None:
        raise ValueError(f"curation.scorer: {name!r} needs a data source with a known truth")
    return ctx.truth


def _judge(c: np.ndarray, ctx: ScoreContext) -> np.ndarray:
    return np.mean([per_item(j, c) for j in ctx.judges], axis=0)


def _rules(c: np.ndarray, ctx: ScoreContext) -> np.ndarray:
    from sweep.problems.rules import score_rules

    return score_rules(c)


def _human(c: np.ndarray, ctx: ScoreContext) -> np.ndarray:
    """A simulated labeller: the reference scorer's verdict (``curation.human_reference``),
    wrong with probability ``curation.human_error`` on any pair (see ``labeller_scores``)."""
    assert ctx.config is not None
    cur = ctx.config.curation
    reference = get_scorer(cur.human_reference)(c, ctx)
    return labeller_scores(reference, cur.human_error, ctx.rng or np.random.default_rng(0))


def labeller_scores(reference: np.ndarray, error: float, rng: np.random.Generator) -> np.ndarray:
    """Scores of a labeller who errs: each label is, with probability r, a guess (the score
    of a uniformly drawn candidate) instead of its reference score.

    A random pair is ordered against the reference with probability 1/3 when one of its two
    labels is a guess (E[2t(1 - t)] over the other's rank t) and 1/2 when both are, so
    P(wrong) = 2 r (1 - r) / 3 + r^2 / 2 = ``error`` and r = 2 - sqrt(4 - 6 error): error 0 is
    the reference itself, 0.5 is labels independent of quality, i.e. no curation."""
    if not 0 <= error <= 0.5:
        raise ValueError(f"curation.human_error: {error} outside [0, 0.5]")
    scores = np.asarray(reference, dtype=float).copy()
    if error == 0:  # a perfect labeller draws nothing: the chain's stream stays the reference's
        return scores
    r = 2.0 - np.sqrt(4.0 - 6.0 * error)
    guessed = rng.random(len(scores)) < r
    scores[guessed] = np.asarray(reference, dtype=float)[rng.integers(len(scores), size=int(guessed.sum()))]
    return scores


def _none(c: np.ndarray, ctx: ScoreContext) -> np.ndarray:
    return np.zeros(len(c))


for _name, _fn in {"none": _none, "self": _self, "oracle": _oracle,
                   "oracle-likelihood": _oracle_likelihood, "judge": _judge,
                   "rules": _rules, "human": _human}.items():
    register_scorer(_name, _fn)


def scorer_cost_model(scorer: str, ctx: ScoreContext) -> list[Truth]:
    """The models whose ``flops('score', ...)`` a scorer spends (a human's labels are
    counted as ``label_cost``, not FLOPs)."""
    if scorer == "human":
        return []
    return {"self": [ctx.model], "oracle": [ctx.truth, ctx.model],
            "oracle-likelihood": [ctx.truth], "judge": ctx.judges}.get(scorer, [])


def candidates_needed(m: int, strength: float) -> int:
    """ceil(m / (1 - s)); exact for the s values users type (guarded against 1e-16 noise)."""
    return m if m == 0 else int(math.ceil(m / (1.0 - strength) - 1e-9))


def select(scores: np.ndarray, m: int, *, how: str, temperature: float,
           rng: np.random.Generator) -> np.ndarray:
    """Indices of the m kept candidates ('top': best m; 'sample': Gumbel top-m of score / T)."""
    if m >= len(scores):
        return np.arange(len(scores))
    keys = _selection_keys(scores, how=how, temperature=temperature, rng=rng)
    return np.sort(np.argpartition(-keys, m - 1)[:m])


def _selection_keys(scores: np.ndarray, *, how: str, temperature: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Keys whose largest values are kept: the scores ('top') or score / T plus Gumbel noise
    ('sample', so the kept ones are a draw with probability ~ exp(score / T))."""
    if how == "sample":
        return scores / temperature + rng.gumbel(size=np.shape(scores))
    if how == "top":
        return scores
    raise ValueError(f"curation.selection: {how!r} (allowed: top, sample)")


def select_per_prompt(scores: np.ndarray, per_prompt: int, *, how: str, temperature: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Indices of one kept candidate per prompt; candidates come in consecutive groups of
    ``per_prompt`` continuations of the same prompt ('top': the best of each group; 'sample':
    Gumbel-max of score / T, i.e. one draw with probability ~ exp(score / T) per group)."""
    groups = np.asarray(scores, dtype=float).reshape(-1, per_prompt)
    keys = _selection_keys(groups, how=how, temperature=temperature, rng=rng)
    return np.arange(len(groups)) * per_prompt + keys.argmax(axis=1)


def scorer_agreement(scores: np.ndarray, truth_scores: np.ndarray) -> float:
    """Spearman rank correlation between a scorer and the truth on the same candidates."""
    if len(scores) < 3 or np.ptp(scores) == 0 or np.ptp(truth_scores) == 0:
        return float("nan")
    ra = np.argsort(np.argsort(scores)).astype(float)
    rb = np.argsort(np.argsort(truth_scores)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])
