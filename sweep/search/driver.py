"""Sweeps on Ray Tune + Optuna: start or resume one, the trainable that runs its trials.

``run_sweep(config)`` searches ``config.search.space`` with an Optuna sampler (default: the
cost-ordered ``cheapest``, ``sweep.search.cheapest``; ``sweep.search.searcher``); each trial is one chain (``sweep.search.trial.run_trial``) run
by the Tune function trainable ``tune_trainable``, which checkpoints every generation and
reports at most every 2 s. The study lives in ``RUN_DIR/optuna.journal`` (study name = run name);
the ledger (``sweep.rundir.ledger``) makes a resumed sweep run every trial exactly once.
After the search, ``confirm`` re-runs the cheapest configs whose mean gap was within the
tolerance on unseen seeds (Tune
trials of stage ``confirm``; ``sweep.rundir.confirmation`` picks them and the answer). The
command line is ``collapse-sweep run | resume`` (``sweep.cli``).

``storage`` is a local or shared directory, or a URI (``s3://bucket/prefix``): then the
driver works in its local cache of the run (``sweep.rundir.storage``), Tune keeps its state
at the URI, the sweep config travels with each trial, the ledger is kept by an actor on the
driver's node (``sweep.search.remote``), the trials upload their own files, and the driver
uploads what it owns as it changes and downloads the trials' files at the end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from sweep.config import ChainConfig, ConfigError, dump_config, load_config, trial_config
from sweep.files.atomic import write_text
from sweep.observe.status import LOG_FILE, phase, route_logs
from sweep.rundir.confirmation import candidate_params, confirmation_candidates
from sweep.rundir.health import HEALTH_FILE, health_warning, write_health
from sweep.rundir.integrity import (
    FIRST_NUMBER_FILE,
    finished_trials,
    recover_starts,
    resume_plan,
    trials_with_result,
)
from sweep.rundir.layout import SWEEP_FILE, check_new_run, require_sweep_dir, run_exists_error
from sweep.rundir.ledger import Ledger
from sweep.rundir.lock import LOCK_FILE, driver_lock
from sweep.rundir.storage import RunStorage, cache_dir, is_uri, join, pull_run
from sweep.search.loggers import TrialLoggers, check_loggers
from sweep.search.progress import SweepProgress, SweepSettings, write_sweep_results
from sweep.search.rayinit import (
    WARM_IMPORTS,
    import_in_background,
    interrupt_held,
    ray_start_seconds,
    start_ray,
)
from sweep.search.searcher import build_searcher
from sweep.search.space import validate_search
from sweep.search.trainable import tune_trainable
from sweep.search.trial import trial_key, trial_seeds

TUNE_DIR = "tune"  # Tune's experiment state: RUN_DIR/tune (written, never read back)
CONFIRM_TUNE_DIR = "tune-confirm"  # ... and of the confirmation stage (never read back)
# Tune warns when a callback step takes > 0.5 s (TUNE_WARN_THRESHOLD_S, read when ray.tune is
# imported); the sweep board's redraw (every 30 s, throttled on purpose) takes about 1-2 s
# on 2 busy cores, and that warning broke into the status line.
SLOW_CALLBACK_WARN_S = 3.0


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# --------------------------------------------------------------------------- driver
def init_ray(address: str | None, *, runtime_env: dict[str, Any] | None = None) -> bool:
    """Tune's driver settings, then connect (address) or start a local Ray (``start_ray``,
    which also sets ``DRIVER_ENV``); True when this process started it.

    ``runtime_env``: for a local Ray, the job's runtime environment (the benchmark's probe)."""
    if "TUNE_WARN_THRESHOLD_S" not in os.environ:
        from ray.tune.utils.util import warn_if_slow

        warn_if_slow.DEFAULT_THRESHOLD = SLOW_CALLBACK_WARN_S
    _skip_callback_telemetry()
    return start_ray(address, runtime_env=runtime_env)


def _skip_callback_telemetry() -> None:
    """Ray Tune's usage telemetry names a run's callbacks by comparing them with every tracker
    integration it ships, which imports mlflow and wandb when they are installed: ~1 s of the
    driver between ``Tuner.fit`` and the first trial (measured: benchmarks/sweep_overhead.py's
    profile). The sweep's callbacks are its own; Ray's usage record goes without them."""
    from ray.air._internal import usage

    if hasattr(usage, "tag_callbacks"):
        usage.tag_callbacks = lambda callbacks: False


def trial_resources(config: ChainConfig) -> dict[str, float]:
    res = config.resources or {}
    return {"cpu": float(res.get("cpu", 1)), "gpu": float(res.get("gpu", 0))}


class _NoTuneRestoreHint(logging.Filter):
    """Tune's Ctrl-C messages name ``Tuner.restore``, which this project never uses."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "Tuner.restore" not in text and "ending Ray Tune run" not in text


