"""Sweeps on Ray Tune + Optuna: the only module (with the CLI) that imports Ray.

``run_sweep(config)`` searches ``config.search.space`` with a multi-objective Optuna
sampler; each trial is one chain (``sweep.search.trial.run_trial``) run by a Tune function
trainable that checkpoints every generation and reports at most every 2 s. The study lives in
``RUN_DIR/optuna.db`` (study name = run name); the ledger (``sweep.rundir.ledger``) makes a
resumed sweep run every trial exactly once.

    python -m sweep.search.driver run CONFIG [--name N] [--storage DIR] [--address A] [--quiet]
    python -m sweep.search.driver resume RUN_DIR
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sweep.config import ChainConfig, ConfigError, dump_config, load_config, trial_config
from sweep.files.atomic import write_text
from sweep.rundir.ledger import Ledger
from sweep.rundir.results import (
    best_feasible,
    results_frame,
    sweep_summary,
    write_results,
    write_summary,
)
from sweep.search.space import SearchSpec, validate_search
from sweep.search.trial import run_trial

TUNE_DIR = "tune"  # Tune's experiment state: RUN_DIR/tune
FIRST_NUMBER_FILE = "first_trial_number"  # the study's first trial of this sweep
PRUNE_AFTER_S = 30.0  # a finished trial's Tune checkpoints are deleted after this long
# results.parquet, summary.json and the sweep's TensorBoard board (a matplotlib Pareto plot)
# are redrawn at most this often while trials finish, and at the end: the driver shares the
# CPUs with the trials, and redrawing after every short trial cost more than the trial.
REFRESH_EVERY_S = 5.0
BOARD_EVERY_S = 30.0  # the Pareto image in RUN_DIR/tb: ~0.5 s of driver CPU per drawing
# Tune saves its experiment state every ~10 s by default; the ledger covers the gap, and a
# 1 s period keeps the number of trials to reconcile after a crash small.
_DRIVER_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1", "RAY_AIR_NEW_OUTPUT": "0",
               "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
               "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}

#: Set by run_sweep / resume_sweep for the progress callback.
_DRIVER: dict[str, Any] = {}


def _driver() -> dict[str, Any]:
    # Tune cloudpickles the callback (a local class) with copies of the globals it names;
    # a module-level function is pickled by reference, so this returns the live state.
    return _DRIVER


# --------------------------------------------------------------------------- trainable
def _trainable(config: dict[str, Any]) -> None:
    import ray
    from ray import tune

    params = {k: v for k, v in config.items() if not k.startswith("__")}
    ctx = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
    checkpoint = tune.get_checkpoint()

    def report(metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
        ckpt = tune.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir is not None else None
        tune.report(metrics, checkpoint=ckpt)

    if checkpoint is None:
        run_trial(Path(config["__run_dir"]), params, trial_id=tune.get_context().get_trial_id(),
                  number=int(config.get("__number", -1)), node=node, report=report,
                  cpus=float(config.get("__cpus", 1)))
        return
    with checkpoint.as_directory() as restored:
        run_trial(Path(config["__run_dir"]), params, trial_id=tune.get_context().get_trial_id(),
                  number=int(config.get("__number", -1)), node=node, report=report,
                  restored=Path(restored), cpus=float(config.get("__cpus", 1)))


# --------------------------------------------------------------------------- searcher
def _searcher_class() -> type:
    import optuna
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class ConstrainedOptunaSearch(OptunaSearch):
        """OptunaSearch + the feasibility constraint, FAIL for failed chains, crash recovery.

        - ``quality_gap - tolerance <= 0`` is set on every finished trial (set_constraint).
        - a failed / diverged chain is told FAIL (never left RUNNING).
        - after a restore, study trials the lost Tune state never heard of (asked or
          finished after its last save) are handed out again before new ones are asked,
          so the study ends with exactly ``trials`` trials and no chain runs twice.
        """

        def __init__(self, *args: Any, tolerance: float, first_number: int, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._tolerance = tolerance
            self._first_number = first_number
            self._adopt = False

        def restore(self, checkpoint_path: str) -> None:
            super().restore(checkpoint_path)
            self._adopt = True
            # The pickled sampler's RNG is as old as Tune's last save: without a reseed it
            # replays the configs of the trials asked after it (already in the study).
            self._ot_study.sampler.reseed_rng()

        def suggest(self, trial_id: str) -> dict | None:
            if self._adopt and trial_id not in self._ot_trials:
                self._adopt_orphan(trial_id)
            params = super().suggest(trial_id)
            if params is not None:
                params["__number"] = self._ot_trials[trial_id].number
            return params

        def _adopt_orphan(self, trial_id: str) -> None:
            known = {t.number for t in self._ot_trials.values()}
            for frozen in self._ot_study.get_trials(deepcopy=False):
                if frozen.number >= self._first_number and frozen.number not in known:
                    self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, frozen._trial_id)
                    return
            self._adopt = False  # none left: ask the sampler from now on

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is None or trial_id in self._completed_trials:
                return
            stored = self._ot_study._storage.get_trial(ot_trial._trial_id)
            if stored.state.is_finished():  # told before a crash; nothing to tell again
                self._completed_trials.add(trial_id)
                return
            values = [(result or {}).get(m) for m in self.metric]
            finite = all(isinstance(v, (int, float)) and math.isfinite(v) and abs(v) < 1e299
                         for v in values)
            if error or not result or result.get("failed") or not finite:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
                self._completed_trials.add(trial_id)
                return
            if "constraints:quality_gap" not in stored.system_attrs:  # set before a crash?
                ot_trial.set_constraint("quality_gap", float(result["quality_gap"]) - self._tolerance)
            super().on_trial_complete(trial_id, result, error)

    return ConstrainedOptunaSearch


def _sampler(spec: SearchSpec, seed: int) -> Any:
    import optuna.samplers as s

    if spec.sampler == "grid":
        return s.GridSampler(spec.grid_values(), seed=seed)
    if spec.sampler == "tpe":
        # constant_liar: trials still running count as bad guesses, so that parallel
        # workers do not all get the same suggestion.
        return s.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                            n_startup_trials=min(10, spec.trials // 3 + 1))
    if spec.sampler == "gp":
        return s.GPSampler(seed=seed, n_startup_trials=min(10, spec.trials // 3 + 1))
    if spec.sampler == "random":
        return s.RandomSampler(seed=seed)
    return s.NSGAIISampler(seed=seed, population_size=max(4, min(50, spec.trials // 4)))


def _searcher(config: ChainConfig, spec: SearchSpec, run_dir: Path, *,
              first_number: int | None = None) -> Any:
    """The searcher; ``first_number``: the study's first trial of this sweep (for resume)."""
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{run_dir.resolve() / 'optuna.db'}")
    if first_number is not None:
        first = first_number
    else:
        try:
            first = len(optuna.load_study(study_name=config.name, storage=storage).trials)
        except KeyError:
            first = 0
        write_text(run_dir / FIRST_NUMBER_FILE, str(first))
    seed = spec.sampler_seed if spec.sampler_seed is not None else config.seed
    return _searcher_class()(
        space=spec.distributions(), metric=list(spec.objectives), mode=list(spec.objectives.values()),
        sampler=_sampler(spec, seed), study_name=config.name, storage=storage,
        tolerance=config.collapse.tolerance, first_number=first)


