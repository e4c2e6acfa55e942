"""The analytic families (gaussian, linreg, categorical, gmm) and their ``truth`` source.

Each is one ``Family`` record registered with ``register_family``, the call a user's family
makes too (see ``sweep.problems.registry``). Their real data come from their own truth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from models.base import Model
from models.categorical import Categorical
from models.gaussian import Gaussian
from models.gmm import GaussianMixture
from models.linreg import LinearRegression
from sweep.config import ChainConfig, FamilyConfig, SourceConfig
from sweep.problems.problem import Problem, largest_norm_mask, rarest_outcomes
from sweep.problems.registry import (
    DataSource,
    Family,
    model_summary,
    problem_from_truth,
    register_family,
    register_source,
)


# --------------------------------------------------------------------------- the truth source
class TruthData(SourceConfig):
    """Real data drawn from the family's own true distribution (analytic families)."""

    source: str = "truth"
    test_size: int = Field(1000, ge=10, description="Held-out real examples for evaluation.")


TRUTH = register_source(DataSource(name="truth", config=TruthData, problem=None))


# --------------------------------------------------------------------------- gaussian
class GaussianModel(FamilyConfig):
    """A d-dimensional Gaussian fit by maximum likelihood (or the unbiased covariance)."""

    family: str = "gaussian"
    dim: int = Field(1, ge=1, le=512, description="Dimension d of the Gaussian (the size axis).")
    estimator: Literal["mle", "unbiased"] = Field(
        "mle", description="Covariance estimator: 'mle' divides by n, 'unbiased' by n - 1."
    )


def gaussian_kl(m0: np.ndarray, s0: np.ndarray, m1: np.ndarray, s1: np.ndarray) -> float:
    """KL(N(m0, s0) || N(m1, s1)); inf when s1 is singular."""
    sign1, logdet1 = np.linalg.slogdet(s1)
    if sign1 <= 0 or not np.isfinite(logdet1):
        return float("inf")
    _, logdet0 = np.linalg.slogdet(s0)
    s1_inv = np.linalg.inv(s1)
    diff = m1 - m0
    return float(0.5 * (np.trace(s1_inv @ s0) + diff @ s1_inv @ diff - len(m0) + logdet1 - logdet0))


def _gaussian_excess(model: Model, problem: Problem) -> float:
    assert isinstance(model, Gaussian)
    truth = problem.truth
    return gaussian_kl(truth.mean, truth.cov, model.mean, model.cov)


GAUSSIAN = register_family(Family(
    name="gaussian", config=GaussianModel, title="Gaussian",
    build=lambda m, problem, rng: Gaussian(m.dim, estimator=m.estimator),
    problem=problem_from_truth(lambda m: Gaussian(m.dim)), excess=_gaussian_excess,
    metrics=("var",), size_axes=("dim",)))


# --------------------------------------------------------------------------- linreg
class LinregModel(FamilyConfig):
    """Linear regression on a fixed design X (T x d) with known noise variance."""

    family: str = "linreg"
    dim: int = Field(10, ge=1, le=1000, description="Number of features d (the size axis).")
    design_rows: int | None = Field(
        None,
        ge=2,
        description="Rows T of the fixed design X; default: recursion.samples_per_generation.",
    )
    noise_var: float = Field(1.0, gt=0, description="Label noise variance s^2 (truth and synthetic).")


@dataclass(frozen=True)
class LinregWorld:
    """The fixed design every generation is labelled on, and the true weights."""

    design: np.ndarray
    w_star: np.ndarray


def _linreg_problem(config: ChainConfig, rng: np.random.Generator) -> Problem:
    m = config.model
    assert isinstance(m, LinregModel) and config.data is not None
    rows = m.design_rows or config.recursion.samples_per_generation
    if rows <= m.dim + 1:
        raise ValueError(f"model.design_rows: need more than dim + 1 = {m.dim + 1} rows, got {rows}")
    design = rng.standard_normal((rows, m.dim))
    w_star = rng.standard_normal(m.dim)
    truth = LinearRegression(design, noise_var=m.noise_var, weights=w_star)
    # Real data: the fixed design labelled by the truth. Held-out: fresh design rows.
    real_train = truth.sample(config.recursion.samples_per_generation, rng)
    test_x = rng.standard_normal((config.data.test_size, m.dim))
    test = LinearRegression(test_x, noise_var=m.noise_var, weights=w_star).sample(len(test_x), rng)
    truth_lp = truth.log_prob(test)
    return Problem(real_train=real_train, test=test, tail_mask=largest_norm_mask(test_x),
                   draw_real=truth.sample, truth=truth, truth_test_log_prob=truth_lp,
                   family_data=LinregWorld(design=design, w_star=w_star),
                   tail_kind="held-out rows with the largest ||x|| (top decile)")


def _linreg_build(m: LinregModel, problem: Problem, rng: np.random.Generator) -> Model:
    world: LinregWorld = problem.family_data
    return LinearRegression(world.design, noise_var=m.noise_var)


def _linreg_stats(model: Model, problem: Problem) -> dict[str, float]:
    assert isinstance(model, LinearRegression)
    world: LinregWorld = problem.family_data
    return {**model_summary(model, problem), "param_error": model.param_error(world.w_star)}


