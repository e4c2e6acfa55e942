"""One sweep trial without Ray: build the chain, share generation 0, step, record, resume.

``sweep.search.driver`` wraps :func:`run_trial` in a Tune function trainable and passes its
own ``report`` callable; everything else (files, ledger, cache, checkpoints) lives here so
that it can be read and tested without a Ray cluster. A trial reads as its steps:

    look up the ledger (done already? another trial owns this chain?)
    open the chain (resume its checkpoint, or start it with a shared generation 0)
    drive the chain (sweep.engine.chain.drive): after each generation save the checkpoint,
        report (throttled); the chain's own error is a failed trial
    finish: the ``done`` record, durable in the ledger before Tune hears of it
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweep.config import ChainConfig, dump_config, load_config, trial_config
from sweep.engine.chain import OK_STATUSES, Chain, drive
from sweep.files.atomic import write_parquet, write_text
from sweep.files.checkpoint import CorruptCheckpoint, load_checkpoint, save_checkpoint
from sweep.rundir.ledger import Ledger
from sweep.rundir.results import DEFAULT_OBJECTIVES
from sweep.search.devices import Placement, assigned_gpu_ids, gpu_share, place_trial

#: report(metrics, checkpoint_dir_or_None) -> None (tune.report in a sweep).
Report = Callable[[dict[str, Any], Path | None], None]

#: Intermediate results go to Tune at most this often (the final one always): every report is
#: a round trip through the driver, which shares the CPUs with the trials on a small machine.
REPORT_EVERY_S = 2.0
#: A checkpoint is handed to Tune (which copies it into its storage) at most this often. The
#: trial's own checkpoint, RUN_DIR/trials/<id>/ckpt, is written after every generation and is
#: what a restarted trial resumes from (RUN_DIR is local or shared storage); Tune's copy is a
#: second line for long trials.
TUNE_CHECKPOINT_EVERY_S = 60.0
#: trials/<id>/generations.parquet is rewritten at most this often while a chain runs, and
#: at its end (the checkpoint holds the same rows; TensorBoard shows them live).
PARQUET_EVERY_S = 10.0
#: A duplicate trial waits this long without progress of the owning chain before taking over.
OWNER_STALL_S = 120.0


def sweep_config(run_dir: Path) -> ChainConfig:
    return load_config(Path(run_dir) / "sweep.yaml")


def model0_key(config: ChainConfig) -> str:
    """Content address of generation 0: it depends on the seed, model, data and n only."""
    dump = config.model_dump(mode="json")
    blob = {"seed": config.seed, "model": dump["model"], "data": dump["data"],
            "n": config.recursion.samples_per_generation}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def run_trial(run_dir: Path, params: dict[str, Any], *, trial_id: str, number: int,
              node: str, report: Report, restored: Path | None = None,
              cpus: float = 1.0) -> dict[str, Any]:
    """Run (or finish, or look up) the chain of one trial; returns its ledger record."""
    trial = TrialRun(Path(run_dir), params, trial_id=trial_id, number=number, node=node,
                     report=report)
    if (record := trial.recorded_result()) is not None:
        return record
    trial.place()
    _set_threads(cpus)
    trial.open_chain(restored)
    return trial.run()


class Throttle:
    """``due()`` is True at most once every ``every`` seconds (first: after ``every``)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last = time.perf_counter()

    def due(self) -> bool:
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            return True
        return False


