"""What the search tells Optuna: the same code in the Tune searcher and the search benchmark.

A trial's objectives are the means over its seeds; its constraint is
``quality_gap_ucb - tolerance`` (feasible when <= 0: the one-sided upper confidence bound of
the mean gap is within the tolerance); a failed or non-finite trial is told FAIL. After the
search, ``sweep.rundir.confirmation`` picks the configurations to confirm on fresh seeds and
the answer (``sweep.search.driver`` runs them; ``benchmarks/search_efficiency.py`` too).
"""

from __future__ import annotations

import math
from typing import Any

OK_STATUSES = ("finished", "stopped_collapsed")
CONSTRAINT = "quality_gap"  # what the constraint bounds
CONSTRAINTS_ATTR = "constraints"  # Optuna's system attribute for constraint values (a list)


def constraint_value(result: dict[str, Any], tolerance: float) -> float:
    """``upper bound of the mean gap - tolerance``: <= 0 means feasible (Optuna's convention)."""
    bound = result.get("quality_gap_ucb", result.get("quality_gap"))
    return float(bound) - float(tolerance)


def objective_values(result: dict[str, Any] | None, metrics: list[str]) -> list[float] | None:
    """The objectives Optuna is told (the means over seeds), or None when unusable."""
    if not result or result.get("failed") or result.get("status", "finished") not in OK_STATUSES:
        return None
    values = [result.get(m) for m in metrics]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and abs(v) < 1e299 for v in values):
        return None
    return [float(v) for v in values]


def tell(study: Any, trial: Any, result: dict[str, Any] | None, *, metrics: list[str],
         tolerance: float, error: bool = False) -> bool:
    """Tell Optuna one finished trial (constraint first); False when it was told FAIL."""
    from optuna.trial import TrialState

    values = None if error else objective_values(result, metrics)
    if values is None:
        study.tell(trial, state=TrialState.FAIL)
        return False
    stored = study._storage.get_trial(trial._trial_id)
    if CONSTRAINTS_ATTR not in stored.system_attrs:  # set before a crash?
        # Optuna's list form (what its samplers write for constraints_func): best_trials,
        # the samplers and optuna-dashboard read it.
        study._storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_ATTR,
                                             [constraint_value(result, tolerance)])
    study.tell(trial, values)
    return True
