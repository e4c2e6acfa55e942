"""Which searched parameters matter for an objective: Optuna's importance evaluators.

fANOVA (seeded, so a report is reproducible) first, mean decrease in impurity if fANOVA
fails; both need scikit-learn. The study is the sweep's own (optuna.db) when it has enough
complete trials, else one rebuilt in memory from results.parquet.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from sweep.analysis.load import DEFAULT_OBJECTIVES, Sweep, complete, load_sweep, native

MIN_IMPORTANCE_TRIALS = 4  # fewer complete trials than this: no importance (a forest of noise)


def param_importance(source: Any, objective: str = "quality_gap") -> dict[str, float]:
    """Importance of each searched parameter for ``objective`` (Optuna's evaluators).

    ``source``: a run directory, a ``Sweep`` or an ``optuna.Study`` (a multi-objective study
    without metric names is read in the default objective order). A run directory uses its
    ``optuna.db`` study (name = run name); without one, or with too few complete trials in
    it, an in-memory study is rebuilt from results.parquet. {} with too few trials.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if isinstance(source, optuna.Study):
        return _importance(_study_from_study(source, objective, list(DEFAULT_OBJECTIVES)), [])
    return importance_with_source(source if isinstance(source, Sweep) else load_sweep(source),
                                  objective)[0]


def importance_with_source(sweep: Sweep, objective: str = "quality_gap"
                           ) -> tuple[dict[str, float], str]:
    """The importances and where they come from: 'optuna.db' or 'results.parquet'."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searched = [p[len("param."):] for p in sweep.params]
    stored = _stored_study(sweep)
    study = _study_from_study(stored, objective, list(sweep.objectives)) if stored else None
    if study is not None and len(study.trials) >= MIN_IMPORTANCE_TRIALS:
        return _importance(study, searched), "optuna.db"
    return _importance(_study_from_results(sweep.results, objective), searched), "results.parquet"


def _importance(study: Any, searched: list[str]) -> dict[str, float]:
    import optuna

    if study is None or len(study.trials) < MIN_IMPORTANCE_TRIALS:
        return {}
    imp: dict[str, float] = {}
    for evaluator in (optuna.importance.FanovaImportanceEvaluator(seed=0),
                      optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)):
        try:
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
            break
        except Exception:  # noqa: BLE001 - e.g. one distinct value everywhere; try the next one
            continue
    out = {k: float(v) for k, v in imp.items()}
    # A parameter with a single sampled value explains nothing, but it was searched: list it.
    names = list(dict.fromkeys([*out, *searched, *(study.trials[0].params if study.trials else [])]))
    return {k: out.get(k, 0.0) for k in sorted(names, key=lambda k: -out.get(k, 0.0))}


def _stored_study(sweep: Sweep) -> Any:
    import optuna

    db = sweep.run_dir / "optuna.db"
    if not db.is_file():
        return None
    storage = f"sqlite:///{db.resolve()}"
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception:  # noqa: BLE001 - a locked or foreign database: use results.parquet
        return None
    for name in (sweep.run_dir.name, sweep.config.name, *(names if len(names) == 1 else [])):
        if name in names:
            return optuna.load_study(study_name=name, storage=storage)
    return None


def _study_from_study(study: Any, objective: str, objectives: list[str] | None) -> Any:
    """A single-objective in-memory copy holding the complete trials with a finite target."""
    import optuna

    names = list(getattr(study, "metric_names", None) or objectives or [objective])
    if objective not in names:
        return None
    index = names.index(objective)
    out = optuna.create_study(direction="minimize")
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        values = t.values or []
        if index < len(values) and math.isfinite(values[index]) and t.params:
            out.add_trial(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, value=float(values[index])))
    return out


def _study_from_results(df: pd.DataFrame, objective: str) -> Any:
    import optuna

    params = [c for c in df.columns if c.startswith("param.")]
    if objective not in df or not params:
        return None
    pool = complete(df, {objective: "min"})
    dists = _distributions(pool, params)
    study = optuna.create_study(direction="minimize")
    for _, row in pool.iterrows():
        values = {p[len("param."):]: native(row[p]) for p in params if p in dists and pd.notna(row[p])}
        if values:
            study.add_trial(optuna.trial.create_trial(
                params=values, distributions={k: dists[f"param.{k}"] for k in values},
                value=float(row[objective])))
    return study


def _distributions(df: pd.DataFrame, params: list[str]) -> dict[str, Any]:
    """Distributions spanning the values seen (the searched range is not in results.parquet)."""
    import optuna.distributions as d

    out = {}
    for p in params:
        col = df[p].dropna()
        if col.empty:
            continue
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            lo, hi = float(col.min()), float(col.max())
            if pd.api.types.is_integer_dtype(col):
                out[p] = d.IntDistribution(int(lo), int(hi))
            else:
                out[p] = d.FloatDistribution(lo, hi)
        else:
            out[p] = d.CategoricalDistribution(sorted({native(v) for v in col}, key=str))
    return out
