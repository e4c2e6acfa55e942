"""Which searched parameters matter for an objective: Optuna's importance evaluators.

fANOVA (seeded, so a report is reproducible) first, mean decrease in impurity if fANOVA
fails; both need scikit-learn. The study is the sweep's own (optuna.journal) when it has enough
complete trials, else one rebuilt in memory from results.parquet.

The importances of every objective are cached in RUN_DIR/importance.json, keyed by the
complete trials they were computed from: computing them imports scikit-learn and fits
forests (seconds), and ``analyze`` / ``report`` on an unchanged sweep read the cache.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.analysis.load import DEFAULT_OBJECTIVES, Sweep, complete, load_sweep, native
from sweep.files.atomic import write_text

CACHE_FILE = "importance.json"
_CACHE_VERSION = 1  # bump when the evaluators or their settings change

MIN_IMPORTANCE_TRIALS = 4  # fewer complete trials than this: no importance (a forest of noise)


def param_importance(source: Any, objective: str = "quality_gap") -> dict[str, float]:
    """Importance of each searched parameter for ``objective`` (Optuna's evaluators).

    ``source``: a run directory, a ``Sweep`` or an ``optuna.Study`` (a multi-objective study
    without metric names is read in the default objective order). A run directory uses its
    Optuna study (``sweep.files.study``, name = run name); without one, or with too few complete trials in
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
    """The importances and where they come from: the study file (``optuna.journal``, an
    older run's ``optuna.db``) or 'results.parquet'."""
    table, source = importances(sweep, [objective], cache=False)
    return table[objective], source


def importances(sweep: Sweep, objectives: list[str] | None = None, *, cache: bool = True
                ) -> tuple[dict[str, dict[str, float]], str]:
    """objective -> importances, and the source; from RUN_DIR/importance.json when current."""
    objectives = list(objectives or sweep.objectives)
    key = _cache_key(sweep, objectives)
    path = Path(sweep.run_dir) / CACHE_FILE
    if cache and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return cached["importance"], cached["source"]
        except (OSError, ValueError, KeyError):
            pass  # damaged: recompute
    table, source = _compute(sweep, objectives)
    if cache and Path(sweep.run_dir).is_dir():
        write_text(path, json.dumps({"key": key, "source": source, "importance": table}))
    return table, source


def _cache_key(sweep: Sweep, objectives: list[str]) -> str:
    """What the importances depend on: the complete trials' params and objective values."""
    cols = ["trial_id", *sorted(sweep.params), *[o for o in objectives if o in sweep.results]]
    try:
        pool = complete(sweep.results, {o: "min" for o in objectives})
    except KeyError:
        pool = sweep.results
    text = pool[[c for c in cols if c in pool]].to_csv(index=False) if not pool.empty else ""
    blob = json.dumps([_CACHE_VERSION, objectives, text])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _compute(sweep: Sweep, objectives: list[str]) -> tuple[dict[str, dict[str, float]], str]:
    import optuna

    from sweep.files.study import study_file

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searched = [p[len("param."):] for p in sweep.params]
    stored = _stored_study(sweep)
    studies = {o: _study_from_study(stored, o, list(sweep.objectives)) if stored else None
               for o in objectives}
    if all(s is not None and len(s.trials) >= MIN_IMPORTANCE_TRIALS for s in studies.values()):
        return ({o: _importance(s, searched) for o, s in studies.items()},
                study_file(sweep.run_dir).name)
    return ({o: _importance(_study_from_results(sweep.results, o), searched) for o in objectives},
            "results.parquet")


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

    from sweep.files.study import open_storage, study_file

    if study_file(sweep.run_dir) is None:
        return None
    try:  # one storage object: each RDBStorage checks the schema (a second or more)
        storage = open_storage(sweep.run_dir)
        names = optuna.get_all_study_names(storage)
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