def _linreg_excess(model: Model, problem: Problem) -> float:
    """||w - w*||^2: the excess squared-error risk on N(0, I) inputs."""
    assert isinstance(model, LinearRegression)
    return model.param_error(problem.family_data.w_star)


LINREG = register_family(Family(
    name="linreg", config=LinregModel, title="Linear regression", build=_linreg_build,
    problem=_linreg_problem, stats=_linreg_stats, excess=_linreg_excess,
    metrics=("param_error",), size_axes=("dim",)))


# --------------------------------------------------------------------------- categorical
class CategoricalModel(FamilyConfig):
    """K outcomes fit by empirical frequencies (Wright-Fisher when replacing)."""

    family: str = "categorical"
    outcomes: int = Field(10, ge=2, le=1_000_000, description="Number of outcomes K (the size axis).")
    truth: Literal["uniform", "zipf"] = Field("uniform", description="True distribution over outcomes.")
    zipf_exponent: float = Field(1.1, gt=0, description="Exponent a of the Zipf truth, p_k ~ k^-a.")
    pseudocount: float = Field(
        0.0, ge=0, description="Additive smoothing of the fit; 0 is the MLE of the theory."
    )
    nll_floor: float = Field(
        1e-6,
        gt=0,
        lt=1,
        description="Probability floor used only when scoring held-out data, so a lost outcome "
        "costs -log(floor) nats instead of infinity.",
    )


def _categorical_truth(m: CategoricalModel) -> Categorical:
    if m.truth == "uniform":
        return Categorical(m.outcomes, nll_floor=m.nll_floor)
    return Categorical.zipf(m.outcomes, m.zipf_exponent, nll_floor=m.nll_floor)


def _categorical_problem(config: ChainConfig, rng: np.random.Generator) -> Problem:
    """As ``problem_from_truth``, with the tail: items whose outcome is among the rarest."""
    problem = problem_from_truth(_categorical_truth)(config, rng)
    rare = rarest_outcomes(problem.truth.probs)
    return dataclasses.replace(
        problem, tail_mask=np.isin(problem.test[:, 0].astype(np.int64), rare),
        tail_kind=f"outcomes the truth finds rarest ({len(rare)} of {len(problem.truth.probs)})")


def _categorical_excess(model: Model, problem: Problem) -> float:
    """KL(truth || model), a lost outcome at -log(nll_floor) as in ``real_nll``."""
    assert isinstance(model, Categorical)
    p, q = problem.truth.probs, np.maximum(model.probs, model.nll_floor)
    on = p > 0
    return float(np.sum(p[on] * (np.log(p[on]) - np.log(q[on]))))


CATEGORICAL = register_family(Family(
    name="categorical", config=CategoricalModel, title="Categorical",
    build=lambda m, problem, rng: Categorical(m.outcomes, pseudocount=m.pseudocount,
                                              nll_floor=m.nll_floor),
    problem=_categorical_problem, excess=_categorical_excess,
    metrics=("gini", "support"), size_axes=("outcomes",)))


# --------------------------------------------------------------------------- gmm
class GMMModel(FamilyConfig):
    """A Gaussian mixture fit by EM (scikit-learn), truth a mixture with a minority mode."""

    family: str = "gmm"
    components: int = Field(2, ge=1, le=64, description="Components of the fitted mixture (size axis).")
    dim: int = Field(1, ge=1, le=64, description="Dimension of the data.")
    truth_components: int = Field(2, ge=1, le=64, description="Components of the true mixture.")
    minority_weight: float = Field(
        0.1, gt=0, lt=1, description="Weight of the last (minority) true component."
    )
    separation: float = Field(4.0, gt=0, description="Distance between true component means.")
    max_iter: int = Field(100, ge=1, description="EM iterations per fit.")


#: Truth draws of the Monte Carlo KL of a mixture (no closed form).
KL_SAMPLES = 20_000


def _gmm_truth(m: GMMModel) -> GaussianMixture:
    return GaussianMixture.truth(m.truth_components, m.dim, minority_weight=m.minority_weight,
                                 separation=m.separation)


def _gmm_problem(config: ChainConfig, rng: np.random.Generator) -> Problem:
    """As ``problem_from_truth``, plus a fixed sample of the truth for the KL estimate."""
    problem = problem_from_truth(_gmm_truth)(config, rng)
    sample = problem.truth.sample(KL_SAMPLES, rng)
    return dataclasses.replace(problem, family_data=(sample, problem.truth.log_prob(sample)))


def _gmm_excess(model: Model, problem: Problem) -> float:
    """KL(truth || model) on ``KL_SAMPLES`` fixed truth draws."""
    sample, truth_lp = problem.family_data
    return float(np.mean(truth_lp - model.log_prob(sample)))


GMM = register_family(Family(
    name="gmm", config=GMMModel, title="Gaussian mixture",
    build=lambda m, problem, rng: GaussianMixture(m.components, m.dim, max_iter=m.max_iter),
    problem=_gmm_problem, excess=_gmm_excess, size_axes=("components",)))
