"""Sweeps on Ray Tune + Optuna: start or resume one, the trainable that runs its trials.

``run_sweep(config)`` searches ``config.search.space`` with a multi-objective Optuna sampler
(``sweep.search.searcher``); each trial is one chain (``sweep.search.trial.run_trial``) run
by the Tune function trainable ``tune_trainable``, which checkpoints every generation and
reports at most every 2 s. The study lives in ``RUN_DIR/optuna.db`` (study name = run name);
the ledger (``sweep.rundir.ledger``) makes a resumed sweep run every trial exactly once. The
command line is ``collapse-sweep run | resume`` (``sweep.cli``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from sweep.config import ChainConfig, ConfigError, dump_config, load_config
from sweep.files.atomic import write_text
from sweep.search.progress import SweepProgress, SweepSettings, write_sweep_results
from sweep.search.searcher import build_searcher
from sweep.search.space import validate_search
from sweep.search.trial import run_trial

TUNE_DIR = "tune"  # Tune's experiment state: RUN_DIR/tune
# Tune saves its experiment state every ~10 s by default; the ledger covers the gap, and a
# 1 s period keeps the number of trials to reconcile after a crash small.
DRIVER_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1", "RAY_AIR_NEW_OUTPUT": "0",
              "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
              "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


# --------------------------------------------------------------------------- trainable
def tune_trainable(config: dict[str, Any]) -> None:
    """The Tune function trainable: one trial = ``run_trial`` with Tune's report/checkpoint."""
    params = {k: v for k, v in config.items() if not k.startswith("__")}
    ctx = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
    run = dict(run_dir=Path(config["__run_dir"]), params=params,
               trial_id=tune.get_context().get_trial_id(), number=int(config.get("__number", -1)),
               node=node, report=_tune_report, cpus=float(config.get("__cpus", 1)))
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        run_trial(**run)
        return
    with checkpoint.as_directory() as restored:
        run_trial(**run, restored=Path(restored))


def _tune_report(metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
    ckpt = tune.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir is not None else None
    tune.report(metrics, checkpoint=ckpt)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# --------------------------------------------------------------------------- driver
def init_ray(address: str | None) -> bool:
    """Connect (address) or start a local Ray; True when this call started it."""
    for key, value in DRIVER_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        # Local: no dashboard (its job API runs code for whoever reaches it); Ray's token
        # auth stays on for the GCS / raylet ports.
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    return True


def trial_resources(config: ChainConfig) -> dict[str, float]:
    res = config.resources or {}
    return {"cpu": float(res.get("cpu", 1)), "gpu": float(res.get("gpu", 0))}


def _new_tuner(settings: SweepSettings, trainable: Any, *, resume: bool) -> tune.Tuner:
    config, spec, run_dir = settings.config, settings.spec, settings.run_dir
    # resume: the driver died before Tune saved anything; the searcher adopts the study's trials
    searcher = build_searcher(config, spec, run_dir, resume=resume)
    return tune.Tuner(
        trainable,
        param_space={"__run_dir": str(run_dir.resolve()),
                     "__cpus": trial_resources(config)["cpu"]},
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=spec.num_trials,
            max_concurrent_trials=spec.concurrency, reuse_actors=True,
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=str(run_dir.resolve()), verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            # JSON/CSV keep Tune's ResultGrid readable; no TBX (the project logs its own).
            callbacks=[SweepProgress(settings), JsonLoggerCallback(), CSVLoggerCallback()]))


def _fit(settings: SweepSettings, *, address: str | None, resume: bool) -> Path:
    started = time.time()
    started_ray = init_ray(address)
    trainable = tune.with_resources(tune_trainable, trial_resources(settings.config))
    tune_path = str(settings.run_dir / TUNE_DIR)
    try:
        if resume and tune.Tuner.can_restore(tune_path):
            tuner = tune.Tuner.restore(tune_path, trainable=trainable, resume_errored=True)
        else:
            tuner = _new_tuner(settings, trainable, resume=resume)
        tuner.fit()
    finally:
        write_sweep_results(settings, wall_seconds=time.time() - started)
        if started_ray:
            ray.shutdown()
    return settings.run_dir


def run_sweep(config: ChainConfig, *, name: str | None = None, storage: str = "./runs",
              address: str | None = None, progress: bool = True) -> Path:
    """Run the sweep of ``config.search``; returns RUN_DIR = storage/name.

    An existing RUN_DIR of the same name is extended: its Optuna study is loaded and the
    new trials add to it (trials already done, by config, are not run again).
    """
    if name is not None:
        config = load_config(config.model_dump(mode="json"), overrides={"name": name})
    spec = validate_search(config)  # every config error before Ray starts
    if "://" in storage:
        raise ConfigError(f"--storage: {storage!r}: use a local or shared (NFS) directory")
    run_dir = Path(storage) / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "sweep.yaml", dump_config(config))
    tune_path = run_dir / TUNE_DIR
    if tune_path.exists():  # a new sweep into an old run: keep the old Tune state aside
        tune_path.rename(run_dir / f"{TUNE_DIR}-{int(time.time())}")
    settings = SweepSettings(config=config, spec=spec, run_dir=run_dir, progress=progress)
    return _fit(settings, address=address, resume=False)


def resume_sweep(run_dir: Path, *, address: str | None = None, progress: bool = True) -> Path:
    """Continue an interrupted sweep: done trials are not rerun, running ones continue.

    When Tune's saved state is found, its pickled callback draws the status line when
    stderr is a terminal (``progress`` then only applies to a sweep Tune never saved).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "sweep.yaml").is_file():
        raise ConfigError(f"RUN_DIR: {run_dir} is not a sweep directory (no sweep.yaml)")
    config = load_config(run_dir / "sweep.yaml")
    settings = SweepSettings(config=config, spec=validate_search(config), run_dir=run_dir,
                             progress=progress)
    return _fit(settings, address=address, resume=True)
