"""Model families and data sources as plugins: one record each, one registry each.

A **family** is one :class:`Family` record: its config model (``model:`` section), how to
build a fresh model, how its real world is made (truth, D_0, held-out set, tail), its
per-generation statistics, its size axis and display name. The built-ins (gaussian, linreg,
categorical, gmm, gpt) register themselves with :func:`register_family`, the same call a
user's package makes. A config names a family by

- a registered name: ``model: {family: gaussian}``;
- a dotted path, imported on first use: ``model: {family: "mypkg.fam:FAMILY"}``;
- an installed entry point of the group ``collapse_sweep.families``
  (``[project.entry-points."collapse_sweep.families"] myfam = "mypkg.fam:FAMILY"``).

A complete family of your own (the README's "Write your own family" runs this)::

    import numpy as np
    from pydantic import Field
    from sweep.config import FamilyConfig
    from sweep.problems import Family, problem_from_truth

    class ExponentialConfig(FamilyConfig):
        rate: float = Field(1.0, gt=0, description="Rate of the true exponential.")

    class Exponential:                       # follows models.base.Model
        temperature, top_p, top_k = 1.0, 1.0, 0
        def __init__(self, rate=1.0): self.rate = rate
        def fit(self, data, rng): self.rate = 1.0 / float(np.mean(data))
        ...                                  # sample, log_prob, flops, summary, state ...

    FAMILY = Family(name="exponential", config=ExponentialConfig,
                    build=lambda cfg, problem, rng: Exponential(),
                    problem=problem_from_truth(lambda cfg: Exponential(cfg.rate)),
                    size_axes=("rate",), title="Exponential", metrics=("rate",))

and then ``collapse-sweep chain --set model.family=mypkg.fam:FAMILY`` (or
``register_family(FAMILY)`` and ``family: exponential``).

A **data source** (:class:`DataSource`, ``data:`` section) makes the real world for families
that learn from outside data (gpt: ``truth-lm`` or ``text``); the analytic families use
``truth``, their own true distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from models.base import Model
from sweep.config import FAMILIES, SOURCES, ChainConfig, FamilyConfig, SourceConfig
from sweep.problems.problem import Problem, tail_mask

if TYPE_CHECKING:
    from sweep.config.schema import SamplingConfig

C = TypeVar("C", bound=FamilyConfig)
D = TypeVar("D", bound=SourceConfig)

#: build(model config, problem, rng) -> a fresh, unfitted model.
Builder = Callable[[Any, Problem, np.random.Generator], Model]
#: problem(chain config, data rng) -> truth, D_0, held-out set, tail.
ProblemMaker = Callable[[ChainConfig, np.random.Generator], Problem]
#: sample_metrics(fitted model, problem, eval rng) -> (row metrics, the samples drawn).
SampleMetrics = Callable[[Model, Problem, np.random.Generator], tuple[dict[str, float], np.ndarray]]


def model_summary(model: Model, problem: Problem) -> dict[str, float]:
    """The default per-generation statistics: the model's own ``summary()``."""
    return dict(model.summary())


@dataclass(frozen=True)
class Family(Generic[C]):
    """Everything the project knows about one model family, in one record."""

    name: str
    """The name configs use (``model.family``); a dotted path registers under the path."""
    config: type[C]
    """Its ``model:`` section: a ``sweep.config.FamilyConfig`` subclass (pydantic)."""
    build: Builder
    """A fresh, unfitted model from (model config, problem, rng)."""
    problem: ProblemMaker | None = None
    """Its real world from the family's own truth (``data.source: truth``); None when a data
    source makes it (``sources`` names them)."""
    stats: Callable[[Model, Problem], dict[str, float]] = model_summary
    """Per-generation statistics of a fitted model (columns of the frame)."""
    sample_metrics: SampleMetrics | None = None
    """Metrics of the model's own samples each generation (LMs: diversity, in-language)."""
    metrics: tuple[str, ...] = ()
    """Statistics of ``stats`` that may be ``collapse.metric``."""
    size_axes: tuple[str, ...] = ()
    """Config fields under ``model`` that set its size, the main one first."""
    title: str = ""
    """Display name (tables, figures); default: ``name``."""
    sources: tuple[str, ...] = ("truth",)
    """Data sources it learns from; the first is the default."""
    tokens: bool = False
    """Items are token rows (top_k, prompts and the rules scorer apply)."""
    samples_per_generation: int | None = None
    """Its default ``recursion.samples_per_generation`` (None: the config's 100)."""
    default_init: str | None = None
    """Its default ``recursion.init`` (None: the config's scratch)."""
    reload_base: Callable[[Model], None] | None = None
    """What ``recursion.init: base`` restores before each fit (None: model 0's weights; a
    pretrained LM: its checkpoint, as Shumailov et al. fine-tune OPT-125m each generation)."""
    excess: Callable[[Model, Problem], float] | None = None
    """The fitted model's loss in excess of the truth's in closed form (KL, excess risk);
    None: estimated on the held-out set (see ``excess_loss``)."""

    @property
    def label(self) -> str:
        return self.title or self.name


