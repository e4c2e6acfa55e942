"""The Optuna side of a sweep: samplers and the constrained, crash-safe OptunaSearch.

``build_searcher(config, spec, run_dir)`` returns the searcher a sweep hands to Tune. It asks
and tells the study ``RUN_DIR/optuna.journal`` (study name = run name; ``sweep.files.study``) and adds what plain
``OptunaSearch`` lacks:

- the feasibility constraint ``quality_gap_ucb - tolerance <= 0`` (the upper confidence
  bound of the trial's mean gap over its seeds; objectives are means) on every finished trial, in
  the ``constraints`` system attribute (the list form Optuna's samplers write for
  ``constraints_func``: ``study.best_trials``, the samplers and optuna-dashboard read it);
- the objectives' names (``study.set_metric_names``) and, per trial, user attributes that
  tie it to the run directory: ``tune_trial_id``, ``trial_dir`` (``trials/<id>``, relative
  to RUN_DIR), ``status``, ``seed``;
- FAIL for a failed, diverged or non-finite trial (Optuna never leaves it RUNNING);
- after a crash, study trials whose result the ledger does not hold are handed out again
  before new ones are asked (``adopt``), so every trial runs exactly once;
- a grid sampler that does not call ``study.stop()`` (which raises outside ``optimize``);
- several short Optuna trials in one Tune trial (``search.batch``, ``sweep.search.batching``):
  ``total`` Optuna trials are handed out, then ``suggest`` says FINISHED.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweep.config import ChainConfig
from sweep.files.atomic import write_text
from sweep.files.study import open_storage
from sweep.rundir.integrity import FIRST_NUMBER_FILE
from sweep.rundir.ledger import Ledger
from sweep.search import batching
from sweep.search.answer import tell
from sweep.search.cheapest import CheapestFeasibleSampler
from sweep.search.space import SearchSpec
from sweep.search.trial import tune_metrics

#: The objective the ``cheapest`` sampler walks up.
COST = "total_flops"
#: The constraint: ``quality_gap - tolerance`` (feasible when <= 0).
CONSTRAINT = "quality_gap"
#: Optuna's system attribute for constraint values (a list), as its samplers write it; the
#: named form of ``Trial.set_constraint`` is not read by optuna-dashboard (0.21).
CONSTRAINTS_ATTR = "constraints"


def make_sampler(spec: SearchSpec, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named by ``search.sampler``, seeded."""
    s = optuna.samplers
    if spec.sampler == "grid":
        return TuneGridSampler(spec.grid_values(), seed=seed)
    if spec.sampler == "tpe":
        # constant_liar: trials still running count as bad guesses, so that parallel
        # workers do not all get the same suggestion.
        return s.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                            n_startup_trials=min(10, spec.trials // 3 + 1))
    if spec.sampler == "gp":
        return s.GPSampler(seed=seed, n_startup_trials=min(10, spec.trials // 3 + 1))
    if spec.sampler == "cheapest":
        return CheapestFeasibleSampler(spec.distributions(), seed=seed,
                                       cost_index=list(spec.objectives).index(COST))
    if spec.sampler == "random":
        return s.RandomSampler(seed=seed)
    return s.NSGAIISampler(seed=seed, population_size=max(4, min(50, spec.trials // 4)))


class TuneGridSampler(optuna.samplers.GridSampler):
    """GridSampler without its ``study.stop()`` once the grid is covered.

    That call only works inside ``study.optimize``; told from Tune it raises (a late failed
    trial crashed the sweep). Tune's ``num_samples`` already ends the sweep.
    """

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and abs(value) < 1e299


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch + the feasibility constraint, FAIL for failed chains, crash recovery.

    The study and its storage are this object's own (``study``, ``storage``): the
    searcher asks and tells through them, not through OptunaSearch's private copies.
    """

    def __init__(self, *, space: dict[str, Any], objectives: dict[str, str],
                 sampler: optuna.samplers.BaseSampler, study_name: str,
                 storage: optuna.storages.BaseStorage, tolerance: float, first_number: int,
                 adopt: Sequence[int] = (), total: int | None = None,
                 batch: int | str = 1, concurrency: int = 1, ledger: Ledger | None = None
                 ) -> None:
        super().__init__(space=space, metric=list(objectives), mode=list(objectives.values()),
                         sampler=sampler, study_name=study_name, storage=storage)
        self.tolerance = tolerance
        self.first_number = first_number
        self.to_adopt = list(adopt)  # study trials handed out again before new ones are asked
        self.total = total  # Optuna trials to hand out (None: as many as Tune asks for)
        self.handed_out = 0
        self.sizer = batching.BatchSizer(batch, concurrency=concurrency)
        self.ledger = ledger  # the run's ledger (on object storage: the keeper's file)
        self._batches: dict[str, list[optuna.Trial]] = {}  # Tune trial id -> its members
        self.storage = storage
        self.study_name = study_name
        if self.study.metric_names != list(objectives):
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2, still the API
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(list(objectives))
        self.study.set_user_attr("constraint", f"{CONSTRAINT} - {tolerance:g} <= 0: does not "
                                 "collapse")

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    # ---------------------------------------------------------------- Tune's searcher API
    def suggest(self, trial_id: str) -> dict | str | None:
        if trial_id in self._batches:
            return batching.encode(self._members(trial_id))
        remaining = None if self.total is None else self.total - self.handed_out
        if remaining is not None and remaining <= 0 and trial_id not in self._ot_trials:
            return Searcher.FINISHED
        size = self.sizer.size(remaining) if remaining is not None else 1
        if size > 1:
            self._batches[trial_id] = [self._next_trial() for _ in range(size)]
            for ot_trial in self._batches[trial_id]:
                self._tie(ot_trial, trial_id, batching.member_dir(trial_id, ot_trial.number))
            self.handed_out += size
            return batching.encode(self._members(trial_id))
        new = trial_id not in self._ot_trials
        if self.to_adopt and new:
            self._ot_trials[trial_id] = self._adopt(self.to_adopt.pop(0))
        params = super().suggest(trial_id)
        if params is not None:
            self.handed_out += int(new)
            ot_trial = self._ot_trials[trial_id]
            params["__number"] = ot_trial.number
            self._tie(ot_trial, trial_id, trial_id)
        return params

    def _next_trial(self) -> optuna.Trial:
        """An adopted study trial (asked before a crash), else a newly asked one."""
        if self.to_adopt:
            return self._adopt(self.to_adopt.pop(0))
        return self.study.ask(fixed_distributions=self._space)

    def _members(self, trial_id: str) -> list[dict[str, Any]]:
        return [{"number": t.number, "params": dict(t.params)} for t in self._batches[trial_id]]

    @staticmethod
    def _tie(ot_trial: optuna.Trial, tune_trial_id: str, directory: str) -> None:
        """The study trial's Tune trial and directory (``trials/<dir>``), as user attributes."""
        try:
            ot_trial.set_user_attr("tune_trial_id", tune_trial_id)
            ot_trial.set_user_attr("trial_dir", f"trials/{directory}")
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # an adopted orphan told before the crash keeps its first Tune id

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._batches:  # a batch's members report nothing to Optuna
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        if trial_id in self._batches:
            # each member: its metrics in the final report, else its ledger record (a batch
            # that failed after some members finished), else FAIL
            by_number = batching.results_by_number(result)
            for ot_trial in self._batches[trial_id]:
                member = by_number.get(ot_trial.number) or self._recorded(ot_trial.number)
                if member is not None:
                    self.sizer.observe(member.get("seconds", math.nan))
                self._tell(ot_trial, member, error=member is None)
        elif (ot_trial := self._ot_trials.get(trial_id)) is not None:
            self.sizer.observe((result or {}).get("seconds", math.nan))
            self._tell(ot_trial, result, error=error)
        else:
            return
        self._completed_trials.add(trial_id)

    def _recorded(self, number: int) -> dict[str, Any] | None:
        record = None if self.ledger is None else self.ledger.done_by_number(number)
        return None if record is None else tune_metrics(record, done=True, generation=0)

    def _tell(self, ot_trial: optuna.Trial, result: dict | None, *, error: bool) -> None:
        stored = self.storage.get_trial(ot_trial._trial_id)
        if stored.state.is_finished():  # told before a crash; nothing to tell again
            return
        result = result or {}
        ot_trial.set_user_attr("status", str(result.get("status") or "failed"))
        if "seed" in result:
            ot_trial.set_user_attr("seed", result["seed"])
        # objectives = means over the seeds, constraint = upper bound of the gap - tolerance:
        # the same code as the search benchmark (sweep.search.answer.tell)
        tell(self.study, ot_trial, result, metrics=list(self.metric), tolerance=self.tolerance,
             error=error)

    # ---------------------------------------------------------------- crash recovery
    def _adopt(self, number: int) -> optuna.Trial:
        """Study trial ``number`` (asked before a crash), to be handed out again.

        A trial the driver died asking has only some of its params (Optuna stores one at a
        time); it never ran (Tune gets a trial's config once all are set). The sampler fills
        in the rest, as ``ask`` would have: left out, the trial ran on the base config's
        values there, a duplicate of another trial, and its own config never ran (seen in the
        fault drill: ``{'recursion.regime': 'replace'}`` without its ``real_fraction``).
        """
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        missing = {k: d for k, d in self._space.items() if k not in frozen.params}
        if missing and not frozen.state.is_finished():
            self.study.sampler.before_trial(self.study, frozen)  # e.g. its grid point, if unset
            for name, dist in missing.items():
                _suggest(trial, name, dist)
        return trial


def _suggest(trial: optuna.Trial, name: str, dist: Any) -> Any:
    """``trial``'s value of ``name`` from the sampler (Optuna's public suggest_* API)."""
    d = optuna.distributions
    if isinstance(dist, d.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, d.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"{name}: unsupported distribution {type(dist).__name__}")


def build_searcher(config: ChainConfig, spec: SearchSpec, run_dir: Path, *,
                   resume: bool = False, adopt: Sequence[int] = (), total: int | None = None,
                   ) -> ConstrainedOptunaSearch:
    """The searcher of the sweep in ``run_dir``.

    A new sweep records the study's first trial number of this sweep; ``resume=True`` reads
    it back, hands out the study trials ``adopt`` (asked before a crash, their result not in
    the ledger) before asking new ones, and reseeds the sampler so that it does not replay
    the configs it suggested before the crash. ``total``: the Optuna trials to hand out
    (adopted + new), in Tune trials of ``search.batch`` of them; a member of a batch that
    failed after some members finished is told its ``done`` record in RUN_DIR's ledger.
    """
    storage = open_storage(run_dir, create=True)  # RUN_DIR/optuna.journal (older: optuna.db)
    marker = run_dir / FIRST_NUMBER_FILE
    if resume and marker.is_file():
        first = int(marker.read_text())
    else:
        try:
            first = len(optuna.load_study(study_name=config.name, storage=storage).trials)
        except KeyError:
            first = 0
        write_text(marker, str(first))
    seed = spec.sampler_seed if spec.sampler_seed is not None else config.seed
    sampler = make_sampler(spec, seed)
    if resume:
        sampler.reseed_rng()
    return ConstrainedOptunaSearch(
        space=spec.distributions(), objectives=dict(spec.objectives),
        sampler=sampler, study_name=config.name, storage=storage,
        tolerance=config.collapse.tolerance, first_number=first, adopt=adopt, total=total,
        batch=spec.batch, concurrency=spec.concurrency, ledger=Ledger(run_dir))