class SweepInterrupted(Exception):
    """The sweep stopped before all its trials finished (Ctrl-C); resume continues it."""

    def __init__(self, run_dir: Path, done: int, total: int) -> None:
        super().__init__(f"interrupted: {done} of {total} trials done")
        self.run_dir, self.done, self.total = run_dir, done, total


def trial_space(settings: SweepSettings, *, driver_pid: int | None,
                ledger: str | None) -> dict[str, Any]:
    """What every trial gets besides its params: where the run is, the sweep config (so
    that no trial reads the driver's disk), its CPU share, the driver to watch, and on
    object storage the URI and the name of the ledger keeper."""
    config, run_dir = settings.config, settings.run_dir
    # The run directory's place is taken from here each time a driver starts, never from
    # a saved state: a moved or copied run directory resumes where it now is.
    space = {"__run_dir": str(run_dir.resolve()), "__sweep": dump_config(config),
             "__cpus": trial_resources(config)["cpu"], "__driver_pid": driver_pid}
    if settings.storage:
        space.update(__storage=settings.storage, __ledger=ledger)
    return space


def _tune_storage(settings: SweepSettings) -> str:
    return settings.storage or str(settings.run_dir.resolve())


def _new_tuner(settings: SweepSettings, trainable: Any, *, resume: bool, adopt: list[int],
               num_samples: int, driver_pid: int | None, ledger: str | None = None) -> tune.Tuner:
    config, spec, run_dir = settings.config, settings.spec, settings.run_dir
    searcher = build_searcher(config, spec, run_dir, resume=resume, adopt=adopt,
                              total=num_samples)
    if settings.storage:  # where this sweep's trials start in the study, before any trial
        RunStorage(settings.storage).put(run_dir / FIRST_NUMBER_FILE, FIRST_NUMBER_FILE)
    return tune.Tuner(
        trainable,
        param_space=trial_space(settings, driver_pid=driver_pid, ledger=ledger),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=num_samples,
            max_concurrent_trials=spec.concurrency, reuse_actors=True,
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=_tune_storage(settings), verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            # JSON/CSV keep Tune's ResultGrid readable; no TBX (the project logs its own).
            callbacks=[SweepProgress(settings), JsonLoggerCallback(), CSVLoggerCallback(),
                       *_trackers(config, run_dir, settings.storage)]))


def _trackers(config: ChainConfig, run_dir: Path, storage: str | None) -> list[Any]:
    """W&B / MLflow callbacks for ``config.loggers`` (TensorBoard is written by the trials)."""
    names = check_loggers(config)
    return [TrialLoggers(config, run_dir, names, storage=storage)] if names else []


def _fit(settings: SweepSettings, *, address: str | None, resume: bool) -> Path:
    """Run the trials the sweep still needs; SweepInterrupted when it stopped short.

    Nothing Tune wrote is read back (its state is pickles: loading them would run whatever
    code the run directory holds): a resumed sweep is rebuilt from sweep.yaml, the ledger,
    the Optuna study and the trials' own checkpoints. Ray's and Optuna's log records go to
    RUN_DIR/driver.log while it runs (warnings also to the terminal).
    """
    restore_logs = route_logs(settings.run_dir)
    try:
        return _fit_routed(settings, address=address, resume=resume)
    finally:
        restore_logs()