@dataclass(frozen=True)
class DataSource(Generic[D]):
    """A source of real data for families that do not bring their own truth."""

    name: str
    config: type[D]
    """Its ``data:`` section: a ``sweep.config.SourceConfig`` subclass."""
    problem: ProblemMaker | None = None
    """Truth (when known), D_0, held-out set, tail; None: the family's own (``truth``)."""
    has_truth: bool = True
    """The truth's density is known (oracle scorers, excess-loss metrics)."""
    metrics: tuple[str, ...] = ()
    """Metrics only this source provides (e.g. ``kl``) that may be ``collapse.metric``."""
    kl: bool = False
    """Rows get ``kl`` (truth vs model on the held-out set)."""
    byte_level: bool = False
    """Token ids are bytes (TensorBoard shows samples as text)."""


def register_family(family: Family[Any], *, replace: bool = False) -> Family[Any]:
    """Make ``family`` available under ``family.name``; returns it (usable as a decorator
    target: ``FAMILY = register_family(Family(...))``)."""
    FAMILIES.register(family.name, family, replace=replace)
    return family


def register_source(source: DataSource[Any], *, replace: bool = False) -> DataSource[Any]:
    """Make ``source`` available under ``source.name`` (``data.source``)."""
    SOURCES.register(source.name, source, replace=replace)
    return source


def family_of(config: ChainConfig) -> Family[Any]:
    """The family record of ``config.model.family`` (a name, dotted path or entry point)."""
    family = FAMILIES.get(config.model.family)
    if not isinstance(family, Family):
        raise TypeError(f"model.family {config.model.family!r}: not a sweep.problems.Family")
    return family


def source_of(config: ChainConfig) -> DataSource[Any]:
    """The data-source record of ``config.data.source``."""
    assert config.data is not None
    source = SOURCES.get(config.data.source)
    if not isinstance(source, DataSource):
        raise TypeError(f"data.source {config.data.source!r}: not a sweep.problems.DataSource")
    return source


def families() -> dict[str, Family[Any]]:
    """Every family registered so far, by name (built-ins first)."""
    return {n: f for n, f in FAMILIES.registered().items() if isinstance(f, Family)}


def size_columns() -> list[str]:
    """The size axes of every registered family as results columns (``param.model.dim``...)."""
    return list(dict.fromkeys(f"param.model.{axis}" for family in families().values()
                              for axis in family.size_axes))


def sources() -> dict[str, DataSource[Any]]:
    return {n: s for n, s in SOURCES.registered().items() if isinstance(s, DataSource)}


def problem_from_truth(truth: Callable[[Any], Model], *,
                       tail: Callable[[np.ndarray], np.ndarray] = tail_mask) -> ProblemMaker:
    """The real world of a family whose truth is a fitted model of its own kind.

    D_0 is ``samples_per_generation`` draws of ``truth(model config)``, the held-out set
    ``data.test_size`` more; the tail is ``tail(truth log-probs of the held-out set)``
    (default: the truth's lowest-density decile).
    """
    def make(config: ChainConfig, rng: np.random.Generator) -> Problem:
        assert config.data is not None
        model = truth(config.model)
        real_train = model.sample(config.recursion.samples_per_generation, rng)
        test = model.sample(config.data.test_size, rng)
        truth_lp = model.log_prob(test)
        return Problem(real_train=real_train, test=test, tail_mask=tail(truth_lp),
                       draw_real=model.sample, truth=model, truth_test_log_prob=truth_lp)
    return make


def build_problem(config: ChainConfig, rng: np.random.Generator) -> Problem:
    """Truth, D_0 and the held-out set from the data stream ``rng``."""
    family, source = family_of(config), source_of(config)
    make = source.problem or family.problem
    if make is None:
        raise ValueError(f"model.family {family.name!r} has no truth of its own; "
                         f"use data.source {' | '.join(family.sources)}")
    return make(config, rng)


def build_model(config: ChainConfig, problem: Problem, rng: np.random.Generator) -> Model:
    """A fresh, unfitted model of the configured family, with the sampling knobs set."""
    model = family_of(config).build(config.model, problem, rng)
    set_sampling(model, config.sampling)
    return model


def set_sampling(model: Model, sampling: SamplingConfig) -> None:
    model.temperature = sampling.temperature
    model.top_p = sampling.top_p
    model.top_k = sampling.top_k


def excess_loss(family: Family[Any], model: Model, problem: Problem, test_log_prob: np.ndarray,
                sizes: np.ndarray | None = None) -> float | None:
    """The ``excess`` column: the model's loss in excess of the truth's, 0 for the truth.

    The family's closed form when it has one (``Family.excess``); otherwise, where the truth
    is known, KL(truth || model) estimated on the held-out set: the real NLL minus the
    truth's, per item (per token for token rows, ``sizes``). None without a truth (text).
    """
    if problem.truth is None or problem.truth_test_log_prob is None:
        return None
    if family.excess is not None:
        return float(family.excess(model, problem))
    sizes = np.ones(len(test_log_prob)) if sizes is None else sizes
    return float((problem.truth_test_log_prob - test_log_prob).sum() / sizes.sum())