class TrialRun:
    """The state of one trial while it runs; each method is one step of :func:`run_trial`."""

    def __init__(self, run_dir: Path, params: dict[str, Any], *, trial_id: str, number: int,
                 node: str, report: Report) -> None:
        self.run_dir = run_dir
        self.params = params
        self.trial_id = trial_id
        self.number = number
        self.node = node
        self.report = report
        base = sweep_config(run_dir)
        self.objectives = list((base.search or {}).get("objectives") or DEFAULT_OBJECTIVES)
        self.config = trial_config(base, params)
        self.key = self.config.fingerprint()
        self.placed = self.config  # model.device resolved by place(); builds the chain
        self.placement: Placement | None = None
        self.ledger = Ledger(run_dir)
        self.owner: dict[str, Any] | None = None  # the ledger's start record of this chain
        self.chain: Chain | None = None
        self.tdir = run_dir / "trials" / trial_id
        self.seconds_before = 0.0  # run time of earlier attempts (from the checkpoint)
        self.shared_model0 = False
        self.record: dict[str, Any] = {}
        # Set by run(): the TensorBoard logger (in the final trial directory) and throttles.
        self.logger: _ChainLogger
        self._reports = self._tune_ckpts = self._frames = Throttle(0.0)
        self._started = time.perf_counter()

    # ---------------------------------------------------------------- 1. the ledger
    def recorded_result(self) -> dict[str, Any] | None:
        """The chain's result when it is done already or another trial finishes it.

        Done already: before a driver crash, or an earlier trial sampled the same config
        (NSGA-II crossover does); its result is this trial's result and nothing is rerun.
        Started by another trial (a duplicate config): wait for its result rather than run
        the same chain twice; take over (None) only if it stopped making progress.
        """
        record = self.ledger.done(self.key)
        self.owner = self.ledger.started(self.key)
        if record is None and self.owner is not None and self.owner.get("number") != self.number:
            record = _wait_for_owner(self.ledger, self.key,
                                     self.run_dir / "trials" / self.owner["trial_id"] / "ckpt")
        if record is None:
            return None
        _record_reuse(self.run_dir, self.ledger, record, trial_id=self.trial_id,
                      number=self.number)
        self.report(_metrics(record, done=True, generation=record.get("generations_run", 0)), None)
        return record

    def place(self) -> Placement:
        """Before torch touches CUDA: the GPU Ray assigned this trial (none: all hidden),
        and the model's device resolved from it. Keys and files keep the config as sampled."""
        self.placed, self.placement = place_trial(self.config, gpus=gpu_share(self.config),
                                                  assigned=assigned_gpu_ids())
        return self.placement

    # ---------------------------------------------------------------- 2. the chain
    def open_chain(self, restored: Path | None) -> Chain:
        """Resume the newest checkpoint (Tune's or the trial's own), else start the chain
        with generation 0 from the cache when another trial has fit it already."""
        if self.owner is not None:  # a restarted (or taken-over) chain keeps its directory
            self.tdir = self.run_dir / "trials" / self.owner["trial_id"]
        state = _newest_state([restored, self.ckpt_dir])
        shared = _load_cache(self.cache_dir) if state is None else None
        self.chain = Chain(self.placed, model0_state=(shared or {}).get("model0"))
        self.shared_model0 = shared is not None
        if state is not None:
            self.chain.load_state_dict(state)
            self.seconds_before = float(state.get("sweep_seconds", 0.0))
            self.shared_model0 = bool(state.get("shared_model0", False))
            self.ledger.append("resume", key=self.key, trial_id=self.tdir.name,
                               generation=self.chain.generation)
        elif self.owner is not None:  # its checkpoints were lost or damaged: it starts over
            self.ledger.append("resume", key=self.key, trial_id=self.tdir.name, generation=0)
        else:
            write_text(self.tdir / "config.yaml", dump_config(self.config))
            self.ledger.append("start", key=self.key, trial_id=self.tdir.name, number=self.number,
                               params=self.params, seed=self.config.seed, node=self.node,
                               device=self.placement.describe() if self.placement else None)
        return self.chain

    @property
    def ckpt_dir(self) -> Path:
        return self.tdir / "ckpt"

    @property
    def cache_dir(self) -> Path:
        return self.run_dir / "cache" / model0_key(self.config)

    # ---------------------------------------------------------------- 3. the generations
    def run(self) -> dict[str, Any]:
        """Drive the chain to its end (or its first error); returns the done record."""
        chain = self._chain()
        self.logger = _ChainLogger(self.tdir / "tb", config=self.config, params=self.params,
                                   enabled="tensorboard" in self.config.loggers)
        self._started = time.perf_counter()
        self._reports, self._tune_ckpts, self._frames = (
            Throttle(REPORT_EVERY_S), Throttle(TUNE_CHECKPOINT_EVERY_S), Throttle(PARQUET_EVERY_S))
        drive(chain, on_generation=self.logger.log_generation, after_step=self.after_generation,
              on_error=self.fail)
        if "key" not in self.record:  # restored a finished chain whose end was not recorded yet
            self.finish(_final_record(chain, objectives=self.objectives))
            self.logger.close(self.record)
            self.report(_metrics(self.record, done=True, generation=chain.generation - 1), None)
        return self.record

    def after_generation(self, chain: Chain, row: dict[str, Any]) -> None:
        """Share generation 0, checkpoint, and (throttled) write the frame and report."""
        if (chain.generation == 1 and not self.shared_model0
                and _load_cache(self.cache_dir, warn=False) is None):
            save_checkpoint(self.cache_dir, {"model0": chain.model0_state})
        payload = self.save()
        self.record = _final_record(chain, objectives=self.objectives)
        if chain.done:
            self.finish(self.record)
            # TensorBoard gets the final metrics and the session end before Tune hears
            # the last report: that report may end the trial's process.
            self.logger.close(self.record)
        elif self._frames.due():
            self.write_frame()
        if chain.done or self._reports.due():
            self.report_progress(payload, with_checkpoint=not chain.done and self._tune_ckpts.due())

    def fail(self, chain: Chain, exc: Exception) -> None:
        """The chain's own error: a failed trial, recorded and reported (Optuna: FAIL)."""
        self.finish(_failed_record(exc, chain))
        self.logger.close(self.record)
        self.report(_metrics(self.record, done=True, generation=chain.generation), None)

    def save(self) -> dict[str, Any]:
        """The trial's own checkpoint, every generation: a killed trial loses at most one."""
        payload = {**self._chain().state_dict(), "shared_model0": self.shared_model0,
                   "sweep_seconds": self.elapsed()}
        save_checkpoint(self.ckpt_dir, payload)
        return payload

    def report_progress(self, payload: dict[str, Any], *, with_checkpoint: bool) -> None:
        chain = self._chain()
        metrics = _metrics(self.record, done=chain.done, generation=chain.generation - 1)
        if not with_checkpoint:
            self.report(metrics, None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(tmp, payload)
            self.report(metrics, Path(tmp))

    def write_frame(self) -> None:
        frame = self._chain().frame()
        frame.insert(0, "seed", self.config.seed)
        write_parquet(frame, self.tdir / "generations.parquet")

    # ---------------------------------------------------------------- 4. the record
    def finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Complete the record, write the frame, and append ``done`` to the ledger."""
        record.update(key=self.key, trial_id=self.tdir.name, number=self.number,
                      params=self.params, seed=self.config.seed, node=self.node,
                      seconds=self.elapsed(), shared_model0=self.shared_model0,
                      model0_key=model0_key(self.config))
        if self._chain().rows:
            self.write_frame()
        self.ledger.append("done", **record)  # durable before Tune (and Optuna) hear of it
        self.record = record
        return record

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self._started

    def _chain(self) -> Chain:
        if self.chain is None:
            raise RuntimeError("TrialRun: open_chain() first")
        return self.chain


def _final_record(chain: Chain, *, objectives: list[str]) -> dict[str, Any]:
    s = chain.summary()
    status = s["status"]
    values = [s.get(k, math.nan) for k in objectives]
    if status in OK_STATUSES and not all(math.isfinite(float(v)) for v in values):
        status = "diverged"  # an objective Optuna cannot be told is a divergence
    return {"status": status, "quality_gap": float(s["quality_gap"]),
            "total_flops": float(s["total_flops"]), "collapsed": bool(s["collapsed"]),
            "total_label_cost": float(s.get("total_label_cost", 0.0)),
            "generations_run": int(s["generations_run"]),
            "final_real_nll": float(s["final_real_nll"]),
            "model0_flops": float(chain.rows[0].get("flops", 0.0)) if chain.rows else 0.0}


def _metrics(record: dict[str, Any], *, done: bool, generation: int) -> dict[str, Any]:
    """What Tune sees: finite numbers only (NaN would leave the Optuna trial RUNNING)."""
    out = {k: v for k, v in record.items() if isinstance(v, (int, float, bool, str))}
    for k, v in list(out.items()):
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = 1e300 if v > 0 else -1e300
    out["failed"] = record.get("status") not in OK_STATUSES and done
    out["done"] = done
    out["generation"] = generation
    return out


class _ChainLogger:
    """The TensorBoard ChainLogger; a logging failure never stops a chain."""

    def __init__(self, log_dir: Path, *, config: ChainConfig, params: dict[str, Any],
                 enabled: bool = True) -> None:
        self._inner: Any = None
        if not enabled:  # `loggers:` without tensorboard
            return
        try:
            from sweep.observe.board import ChainLogger

            self._inner = ChainLogger(log_dir, config=config, params=params)
        except Exception as exc:  # noqa: BLE001 - a TB problem: no TB events
            self._warn(exc)

    def log_generation(self, row: dict[str, Any], details: dict[str, Any]) -> None:
        if self._inner is not None:
            try:
                self._inner.log_generation(row, details)
            except Exception as exc:  # noqa: BLE001
                self._warn(exc)
                self._inner = None

    def close(self, summary: dict[str, Any]) -> None:
        if self._inner is not None:
            try:
                self._inner.close(summary)
            except Exception as exc:  # noqa: BLE001
                self._warn(exc)

    @staticmethod
    def _warn(exc: Exception) -> None:
        print(f"chain logger disabled: {type(exc).__name__}: {exc}", file=sys.stderr)


def _wait_for_owner(ledger: Ledger, key: str, ckpt_dir: Path, *,
                    stall_s: float = OWNER_STALL_S) -> dict[str, Any] | None:
    """The owner's done record, or None once its checkpoint has not moved for ``stall_s``."""
    ckpt = ckpt_dir / "chain.pt"
    last = time.time()
    while (record := ledger.done(key)) is None:
        if ckpt.is_file():
            last = max(last, ckpt.stat().st_mtime)
        if time.time() - last > stall_s:
            return None
        time.sleep(0.2)
    return record


def _failed_record(exc: Exception, chain: Chain) -> dict[str, Any]:
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500],
            "quality_gap": math.nan, "total_flops": math.nan, "collapsed": True,
            "generations_run": max(0, chain.generation - 1), "final_real_nll": math.nan,
            "model0_flops": 0.0}