# --------------------------------------------------------------------------- progress
def _callback_class() -> type:
    from ray.tune import Callback

    class SweepProgress(Callback):
        """Driver-side: results.parquet + SweepBoard as trials finish, a rich status line."""

        def setup(self, **info: Any) -> None:
            self._done_dirs: list[tuple[float, str | None]] = []
            self._stale = False  # trials finished since results.parquet was last written
            self._refreshed = self._drawn = 0.0
            self._live = None
            self._board = None
            self._last = 0.0
            if _driver().get("progress"):
                from rich.console import Console
                from rich.live import Live

                self._live = Live(console=Console(stderr=True), auto_refresh=False, transient=False)
                self._live.start()
            try:
                from sweep.observe.board import SweepBoard

                self._board = SweepBoard(_driver()["run_dir"])
            except Exception:  # noqa: BLE001 - the board is optional (module may be absent)
                self._board = None

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            if time.time() - self._last > 1.0:
                self._render(trials)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._done_dirs.append((time.time(), trial.path))
            self._stale = True
            self._maybe_refresh(trials)

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            self._prune(older_than=PRUNE_AFTER_S)
            self._maybe_refresh(trials)

        def _maybe_refresh(self, trials: list) -> None:
            if self._stale and time.time() - self._refreshed >= REFRESH_EVERY_S:
                self._refresh_results(trials)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            params = {k: v for k, v in trial.config.items() if not k.startswith("__")}
            try:
                key = trial_config(_driver()["config"], params).fingerprint()
            except ConfigError:
                key = trial.trial_id
            Ledger(_driver()["run_dir"]).append(
                "error", key=key, trial_id=trial.trial_id, params=params,
                number=int(trial.config.get("__number", -1)), error=str(trial.error_file or ""))
            self._stale = True
            self._maybe_refresh(trials)

        def _prune(self, *, older_than: float) -> None:
            # Tune keeps every checkpoint while a trial runs: its saved experiment state (a
            # second or more old) may name any of them, and a resumed trial whose named
            # checkpoint was deleted cannot restart. Once a trial has been finished for a
            # while, the state says so and its checkpoints (the ledger has the result) go.
            now = time.time()
            keep = []
            for finished, path in self._done_dirs:
                if now - finished < older_than:
                    keep.append((finished, path))
                elif path and os.path.isdir(path):
                    for ckpt in Path(path).glob("checkpoint_*"):
                        shutil.rmtree(ckpt, ignore_errors=True)
            self._done_dirs = keep

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self._prune(older_than=0.0)
            self._refresh_results(trials, final=True)
            if self._live is not None:
                self._live.stop()
            if self._board is not None:
                self._board.close()

        def _refresh_results(self, trials: list, *, final: bool = False) -> None:
            self._stale, self._refreshed = False, time.time()
            df = _write_results()
            if self._board is not None and (final or time.time() - self._drawn >= BOARD_EVERY_S):
                self._drawn = time.time()
                try:
                    self._board.update(df)
                except Exception as exc:  # noqa: BLE001 - a plot must not stop a sweep
                    print(f"sweep board: {exc}", file=sys.stderr)
            self._render(trials, df)

        def _render(self, trials: list, df: Any = None) -> None:
            self._last = time.time()
            if self._live is None:
                return
            from rich.text import Text

            if df is None:
                df = _write_results(write=False)
            total = _driver()["total"]
            done = int((df["status"] != "running").sum())
            failed = int((~df["status"].isin(["finished", "stopped_collapsed", "running"])).sum())
            running = sum(1 for t in trials if t.status == "RUNNING")
            elapsed = time.time() - _driver()["started"]
            new = max(done - _driver()["done_before"], 0)
            eta = elapsed / new * max(total - done, 0) if new else float("nan")
            best = best_feasible(df, tolerance=_driver()["tolerance"])
            best_txt = "none yet" if best is None else (
                f"#{int(best['number'])} gap {best['quality_gap']:.3f} flops "
                f"{best['total_flops']:.3g} " + " ".join(
                    f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in best.items()
                    if str(k).startswith("param.")))
            line = (f"[bold]{_driver()['name']}[/] trials {done}/{total} done, {running} running, "
                    f"{failed} failed | elapsed {elapsed:.0f}s ETA "
                    f"{'?' if math.isnan(eta) else f'{eta:.0f}s'} | best feasible: {best_txt}")
            self._live.update(Text.from_markup(line), refresh=True)

    return SweepProgress


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _write_results(*, write: bool = True) -> Any:
    cfg: ChainConfig = _DRIVER["config"]
    spec: SearchSpec = _DRIVER["spec"]
    df = results_frame(_DRIVER["run_dir"], space=list(spec.space), objectives=list(spec.objectives))
    if write:
        write_results(_DRIVER["run_dir"], df)
        write_summary(_DRIVER["run_dir"], sweep_summary(
            df, tolerance=cfg.collapse.tolerance, wall_seconds=time.time() - _DRIVER["started"]))
    return df


