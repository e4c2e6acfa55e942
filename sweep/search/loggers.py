"""W&B and MLflow for sweeps: one run per trial with what TensorBoard gets.

``loggers: [tensorboard, wandb, mlflow]`` in the config. TensorBoard is written by each trial
(``sweep.observe.board``); W&B and MLflow are fed on the driver by a Tune callback,
``TrialLoggers``, when a trial finishes: every generation's metrics (step = generation,
tags as in TensorBoard: ``quality/real_nll``, ``tail/tail_nll``...; a trial with replicate
seeds logs their mean), the final metrics (``final/quality_gap``, ``final/total_flops``,
...), the searched parameters and the trial's identity (Tune trial id, Optuna number,
``trials/<id>``). Ray Tune's own ``WandbLoggerCallback`` / ``MLflowLoggerCallback`` only
see what a trial reports to Tune, which is throttled to one report per 2 s and carries the
running summary, not the per-generation table; this callback reads the table the trial
wrote (``trials/<id>/generations.parquet``) instead, in a background thread, so a slow
tracker never holds up the driver.

W&B runs offline (``RUN_DIR/wandb``, ``wandb sync`` uploads them) unless ``WANDB_MODE`` is
set or an API key is configured; ``WANDB_PROJECT`` names the project (default: the sweep
name). MLflow logs to ``MLFLOW_TRACKING_URI``, default ``sqlite:///RUN_DIR/mlflow.db``
(MLflow 3 refuses a plain ``./mlruns`` directory unless ``MLFLOW_ALLOW_FILE_STORE=true``).
"""

from __future__ import annotations

import importlib.util
import math
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from sweep.config import ChainConfig, ConfigError
from sweep.observe.board import FINAL_METRICS, tag_for
from sweep.search import batching

#: logger name -> (module that must import, the pip install that provides it)
EXTRAS = {"wandb": ("wandb", "pip install 'collapse-sweep[wandb]'"),
          "mlflow": ("mlflow", "pip install 'collapse-sweep[mlflow]'")}


def check_loggers(config: ChainConfig) -> list[str]:
    """The trackers a sweep feeds besides TensorBoard; ConfigError if one is not installed."""
    names = [n for n in config.loggers if n in EXTRAS]
    for name in names:
        module, install = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"loggers: {name} is not installed ({install})")
    return names


def generation_metrics(frame: pd.DataFrame) -> list[tuple[int, dict[str, float]]]:
    """(generation, {tag: value}) per generation; replicate seeds averaged; finite only."""
    if frame.empty or "generation" not in frame:
        return []
    numeric = frame.drop(columns=[c for c in ("seed", "trial_id") if c in frame])
    numeric = numeric.apply(pd.to_numeric, errors="coerce").groupby("generation").mean()
    # columns without a known group are the family's statistics (TensorBoard: model/...)
    family = frozenset(str(c) for c in numeric.columns)
    out = []
    for generation, row in numeric.iterrows():
        values = {tag_for(str(k), family): float(v) for k, v in row.items()
                  if isinstance(v, float) and math.isfinite(v)}
        out.append((int(generation), values))
    return out


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, tag in FINAL_METRICS.items():
        value = result.get(key)
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)) and math.isfinite(value) and abs(value) < 1e299:
            out[tag] = float(value)
    return out


class _Wandb:
    def __init__(self, config: ChainConfig, run_dir: Path) -> None:
        import wandb

        self.wandb = wandb
        self.run_dir = run_dir
        self.project = os.environ.get("WANDB_PROJECT") or config.name
        self.mode = os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") or _netrc_has("api.wandb.ai") else "offline")
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)

    def log(self, ident: dict[str, Any], params: dict[str, Any], gens: list, final: dict) -> None:
        run = self.wandb.init(project=self.project, group=self.run_dir.name, name=ident["trial_id"],
                              config={**params, **{f"trial/{k}": v for k, v in ident.items()}},
                              dir=str(self.run_dir), mode=self.mode, reinit="create_new",
                              tags=[str(ident.get("status", ""))],
                              # no banner lines through the live status line, and the
                              # driver's terminal is not the trial's console output
                              settings=self.wandb.Settings(silent=True, console="off"))
        try:
            for generation, values in gens:
                run.log({**values, "generation": generation}, step=generation)
            for key, value in final.items():
                run.summary[key] = value
            run.summary["status"] = ident.get("status", "")
        finally:
            run.finish()