def _record_reuse(run_dir: Path, ledger: Ledger, record: dict[str, Any], *, trial_id: str,
                  number: int) -> None:
    if record["trial_id"] == trial_id or number == record.get("number"):
        return  # the same trial, restarted after a crash
    src, dst = run_dir / "trials" / record["trial_id"], run_dir / "trials" / trial_id
    for name in ("config.yaml", "generations.parquet"):  # so trials/<id>/ is complete
        if (src / name).is_file() and not (dst / name).exists():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, dst / name)
    ledger.append("reuse", key=record["key"], trial_id=trial_id, number=number,
                  reused_from=record["trial_id"], params=record.get("params"))


def _newest_state(dirs: list[Path | None]) -> dict[str, Any] | None:
    """The newest good state among ``dirs``; damaged ones are skipped with one warning."""
    states, damaged = [], []
    for d in dirs:
        try:
            state = load_checkpoint(d) if d is not None else None
        except CorruptCheckpoint as exc:
            damaged.append(str(exc))
            continue
        if state is not None:
            states.append(state)
    best = max(states, key=lambda s: int(s["generation"]), default=None)
    if damaged:
        start = f"generation {int(best['generation'])}" if best else "scratch"
        print(f"warning: {'; '.join(damaged)}: the trial restarts from {start}", file=sys.stderr)
    return best


def _load_cache(cache: Path, *, warn: bool = True) -> dict[str, Any] | None:
    """The shared generation-0 entry; a damaged one is removed (and rebuilt by its next user)."""
    try:
        return load_checkpoint(cache)
    except CorruptCheckpoint as exc:
        if warn:
            print(f"warning: generation-0 cache entry damaged, rebuilding it: {exc}",
                  file=sys.stderr)
        shutil.rmtree(cache, ignore_errors=True)
        return None


def _set_threads(cpus: float) -> None:
    # Several trials share a machine: each takes only its CPU share of torch's threads.
    import torch

    torch.set_num_threads(max(1, int(cpus)))
