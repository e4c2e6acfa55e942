"""What a chain learns from: model families and data sources (as plugins), their metrics,
the rules scorer.

    from sweep.problems import Family, register_family   # a family of your own
    from sweep.problems import build_problem, build_model, family_of

Importing this package registers the built-in families (gaussian, linreg, categorical, gmm,
gpt, hf, vae, diffusion) and sources (truth, truth-lm, text, images) with the same ``register_family`` /
``register_source`` calls a user's package makes; see ``sweep.problems.registry``.
"""

from __future__ import annotations

from sweep.problems import families as _analytic  # noqa: F401 - registers the built-ins
from sweep.problems import lm as _lm  # noqa: F401 - registers the built-ins
from sweep.problems import pretrained as _pretrained  # noqa: F401 - registers the built-ins (hf)
from sweep.problems import vision as _vision  # noqa: F401 - registers the built-ins (vae, diffusion)
from sweep.problems.problem import Problem, TokenSpace, tail_mask
from sweep.problems.registry import (
    DataSource,
    Family,
    build_model,
    build_problem,
    excess_loss,
    families,
    family_of,
    model_summary,
    problem_from_truth,
    register_family,
    register_source,
    size_columns,
    source_of,
    sources,
)

__all__ = [
    "DataSource", "Family", "Problem", "TokenSpace", "build_model", "build_problem",
    "excess_loss", "families", "family_of", "model_summary", "problem_from_truth", "register_family",
    "register_source", "size_columns", "source_of", "sources", "tail_mask",
]