# --------------------------------------------------------------------------- driver
def _init_ray(address: str | None) -> bool:
    """Connect (address) or start a local Ray; True when this call started it."""
    import ray

    for key, value in _DRIVER_ENV.items():
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


def _first_number(run_dir: Path) -> int | None:
    path = run_dir / FIRST_NUMBER_FILE
    return int(path.read_text()) if path.is_file() else None


def _resources(config: ChainConfig) -> dict[str, float]:
    res = config.resources or {}
    return {"cpu": float(res.get("cpu", 1)), "gpu": float(res.get("gpu", 0))}


def _fit(config: ChainConfig, spec: SearchSpec, run_dir: Path, *, address: str | None,
         progress: bool, restore: bool) -> Path:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    _DRIVER.update(config=config, spec=spec, run_dir=run_dir, progress=progress,
                   name=config.name, total=spec.num_trials, tolerance=config.collapse.tolerance,
                   started=time.time())
    _DRIVER["done_before"] = int((_write_results(write=False)["status"] != "running").sum())
    started_ray = _init_ray(address)
    res = _resources(config)
    trainable = tune.with_resources(_trainable, res)
    tune_path = run_dir / TUNE_DIR
    try:
        if restore and tune.Tuner.can_restore(str(tune_path)):
            tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_errored=True)
        else:
            searcher = _searcher(config, spec, run_dir, first_number=_first_number(run_dir)
                                 if restore else None)
            if restore:  # the driver died before Tune saved anything: adopt the study's trials
                searcher._adopt = True
            tuner = tune.Tuner(
                trainable,
                param_space={"__run_dir": str(run_dir.resolve()), "__cpus": res["cpu"]},
                tune_config=tune.TuneConfig(
                    search_alg=searcher, num_samples=spec.num_trials,
                    max_concurrent_trials=spec.concurrency, reuse_actors=True,
                    trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(
                    name=TUNE_DIR, storage_path=str(run_dir.resolve()), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=2),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                    # JSON/CSV keep Tune's ResultGrid readable; no TBX (the project logs its own).
                    callbacks=[_callback_class()(), JsonLoggerCallback(), CSVLoggerCallback()]))
        tuner.fit()
    finally:
        _write_results()
        if started_ray:
            import ray

            ray.shutdown()
    return run_dir


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
    return _fit(config, spec, run_dir, address=address, progress=progress, restore=False)


def resume_sweep(run_dir: Path, *, address: str | None = None, progress: bool = True) -> Path:
    """Continue an interrupted sweep: done trials are not rerun, running ones continue."""
    run_dir = Path(run_dir)
    if not (run_dir / "sweep.yaml").is_file():
        raise ConfigError(f"RUN_DIR: {run_dir} is not a sweep directory (no sweep.yaml)")
    config = load_config(run_dir / "sweep.yaml")
    spec = validate_search(config)
    return _fit(config, spec, run_dir, address=address, progress=progress, restore=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sweep.search.driver")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--name")
    p.add_argument("--storage", default="./runs")
    p.add_argument("--address")
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("resume")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--address")
    p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            config = load_config(args.config, args.overrides)
            out = run_sweep(config, name=args.name, storage=args.storage, address=args.address,
                            progress=not args.quiet)
        else:
            out = resume_sweep(args.run_dir, address=args.address, progress=not args.quiet)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
