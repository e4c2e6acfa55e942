"""Can the measurement resolve the tolerance? A check to run before a sweep spends its budget.

Two ways a collapse verdict can be an artefact rather than a finding:

1. **Model 0 is not trained to convergence.** The gap is measured against model 0; if
   training longer would still improve it, later generations (trained on more data, or just
   luckier) can look *better* than model 0 and hide collapse. Check: fit model 0 again with
   ``budget_factor`` x the budget (epochs / token budget for GPTs, EM iterations for
   mixtures) on the same data and seed; the relative improvement of the collapse metric,
   ``direction * (m_0 - m_0') / |m_0|``, must stay within ``converge_fraction`` x tolerance.
   Closed-form fits (gaussian, linreg, categorical) are converged by construction.
2. **The gap's own noise is as large as the tolerance.** Check: a *no-synthetic control*,
   the same chain with ``real_fraction: 1`` under ``replace`` and no curation (every model is
   refit on real data only, so nothing can collapse), over a few seeds. Its gaps measure
   seed-to-seed noise and drift of the measurement; their standard deviation and their
   mean must both stay within ``noise_fraction`` x tolerance.

``health_check(config)`` returns a ``HealthReport`` (passed, the numbers, a one-line
reason); ``collapse-sweep check CONFIG`` prints it, and ``collapse-sweep chain --check``
runs it first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sweep.config import ChainConfig
from sweep.engine.chain import Chain
from sweep.engine.metrics import DIRECTION, collapse_summary

#: Defaults: 3 seeds; model 0 within 1/4 of the tolerance of its 2x-budget refit; the
#: control's gap sd and mean within 1/3 of the tolerance (so a 3-sd band fits inside it).
HEALTH_SEEDS = 3
BUDGET_FACTOR = 2.0
CONVERGE_FRACTION = 0.25
NOISE_FRACTION = 1.0 / 3.0


@dataclass
class HealthReport:
    """Result of ``health_check``; ``reason`` is one line for a terminal or a log."""

    passed: bool
    reason: str
    converged: bool
    noise_ok: bool
    metric: str
    tolerance: float
    seeds: list[int]
    model0: list[float] = field(default_factory=list)
    """The collapse metric of model 0 at the configured budget, per seed."""
    model0_longer: list[float] = field(default_factory=list)
    """The same with ``budget_factor`` x the budget (empty for closed-form fits)."""
    improvement: float = 0.0
    """Mean relative improvement from the longer fit (positive = longer training helps)."""
    improvement_limit: float = 0.0
    control_gaps: list[float] = field(default_factory=list)
    control_mean: float = 0.0
    control_sd: float = 0.0
    noise_limit: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def longer_budget(config: ChainConfig, factor: float = BUDGET_FACTOR) -> ChainConfig | None:
    """The config with ``factor`` x model 0's training budget; None for closed-form fits."""
    m = config.model
    if m.family == "gpt":
        t = m.train
        train = ({"token_budget": int(t.token_budget * factor)} if t.token_budget is not None
                 else {"epochs": t.epochs * factor})
        model = m.model_copy(update={"train": t.model_copy(update=train)})
    elif m.family == "gmm":
        model = m.model_copy(update={"max_iter": int(np.ceil(m.max_iter * factor))})
    else:
        return None
    return config.model_copy(update={"model": model})


def no_synthetic_control(config: ChainConfig) -> ChainConfig:
    """The chain with real data only: replace, real_fraction 1, no curation, no early stop."""
    dump = config.model_dump(mode="json")
    dump["recursion"].update(regime="replace", real_fraction=1.0)
    dump["curation"].update(scorer="none", strength=0.0)
    dump["collapse"].update(stop_early=False)
    dump["search"] = None
    return ChainConfig.model_validate(dump)


def health_check(config: ChainConfig, *, seeds: Sequence[int] | None = None,
                 budget_factor: float = BUDGET_FACTOR,
                 converge_fraction: float = CONVERGE_FRACTION,
                 noise_fraction: float = NOISE_FRACTION,
                 progress: Callable[[str], None] | None = None) -> HealthReport:
    """Check that model 0 is converged and the gap's noise is well below the tolerance.

    Runs, per seed, the no-synthetic control chain (whose generation 0 is model 0 at the
    configured budget) and one longer fit of model 0. Cost: about (G + 2) fits per seed.
    """
    col = config.collapse
    metric, tol = col.metric, col.tolerance
    direction = DIRECTION.get(metric, 1)
    seeds = list(seeds) if seeds is not None else [config.seed + i for i in range(HEALTH_SEEDS)]
    control_cfg = no_synthetic_control(config)
    longer_cfg = longer_budget(config, budget_factor)
    say = progress or (lambda _msg: None)
    model0, longer, gaps = [], [], []
    for seed in seeds:
        say(f"health check: no-synthetic control, seed {seed}")
        chain = Chain(control_cfg, seed=seed)
        while not chain.done:
            chain.step()
        model0.append(float(chain.rows[0].get(metric, np.nan)))
        gaps.append(float(collapse_summary(chain.rows, col)["quality_gap"]))
        if longer_cfg is not None:
            say(f"health check: model 0 with {budget_factor:g}x the budget, seed {seed}")
            refit = Chain(longer_cfg, seed=seed)
            longer.append(float(refit.step().get(metric, np.nan)))
    m0, m1, g = np.array(model0), np.array(longer), np.array(gaps)
    improvement = (float(np.mean(direction * (m0 - m1) / np.maximum(np.abs(m0), 1e-300)))
                   if len(m1) else 0.0)
    improvement_limit = converge_fraction * tol
    noise_limit = noise_fraction * tol
    control_mean = float(np.mean(g))
    control_sd = float(np.std(g, ddof=1)) if len(g) > 1 else float("nan")
    converged = bool(np.isfinite(improvement) and improvement <= improvement_limit)
    noise_ok = bool(np.isfinite(control_mean) and abs(control_mean) <= noise_limit
                    and (not np.isfinite(control_sd) or control_sd <= noise_limit))
    problems = []
    if not converged:
        problems.append(f"model 0 is not trained to convergence: {budget_factor:g}x the budget "
                        f"improves {metric} by {improvement:.1%} (limit {improvement_limit:.1%} = "
                        f"{converge_fraction:g} x tolerance); train longer (model.train.epochs)")
    if not noise_ok:
        problems.append(f"the gap is too noisy to resolve tolerance {tol:g}: a no-synthetic "
                        f"control gives gap {control_mean:+.3g} +- {control_sd:.3g} (sd over "
                        f"{len(g)} seeds; limit {noise_limit:.3g}); use a larger test set or "
                        "a larger tolerance")
    if problems:
        reason = "; ".join(problems)
    else:
        conv = (f"model 0 converged ({budget_factor:g}x budget: {improvement:+.1%})"
                if len(m1) else "model 0 fit in closed form")
        reason = (f"ok: {conv}; no-synthetic control gap {control_mean:+.3g} +- "
                  f"{control_sd:.3g} within {noise_limit:.3g}")
    return HealthReport(passed=converged and noise_ok, reason=reason, converged=converged,
                        noise_ok=noise_ok, metric=metric, tolerance=tol, seeds=seeds,
                        model0=model0, model0_longer=list(longer), improvement=improvement,
                        improvement_limit=improvement_limit, control_gaps=gaps,
                        control_mean=control_mean, control_sd=control_sd,
                        noise_limit=noise_limit)
