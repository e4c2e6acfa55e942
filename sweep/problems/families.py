"""From a config to a *problem* (truth, real train/test data) and a fresh model.

This is the only place that knows which model class and which real-data source belong to
a family; the recursion sees a ``Problem`` and objects that follow ``models.base.Model``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.categorical import Categorical
from models.gaussian import Gaussian
from models.gmm import GaussianMixture
from models.linreg import LinearRegression
from sweep.config import ChainConfig
from sweep.problems.problem import TAIL_QUANTILE, Problem, tail_mask  # noqa: F401 - re-exported


def build_problem(config: ChainConfig, rng: np.random.Generator) -> Problem:
    """Truth, D_0 and the held-out set from the data stream ``rng``."""
    family = config.model.family
    n = config.recursion.samples_per_generation
    test_size = config.data.test_size
    if family == "gpt":
        from sweep.problems.lm import build_lm_problem

        return build_lm_problem(config, rng)
    if family == "gaussian":
        truth = Gaussian(config.model.dim)
    elif family == "categorical":
        m = config.model
        kw = {"nll_floor": m.nll_floor}
        truth = (Categorical(m.outcomes, **kw) if m.truth == "uniform"
                 else Categorical.zipf(m.outcomes, m.zipf_exponent, **kw))
    elif family == "gmm":
        m = config.model
        truth = GaussianMixture.truth(m.truth_components, m.dim, minority_weight=m.minority_weight,
                                      separation=m.separation)
    elif family == "linreg":
        return _linreg_problem(config, rng)
    else:  # pragma: no cover - the config's discriminator rejects other names
        raise ValueError(f"model.family: {family!r}")
    real_train = truth.sample(n, rng)
    test = truth.sample(test_size, rng)
    truth_lp = truth.log_prob(test)
    return Problem(real_train=real_train, test=test, tail_mask=tail_mask(truth_lp),
                   draw_real=truth.sample, truth=truth, truth_test_log_prob=truth_lp)


def _linreg_problem(config: ChainConfig, rng: np.random.Generator) -> Problem:
    m = config.model
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
    return Problem(real_train=real_train, test=test, tail_mask=tail_mask(truth_lp),
                   draw_real=truth.sample, truth=truth, truth_test_log_prob=truth_lp,
                   extras={"design": design, "w_star": w_star})


def build_model(config: ChainConfig, problem: Problem, rng: np.random.Generator) -> Any:
    """A fresh, unfitted model of the configured family, with the sampling knobs set."""
    m = config.model
    if m.family == "gpt":
        from sweep.problems.lm import build_gpt

        model = build_gpt(config, problem, rng)
    elif m.family == "gaussian":
        model = Gaussian(m.dim, estimator=m.estimator)
    elif m.family == "linreg":
        model = LinearRegression(problem.extras["design"], noise_var=m.noise_var)
    elif m.family == "categorical":
        model = Categorical(m.outcomes, pseudocount=m.pseudocount, nll_floor=m.nll_floor)
    elif m.family == "gmm":
        model = GaussianMixture(m.components, m.dim, max_iter=m.max_iter)
    else:  # pragma: no cover
        raise ValueError(f"model.family: {m.family!r}")
    model.temperature = config.sampling.temperature
    model.top_p = config.sampling.top_p
    if hasattr(model, "top_k"):
        model.top_k = config.sampling.top_k
    return model


def family_stats(model: Any, problem: Problem) -> dict[str, float]:
    """Per-generation statistics of the fitted model, including those needing the truth."""
    stats = dict(model.summary())
    if "w_star" in problem.extras:
        stats["param_error"] = model.param_error(problem.extras["w_star"])
    return stats