def _fit_routed(settings: SweepSettings, *, address: str | None, resume: bool) -> Path:
    started = time.time()
    say = settings.progress is not False
    run_dir, total = settings.run_dir, settings.spec.num_trials
    shutil.rmtree(run_dir / TUNE_DIR, ignore_errors=True)
    remote = RunStorage(settings.storage) if settings.storage else None
    if remote is not None:
        remote.delete(TUNE_DIR)
    if resume:
        recover_starts(run_dir, settings.config)  # a lost ledger: its trials' start records
        adopt, new = resume_plan(run_dir, settings.config, total)
    else:
        adopt, new = [], total
    started_ray = False
    trainable = tune.with_resources(tune_trainable, trial_resources(settings.config))
    ledger: str | None = None
    try:
        if adopt or new:
            with interrupt_held():  # raised once ray.init has returned (Ray stopped below)
                import_in_background(WARM_IMPORTS)
                started_ray = init_ray(address)
            ledger = _start_keeper(settings)
            route_logs(run_dir)  # ray.init re-installs Ray's own handler
            cpus = int(ray.cluster_resources().get("CPU", 0))
            phase(settings.config.name, f"Ray {'started' if started_ray else 'connected'} "
                  f"({cpus} CPUs) in {ray_start_seconds(started):.1f} s; Tune starts the trials "
                  f"(generation 0 is fit once and shared); Ray and Optuna logs: "
                  f"{run_dir / LOG_FILE}", enabled=say)
            tuner = _new_tuner(settings, trainable, resume=resume, adopt=adopt,
                               num_samples=len(adopt) + new,
                               driver_pid=os.getpid() if started_ray else None, ledger=ledger)
            tune_log = logging.getLogger("ray.tune.tune")
            hint = _NoTuneRestoreHint()
            tune_log.addFilter(hint)
            try:
                tuner.fit()
            finally:
                tune_log.removeFilter(hint)
        todo = ([] if finished_trials(run_dir, settings.config.name) < total
                else confirmations_to_run(settings))
        if todo:
            write_sweep_results(settings, wall_seconds=time.time() - started)
            started_ray = init_ray(address) or started_ray
            ledger = ledger or _start_keeper(settings)
            confirm(settings, trainable, todo, driver_pid=os.getpid() if started_ray else None,
                    ledger=ledger)
    finally:
        if remote is not None:  # the trials' tables and events, for analyze / report here
            pull_run(remote, run_dir, trials_only=True)
        write_sweep_results(settings, wall_seconds=time.time() - started)
        if ledger is not None:
            _stop_keeper(ledger)
        if started_ray:
            ray.shutdown()
    if finished_trials(run_dir, settings.config.name) < total:  # Tune returns early on Ctrl-C
        raise SweepInterrupted(run_dir, trials_with_result(run_dir, settings.config.name), total)
    return run_dir


_KEEPERS: dict[str, Any] = {}  # name -> handle: an actor lives while its handle does


def _start_keeper(settings: SweepSettings) -> str | None:
    """Object storage: the ledger keeper on this node (its name); else None."""
    if not settings.storage:
        return None
    from sweep.search.remote import start_keeper

    name, handle = start_keeper(settings.run_dir, settings.storage)
    _KEEPERS[name] = handle
    return name


def _stop_keeper(name: str) -> None:
    handle = _KEEPERS.pop(name, None)
    if handle is not None and ray.is_initialized():
        ray.kill(handle)


def confirmations_to_run(settings: SweepSettings) -> list[dict[str, Any]]:
    """The params of the ``search.confirm.top`` cheapest feasible configs whose confirmation
    on unseen seeds the ledger does not hold yet (a resumed sweep does not redo one)."""
    config, spec = settings.config, settings.spec
    if spec.confirm.top == 0:
        return []
    ledger = Ledger(settings.run_dir)
    todo = []
    for _, row in confirmation_candidates(settings.results(), spec.confirm.top,
                                              tolerance=config.collapse.tolerance).iterrows():
        params = candidate_params(row)
        cfg = trial_config(config, params)
        if ledger.done(trial_key(cfg, trial_seeds(config, cfg, stage="confirm"))) is None:
            todo.append(params)
    return todo


def confirm(settings: SweepSettings, trainable: Any, todo: list[dict[str, Any]], *,
            driver_pid: int | None = None, ledger: str | None = None) -> None:
    """Re-run ``todo`` (candidate params) on ``search.confirm.seeds`` unseen seeds each.

    One Tune trial per config (its chains in parallel within the trial's CPU share); one a
    killed driver left half-done resumes from its checkpoints (``RUN_DIR/confirm/<id>``).
    """
    spec, run_dir = settings.spec, settings.run_dir
    if settings.progress is not False:
        print(f"confirming the {len(todo)} cheapest feasible config(s) on {spec.confirm.seeds} "
              "unseen seeds each ...", file=sys.stderr, flush=True)
    shutil.rmtree(run_dir / CONFIRM_TUNE_DIR, ignore_errors=True)
    if settings.storage:
        RunStorage(settings.storage).delete(CONFIRM_TUNE_DIR)
    tuner = tune.Tuner(
        trainable,
        param_space={**trial_space(settings, driver_pid=driver_pid, ledger=ledger),
                     "__stage": "confirm",
                     "__params": tune.grid_search([json.dumps(p) for p in todo])},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=spec.concurrency,
                                    reuse_actors=True, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=CONFIRM_TUNE_DIR, storage_path=_tune_storage(settings), verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback()]))
    tuner.fit()