class _MLflow:
    def __init__(self, config: ChainConfig, run_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(config.name)
        self.experiment = found.experiment_id if found else self.client.create_experiment(config.name)

    def log(self, ident: dict[str, Any], params: dict[str, Any], gens: list, final: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(self.experiment, run_name=ident["trial_id"])
        rid = run.info.run_id
        metrics = [Metric(k, v, 0, g) for g, values in gens for k, v in values.items()]
        last = gens[-1][0] if gens else 0
        metrics += [Metric(k, v, 0, last) for k, v in final.items()]
        tags = [RunTag(f"trial.{k}", str(v)) for k, v in ident.items()]
        for start in range(0, max(len(metrics), 1), 1000):  # MLflow's batch limit
            self.client.log_batch(rid, metrics=metrics[start:start + 1000],
                                  params=[Param(k, str(v)) for k, v in params.items()]
                                  if start == 0 else [], tags=tags if start == 0 else [])
        self.client.set_terminated(rid, status="FINISHED" if ident.get("status") in
                                   ("finished", "stopped_collapsed") else "FAILED")


def _netrc_has(host: str) -> bool:
    try:
        import netrc

        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class TrialLoggers(Callback):
    """Tune callback: each finished trial becomes one W&B / MLflow run (background thread)."""

    def __init__(self, config: ChainConfig, run_dir: Path, names: list[str], *,
                 storage: str | None = None) -> None:
        self.config, self.run_dir, self.names = config, Path(run_dir), list(names)
        self.storage = storage  # object storage: the trial's table is fetched from there
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._sinks: list[Any] = []

    def __getstate__(self) -> dict[str, Any]:  # tuner.pkl: settings only, no open clients
        return {"config": self.config, "run_dir": self.run_dir, "names": self.names,
                "storage": self.storage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def setup(self, **info: Any) -> None:
        self._thread = threading.Thread(target=self._work, name="trial-loggers", daemon=True)
        self._thread.start()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(trial, dict(trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(trial, {**(trial.last_result or {}), "status": "failed"})

    def _put(self, trial: Any, result: dict[str, Any]) -> None:
        """One run per Optuna trial: a batch's members each (``sweep.search.batching``);
        a member without a result in the batch's report counts as failed."""
        members = batching.members(trial.config)
        if members is None:
            self._queue.put((trial.trial_id, dict(trial.config), result))
            return
        by_number = batching.results_by_number(result)
        for m in members:
            number = int(m["number"])
            self._queue.put((batching.member_dir(trial.trial_id, number),
                             {**m["params"], "__number": number},
                             by_number.get(number, {"status": "failed"})))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # ---------------------------------------------------------------- the thread
    def _work(self) -> None:
        for name in self.names:
            try:
                self._sinks.append(_Wandb(self.config, self.run_dir) if name == "wandb"
                                   else _MLflow(self.config, self.run_dir))
            except Exception as exc:  # noqa: BLE001 - a tracker must not stop a sweep
                print(f"loggers: {name} disabled: {type(exc).__name__}: {exc}", file=sys.stderr)
        while (item := self._queue.get()) is not None:
            self.log_trial(*item)

    def log_trial(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        params = {k: v for k, v in config.items() if not str(k).startswith("__")}
        path = self.run_dir / "trials" / trial_id / "generations.parquet"
        if self.storage and not path.is_file():  # the trial ran on another node
            from sweep.rundir.storage import RunStorage

            try:
                RunStorage(self.storage).get(f"trials/{trial_id}/generations.parquet", path)
            except Exception:  # noqa: BLE001 - a tracker must not stop a sweep
                pass
        try:
            frame = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        except Exception:  # noqa: BLE001 - a torn table: log the final metrics only
            frame = pd.DataFrame()
        ident = {"trial_id": trial_id, "number": int(config.get("__number", -1)),
                 "trial_dir": f"trials/{trial_id}", "status": str(result.get("status", "")),
                 "seed": result.get("seed", self.config.seed)}
        gens, final = generation_metrics(frame), final_metrics(result)
        for sink in self._sinks:
            try:
                sink.log(ident, params, gens, final)
            except Exception as exc:  # noqa: BLE001
                print(f"loggers: {type(sink).__name__.strip('_')}: trial {trial_id}: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)