def run_sweep(config: ChainConfig, *, name: str | None = None, storage: str = "./runs",
              address: str | None = None, progress: bool = True, extend: bool = False,
              overwrite: bool = False) -> Path:
    """Run the sweep of ``config.search``; returns RUN_DIR = storage/name.

    A run directory that exists already is refused, unless ``extend`` (the same config and
    search space, ``search.trials`` more trials added to its study) or ``overwrite`` (it
    is emptied and the sweep starts over). One driver at a time per run directory.
    ``storage`` may be a URI (``s3://bucket/prefix``): the run is then ``storage/name`` there
    and RUN_DIR, returned, is this machine's cache of it (complete when the sweep ends).
    """
    if name is not None:
        config = load_config(config.model_dump(mode="json"), overrides={"name": name})
    spec = validate_search(config)  # every config error before Ray starts
    check_loggers(config)
    if extend and overwrite:
        raise ConfigError("--extend, --overwrite: choose one")
    if is_uri(storage):
        return _run_on_storage(config, spec, join(storage, config.name), address=address,
                               progress=progress, extend=extend, overwrite=overwrite)
    run_dir = Path(storage) / config.name
    exists = check_new_run(run_dir, extend=extend, overwrite=overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    with driver_lock(run_dir):  # the old sweep.yaml is read under the lock its driver holds
        if exists and extend:
            config = extended_config(load_config(run_dir / "sweep.yaml"), config, run_dir)
            spec = validate_search(config)
        if exists and overwrite:
            _empty(run_dir)
        write_text(run_dir / "sweep.yaml", dump_config(config))
        settings = SweepSettings(config=config, spec=spec, run_dir=run_dir, progress=progress)
        if spec.check and not (run_dir / HEALTH_FILE).is_file():  # --extend keeps the first
            sweep_health_check(config, run_dir, progress=progress)
        return _fit(settings, address=address, resume=exists and extend)


def sweep_health_check(config: ChainConfig, run_dir: Path, *, progress: bool = True
                       ) -> dict[str, Any]:
    """Run the health check on the sweep's base config, record it in RUN_DIR/health.json.

    A failure does not stop the sweep (the user may study an undertrained regime on
    purpose); it is printed loudly now and flagged by ``analyze`` and the report.
    """
    from sweep.engine.health import health_check

    started = time.time()
    phase(config.name, "health check: is model 0 converged, is the gap's noise below the "
          "tolerance? (search.check: false skips it)", enabled=progress)
    import torch

    # A trial's CPU share of threads, as the trials get: torch's default (every core) made
    # the check's small models ~10x slower in CPU time on a loaded machine (threads spin).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(trial_resources(config)["cpu"])))
    try:
        report = health_check(config, progress=(lambda m: phase(config.name, m)) if progress
                              else None).to_dict()
    except Exception as exc:  # noqa: BLE001 - the sweep itself may still run; say so loudly
        report = {"passed": False, "reason": f"the check could not run: "
                  f"{type(exc).__name__}: {exc}"}
    finally:
        torch.set_num_threads(threads)
    searched = [p for p in validate_search(config).space
                if not p.startswith(("recursion.", "curation.", "collapse."))]
    record = {**report, "seconds": round(time.time() - started, 2),
              "checked": "the base config (searched parameters at the config's own values)",
              "searched_not_checked": searched}
    if searched and report["passed"]:
        record["reason"] += (f"; checked at the base values only of {', '.join(searched)} "
                             "(other values may fail: `collapse-sweep check --set ...`)")
    write_health(run_dir, record)
    warning = health_warning(record)
    if warning:
        print(f"\nWARNING: {warning}\n", file=sys.stderr, flush=True)
    else:
        phase(config.name, f"health check passed in {record['seconds']:.0f} s: {record['reason']}",
              enabled=progress)
    return record


def _run_on_storage(config: ChainConfig, spec: Any, run_uri: str, *, address: str | None,
                    progress: bool, extend: bool, overwrite: bool) -> Path:
    """``run_sweep`` for a run at a URI; the driver works in its local cache of the run."""
    remote = RunStorage(run_uri)
    remote.check_writable()  # bucket, credentials, endpoint: one line before Ray starts
    exists = remote.exists(SWEEP_FILE)
    if exists and not (extend or overwrite):
        raise run_exists_error(run_uri)
    run_dir = cache_dir(run_uri)
    run_dir.mkdir(parents=True, exist_ok=True)
    with driver_lock(run_dir):
        _empty(run_dir)  # a cache of an earlier run at this URI is not this run
        if exists and extend:
            pull_run(remote, run_dir, checkpoints="unfinished")
            config = extended_config(load_config(run_dir / SWEEP_FILE), config, run_uri)
            spec = validate_search(config)
        elif exists:
            remote.delete()
        write_text(run_dir / SWEEP_FILE, dump_config(config))
        remote.put(run_dir / SWEEP_FILE, SWEEP_FILE)
        settings = SweepSettings(config=config, spec=spec, run_dir=run_dir, progress=progress,
                                 storage=run_uri)
        if spec.check and not (run_dir / HEALTH_FILE).is_file():  # --extend keeps the first
            sweep_health_check(config, run_dir, progress=progress)
        return _fit(settings, address=address, resume=exists and extend)


def extended_config(old: ChainConfig, new: ChainConfig, run_dir: Path | str) -> ChainConfig:
    """The old sweep with ``new.search.trials`` more trials; ConfigError unless the two agree
    on everything but the trial count, sampler and concurrency (and resources)."""
    free = ("trials", "sampler", "sampler_seed", "concurrency", "check", "batch")
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    for tree in (a, b):
        tree.pop("resources", None)
        for key in free:
            (tree.get("search") or {}).pop(key, None)
    if (a.get("search") or {}).get("space") != (b.get("search") or {}).get("space"):
        raise ConfigError(f"--extend: the search space differs from {run_dir / 'sweep.yaml'}; "
                          "extending needs the same space (use --overwrite or another --name)")
    if a != b:
        diff = _first_difference(a, b)
        raise ConfigError(f"--extend: {diff} differs from {run_dir / 'sweep.yaml'}; extending "
                          "needs the same config apart from search.trials, sampler, concurrency")
    before, added = validate_search(old).num_trials, validate_search(new)
    grid = added.grid_size  # None unless the extension searches with the grid sampler
    if grid is not None and before >= grid:
        raise ConfigError(f"--extend: {run_dir} has run all {grid} points of its grid already; "
                          "nothing to add (search another sampler with --set "
                          "search.sampler=cheapest, or widen the space under a new --name)")
    tree = new.model_dump(mode="json")
    tree["search"]["trials"] = before + added.num_trials
    if grid is not None:  # at most the grid's remaining points
        tree["search"]["trials"] = min(tree["search"]["trials"], grid)
    return load_config(tree)


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}".lstrip("."))
    return path or "config"


def _empty(run_dir: Path) -> None:
    """Remove what a run directory holds (``--overwrite``), except the lock being held."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def resume_sweep(run_dir: Path | str, *, address: str | None = None,
                 progress: bool = True) -> Path:
    """Continue an interrupted sweep: done trials are not rerun, running ones continue from
    their own checkpoints, a lost ledger is rebuilt. One driver at a time per run directory.
    ``run_dir`` may be the run's URI: it is downloaded into the local cache first."""
    if is_uri(run_dir):
        run_uri = str(run_dir).rstrip("/")
        remote = RunStorage(run_uri)
        if not remote.exists(SWEEP_FILE):
            raise ConfigError(f"RUN_DIR: {run_uri} is not a sweep directory (no {SWEEP_FILE})")
        local = cache_dir(run_uri)
        local.mkdir(parents=True, exist_ok=True)
        with driver_lock(local):
            pull_run(remote, local, checkpoints="unfinished")
            config = load_config(local / SWEEP_FILE)
            settings = SweepSettings(config=config, spec=validate_search(config), run_dir=local,
                                     progress=progress, storage=run_uri)
            return _fit(settings, address=address, resume=True)
    run_dir = require_sweep_dir(run_dir)
    config = load_config(run_dir / SWEEP_FILE)
    settings = SweepSettings(config=config, spec=validate_search(config), run_dir=run_dir,
                             progress=progress)
    with driver_lock(run_dir):
        return _fit(settings, address=address, resume=True)
