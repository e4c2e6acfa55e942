"""One sweep trial without Ray: k replicate chains, shared generation 0, step, record, resume.

``sweep.search.driver`` wraps :func:`run_trial` in a Tune function trainable and passes its
own ``report`` callable; everything else (files, ledger, cache, checkpoints) lives here so
that it can be read and tested without a Ray cluster. A trial reads as its steps:

    look up the ledger (done already? another trial owns these chains?)
    open the chains, one per seed (resume its checkpoint, or start it with a shared gen. 0)
    until done: step one generation of every chain (in lockstep, threads within the trial's
        CPU share), save their checkpoints, report (throttled)
    finish: the ``done`` record (means, standard errors, the confidence bound of the gap:
        ``sweep.engine.replicates.aggregate``), durable in the ledger before Tune hears of it

A search trial runs ``search.seeds`` chains on ``search_seeds(seed, k)``; a confirmation run
(``stage="confirm"``) runs ``search.confirm.seeds`` chains on seeds the search never uses, in
``RUN_DIR/confirm/<id>``. With one seed the files are those of a single chain (``ckpt/``,
``tb/``); with more, each seed has ``ckpt/seed_<s>`` and ``tb/seed_<s>``.

On object storage (``--storage s3://...``, ``storage`` given) the run directory is this
node's cache of the run (``sweep.rundir.storage.cache_dir``), the sweep config comes with
the trial (``base``), the ledger is the driver's (``sweep.search.remote.RemoteLedger``), and
the trial uploads its own files: ``config.yaml`` when it starts, each chain's checkpoint
every generation, its table and TensorBoard events as they are written (all before its
``done`` record), generation 0 to the shared cache. A trial resuming a chain that ran on
another node downloads that chain's checkpoint first.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.config import ChainConfig, dump_config, load_config, trial_config
from sweep.engine.chain import OK_STATUSES, Chain
from sweep.engine.replicates import (  # noqa: F401 - trial_key re-exported for the driver
    aggregate,
    confirmation_seeds,
    search_seeds,
    trial_key,
)
from sweep.files.atomic import write_parquet, write_text
from sweep.files.checkpoint import (
    CHECKPOINT_FILE,
    PREVIOUS_FILE,
    CorruptCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from sweep.rundir.ledger import Ledger
from sweep.rundir.storage import RunStorage
from sweep.search.devices import Placement, assigned_gpu_ids, gpu_share, place_trial
from sweep.search.space import SearchSpec

#: report(metrics, checkpoint_dir_or_None) -> None (tune.report in a sweep).
Report = Callable[[dict[str, Any], Path | None], None]

#: Where a trial's files live: search trials (one Optuna trial each) and confirmation runs.
STAGE_DIRS = {"search": "trials", "confirm": "confirm"}
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


def search_spec(base: ChainConfig) -> SearchSpec:
    """The sweep's search settings (validated when the sweep started)."""
    return SearchSpec.model_validate(base.search or {"space": {"seed": {"choice": [base.seed]}}})


def trial_seeds(base: ChainConfig, config: ChainConfig, *, stage: str) -> list[int]:
    """The chain seeds of a search trial or of a confirmation run of ``config``."""
    spec = search_spec(base)
    if stage == "confirm":
        return confirmation_seeds(config.seed, spec.confirm.seeds)
    return search_seeds(config.seed, spec.seeds)


def run_trial(run_dir: Path, params: dict[str, Any], *, trial_id: str, number: int,
              node: str, report: Report, restored: Path | None = None,
              cpus: float = 1.0, stage: str = "search", base: ChainConfig | None = None,
              ledger: Any = None, storage: RunStorage | None = None) -> dict[str, Any]:
    """Run (or finish, or look up) the chains of one trial; returns its ledger record.

    ``base``: the sweep config (default: read from RUN_DIR/sweep.yaml); ``ledger``: an
    object with ``Ledger``'s methods (default: RUN_DIR's own); ``storage``: the run on
    object storage, which this trial's files are uploaded to.
    """
    trial = TrialRun(Path(run_dir), params, trial_id=trial_id, number=number, node=node,
                     report=report, stage=stage, base=base, ledger=ledger, storage=storage)
    if (record := trial.recorded_result()) is not None:
        return record
    trial.place()
    trial.workers = max(1, min(len(trial.seeds), int(cpus)))
    threads = max(1, int(cpus) // trial.workers)
    _set_threads(threads, torch_family=hasattr(trial.placed.model, "device"))
    if not trial.open_chain(restored):  # a duplicate of a trial that started it meanwhile
        if (record := trial.recorded_result()) is not None:  # its result, as duplicates get
            return record
        trial.open_chain(restored)  # it stopped making progress: take its chain over
    _set_threads(threads)  # a family without a device field that loaded torch meanwhile
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
                 node: str, report: Report, stage: str = "search",
                 base: ChainConfig | None = None, ledger: Any = None,
                 storage: RunStorage | None = None) -> None:
        self.run_dir = run_dir
        self.params = params
        self.trial_id = trial_id
        self.number = number
        self.node = node
        self.report = report
        base = base if base is not None else sweep_config(run_dir)
        self.objectives = list(search_spec(base).objectives)
        self.config = trial_config(base, params)
        self.stage = stage
        self.seeds = trial_seeds(base, self.config, stage=stage)
        self.key = trial_key(self.config, self.seeds)
        self.placed = self.config  # model.device resolved by place(); builds the chains
        self.placement: Placement | None = None
        self.ledger = ledger if ledger is not None else Ledger(run_dir)
        self.storage = storage
        self.uploads = _Uploads(storage) if storage is not None else None
        self.owner: dict[str, Any] | None = None  # the ledger's start record of this trial
        self.chains: list[Chain] = []  # one per seed, in the order of self.seeds
        self.stage_dir = run_dir / STAGE_DIRS[stage]
        self.tdir = self.stage_dir / trial_id
        self.seconds_before = 0.0  # run time of earlier attempts (from the checkpoints)
        self.shared_model0 = [False] * len(self.seeds)
        self.workers = 1  # chains stepped at once (threads); run_trial sets the CPU share
        self.stepped: set[int] = set(range(len(self.seeds)))  # chains the last step() ran
        self.record: dict[str, Any] = {}
        self._model0_keys: dict[int, str] = {}
        self._started = time.perf_counter()

    @property
    def chain(self) -> Chain | None:
        """The first seed's chain (all chains are at the same generation: lockstep)."""
        return self.chains[0] if self.chains else None

    def seed_config(self, seed: int) -> ChainConfig:
        return self.config.model_copy(update={"seed": seed})

    def place(self) -> Placement:
        """Before torch touches CUDA: the GPU Ray assigned this trial (none: all hidden),
        and the model's device resolved from it. Keys and files keep the config as sampled."""
        self.placed, self.placement = place_trial(self.config, gpus=gpu_share(self.config),
                                                  assigned=assigned_gpu_ids())
        return self.placement

    def _sub(self, seed: int) -> str:
        return "" if len(self.seeds) == 1 else f"seed_{seed}"

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
            record = _wait_for_owner(self.ledger, self.key, self._owner_progress())
        if record is None:
            return None
        _record_reuse(self.stage_dir, self.ledger, record, trial_id=self.trial_id,
                      number=self.number, storage=self.storage, run_dir=self.run_dir)
        self.report(tune_metrics(record, done=True, generation=record.get("generations_run", 0)), None)
        return record

    def _owner_progress(self) -> Callable[[], float]:
        """When the owning chain last made progress: its heartbeat in the driver's ledger
        keeper (object storage: the owner may run on another node), else its checkpoints."""
        if hasattr(self.ledger, "last_beat"):
            return lambda: self.ledger.last_beat(self.key) or 0.0
        ckpt_dir = self.stage_dir / self.owner["trial_id"] / "ckpt"
        return lambda: max((c.stat().st_mtime for c in ckpt_dir.rglob(CHECKPOINT_FILE)),
                           default=0.0)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.run_dir).as_posix()

    def push(self, path: Path) -> None:
        """Upload a file or directory of this run (object storage only; unchanged files are
        skipped)."""
        if self.storage is None or not path.exists():
            return
        if path.is_dir():
            self.storage.put_tree(path, self._rel(path))
        else:
            self.storage.put(path, self._rel(path))

    def _stored_states(self, tmp: Path) -> list[Path | None]:
        """The owner's checkpoints from the storage (a chain that ran on another node)."""
        if self.storage is None or self.owner is None:
            return []
        self.storage.get_tree(self._rel(self.tdir / "ckpt"), tmp)
        return [tmp / self._sub(seed) for seed in self.seeds]

    # ---------------------------------------------------------------- 2. the chain
    def open_chain(self, restored: Path | None) -> list[Chain]:
        """Per seed: resume the newest checkpoint (Tune's or the trial's own), else start the
        chain with generation 0 from the cache when another trial has fit it already."""
        if self.owner is not None:  # a restarted (or taken-over) trial keeps its directory
            self.tdir = self.stage_dir / self.owner["trial_id"]
        resumed: dict[int, int] = {}
        with tempfile.TemporaryDirectory() as tmp:
            stored = self._stored_states(Path(tmp))
            states = [_newest_state([None if restored is None else restored / self._sub(seed),
                                     self.ckpt_dir(seed), *stored[i:i + 1]])
                      for i, seed in enumerate(self.seeds)]
        for i, seed in enumerate(self.seeds):
            state = states[i]
            if state is None and self.storage is not None:  # generation 0 fit on another node
                cache = self.cache_dir(seed)
                if not (cache / CHECKPOINT_FILE).is_file():
                    self.storage.get_tree(self._rel(cache), cache)
            shared = _load_cache(self.cache_dir(seed)) if state is None else None
            chain = Chain(self.placed.model_copy(update={"seed": seed}),
                          model0_state=(shared or {}).get("model0"))
            self.shared_model0[i] = shared is not None
            if state is not None:
                chain.load_state_dict(state)
                self.seconds_before = max(self.seconds_before, float(state.get("sweep_seconds", 0.0)))
                self.shared_model0[i] = bool(state.get("shared_model0", False))
                resumed[seed] = chain.generation
            self.chains.append(chain)
        for seed, generation in resumed.items():
            self.ledger.append("resume", key=self.key, trial_id=self.tdir.name, seed=seed,
                               generation=generation)
        if not resumed and self.owner is not None:  # checkpoints lost or damaged: start over
            self.ledger.append("resume", key=self.key, trial_id=self.tdir.name, generation=0)
        elif not resumed:
            write_text(self.tdir / "config.yaml", dump_config(self.config))
            self.push(self.tdir / "config.yaml")
            self.owner = self.ledger.claim(
                self.key, trial_id=self.tdir.name, number=self.number, params=self.params,
                seed=self.config.seed, seeds=self.seeds, node=self.node, stage=self.stage,
                device=self.placement.describe() if self.placement else None)
            if self.owner is not None:  # another trial started this chain since the check
                self.chains = []
        return self.chains

    def ckpt_dir(self, seed: int) -> Path:
        return self.tdir / "ckpt" / self._sub(seed)

    def model0_key_of(self, seed: int) -> str:
        """Generation 0's content address for ``seed`` (it hashes the config: computed once)."""
        if seed not in self._model0_keys:
            self._model0_keys[seed] = model0_key(self.seed_config(seed))
        return self._model0_keys[seed]

    def cache_dir(self, seed: int) -> Path:
        """Generation 0's shared entry for ``seed``."""
        return self.run_dir / "cache" / self.model0_key_of(seed)

    # ---------------------------------------------------------------- 3. the generations
    @property
    def done(self) -> bool:
        return all(c.done for c in self._chains())

    def run(self) -> dict[str, Any]:
        """Step the chains to their end (or the first error); returns the done record."""
        loggers = [_ChainLogger(self.tdir / "tb" / self._sub(s), config=self.seed_config(s),
                                params=self.params,
                                enabled="tensorboard" in self.config.loggers)
                   for s in self.seeds]
        self._started = time.perf_counter()
        reports, tune_ckpts, frames = (Throttle(REPORT_EVERY_S), Throttle(TUNE_CHECKPOINT_EVERY_S),
                                       Throttle(PARQUET_EVERY_S))
        pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        try:
            while not self.done:
                try:
                    self.step((loggers, pool))
                except Exception as exc:  # noqa: BLE001 - a chain's own error: a failed trial
                    self._close(loggers)
                    self.finish(self.aggregate(error=exc))
                    self.report(tune_metrics(self.record, done=True,
                                         generation=self.chain.generation), None)
                    break
                payloads = self.save()
                reporting = self.done or reports.due()
                if reporting:  # the record is only read to report or finish (0.2 ms a time)
                    self.record = self.aggregate()
                if self.done:
                    # TensorBoard gets the final metrics and the session end before the
                    # done record (on object storage: uploaded) and before Tune hears the
                    # last report, which may end the trial's process.
                    self._close(loggers)
                    self.finish(self.record)
                elif frames.due():
                    self.write_frame()
                if reporting:
                    self.report_progress(payloads,
                                         with_checkpoint=not self.done and tune_ckpts.due())
        finally:
            if pool is not None:
                pool.shutdown()
        if "key" not in self.record:  # restored finished chains whose end was not recorded yet
            self._close(loggers)
            self.finish(self.aggregate())
            self.report(tune_metrics(self.record, done=True, generation=self.chain.generation - 1),
                        None)
        self._close(loggers)
        return self.record

    def _close(self, loggers: list[_ChainLogger]) -> None:
        """Each chain's final metrics to its TensorBoard run (closing twice is a no-op)."""
        for chain, logger in zip(self._chains(), loggers, strict=True):
            logger.close(chain_record(chain, objectives=self.objectives))

    def step(self, logger: Any) -> None:
        """One generation of every unfinished chain (``logger``: the per-seed loggers and the
        thread pool, or None); generation 0 goes to the cache for the trials that share it."""
        loggers, pool = logger if isinstance(logger, tuple) else ([None] * len(self.seeds), None)

        def one(i: int) -> None:
            chain = self.chains[i]
            chain.step(on_generation=None if loggers[i] is None else loggers[i].log_generation)
            cache = self.cache_dir(self.seeds[i])
            if (chain.generation == 1 and not self.shared_model0[i]
                    and _load_cache(cache, warn=False) is None):
                save_checkpoint(cache, {"model0": chain.model0_state})
                self.push(cache)

        active = [i for i, c in enumerate(self._chains()) if not c.done]
        self.stepped = set(active)
        if pool is None:
            for i in active:
                one(i)
        else:
            list(pool.map(one, active))  # re-raises the first chain error here

    def save(self) -> dict[int, dict[str, Any]]:
        """Each chain's own checkpoint, every generation it ran: a killed trial loses at most
        one. A chain that stopped early (collapsed) was saved as it stopped; its file is not
        rewritten while the trial's other seeds go on (the states returned are all seeds')."""
        payloads = {}
        for i, (seed, chain) in enumerate(zip(self.seeds, self._chains(), strict=True)):
            payloads[seed] = {**chain.state_dict(), "shared_model0": self.shared_model0[i],
                              "sweep_seconds": self.elapsed()}
            if i not in self.stepped:
                continue
            save_checkpoint(self.ckpt_dir(seed), payloads[seed])
            if self.uploads is not None:  # in the background: the chain does not wait
                ckpt = self.ckpt_dir(seed) / CHECKPOINT_FILE
                self.uploads.put(ckpt, self._rel(ckpt))
        if self.storage is not None and hasattr(self.ledger, "beat"):
            self.ledger.beat(self.key)
        return payloads

    def report_progress(self, payloads: dict[int, dict[str, Any]], *, with_checkpoint: bool) -> None:
        metrics = tune_metrics(self.record, done=self.done, generation=self.chain.generation - 1)
        if not with_checkpoint:
            self.report(metrics, None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            for seed, payload in payloads.items():
                save_checkpoint(Path(tmp) / self._sub(seed), payload)
            self.report(metrics, Path(tmp))

    def frame(self) -> pd.DataFrame | None:
        """Every chain's rows, one per generation and seed (column ``seed``)."""
        frames = []
        for seed, chain in zip(self.seeds, self._chains(), strict=True):
            if chain.rows:
                frame = chain.frame()
                frame.insert(0, "seed", seed)
                frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else None

    def write_frame(self) -> None:
        frame = self.frame()
        if frame is not None:
            write_parquet(frame, self.tdir / "generations.parquet")
            self.push(self.tdir / "generations.parquet")
            self.push(self.tdir / "tb")

    def aggregate(self, error: Exception | None = None) -> dict[str, Any]:
        """The trial's record from its chains' (means, standard errors, the gap's bound)."""
        per_seed = []
        for i, (seed, chain) in enumerate(zip(self.seeds, self._chains(), strict=True)):
            rec = (_failed_record(error, chain) if error is not None and not chain.done
                   else chain_record(chain, objectives=self.objectives))
            per_seed.append({**rec, "seed": seed, "shared_model0": self.shared_model0[i]})
        col = self.config.collapse
        return aggregate(per_seed, objectives=self.objectives, tolerance=col.tolerance,
                         confidence=col.confidence)

    # ---------------------------------------------------------------- 4. the record
    def finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Complete the record, write the frame, and append ``done`` to the ledger."""
        record.update(key=self.key, trial_id=self.tdir.name, number=self.number,
                      params=self.params, seed=self.config.seed, node=self.node,
                      stage=self.stage, seconds=self.elapsed(),
                      shared_model0=all(self.shared_model0),
                      model0_key=self.model0_key_of(self.seeds[0]),
                      model0_keys=[self.model0_key_of(s) for s in self.seeds])
        frame = self.frame()
        if frame is not None:
            write_parquet(frame, self.tdir / "generations.parquet")
        _log_trial_summary(self.tdir / "tb", record, frame, metric=self.config.collapse.metric)
        self.push(self.tdir / "generations.parquet")
        self.push(self.tdir / "tb")  # the trial's files are stored before its done record
        if self.uploads is not None:
            self.uploads.flush()  # ... its last checkpoints too
        self.ledger.append("done", **record)  # durable before Tune (and Optuna) hear of it
        self.record = record
        return record

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self._started

    def _chains(self) -> list[Chain]:
        if not self.chains:
            raise RuntimeError("TrialRun: open_chain() first")
        return self.chains


class _Uploads:
    """A trial's checkpoint uploads to object storage, in a background thread, newest first:
    a chain whose generations are faster than the storage does not wait for it (the stored
    checkpoint then skips generations); ``flush`` waits for the last one, before the trial's
    done record. An upload error is raised by the next ``put`` or ``flush``."""

    IDLE_EXIT_S = 5.0  # the thread ends when idle this long (Tune reuses trial processes)

    def __init__(self, storage: RunStorage) -> None:
        self.storage = storage
        self.pending: dict[str, Path] = {}
        self.busy = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def put(self, path: Path, rel: str) -> None:
        with self.cond:
            self._raise()
            self.pending[rel] = path
            self.cond.notify_all()
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="ckpt-upload", daemon=True)
                self.thread.start()

    def flush(self) -> None:
        with self.cond:
            while self.pending or self.busy:
                self.cond.wait()
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"checkpoint upload to {self.storage.uri} failed: {error}")

    def _run(self) -> None:
        while True:
            with self.cond:
                if not self.pending and not self.cond.wait_for(lambda: self.pending,
                                                               timeout=self.IDLE_EXIT_S):
                    self.thread = None
                    return
                rel, path = self.pending.popitem()
                self.busy = True
            try:
                self.storage.put(path, rel)
            except FileNotFoundError as exc:
                # caught between a checkpoint's two renames (save_checkpoint): its new
                # version is on its way (the trial puts it next); anything else is an error
                if not (path.with_name(PREVIOUS_FILE).exists() or path.exists()):
                    with self.cond:
                        self.error = exc
            except Exception as exc:  # noqa: BLE001 - handed to the trial's thread
                with self.cond:
                    self.error = exc
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()


def chain_record(chain: Chain, *, objectives: list[str]) -> dict[str, Any]:
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


def tune_metrics(record: dict[str, Any], *, done: bool, generation: int) -> dict[str, Any]:
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


def _wait_for_owner(ledger: Any, key: str, progress: Callable[[], float], *,
                    stall_s: float = OWNER_STALL_S) -> dict[str, Any] | None:
    """The owner's done record, or None once it has made no progress (``progress()``: the
    time of its last checkpoint or heartbeat) for ``stall_s``."""
    last = time.time()
    while (record := ledger.done(key)) is None:
        last = max(last, progress())
        if time.time() - last > stall_s:
            return None
        time.sleep(0.2)
    return record


def _failed_record(exc: Exception, chain: Chain) -> dict[str, Any]:
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500],
            "quality_gap": math.nan, "total_flops": math.nan, "collapsed": True,
            "generations_run": max(0, chain.generation - 1), "final_real_nll": math.nan,
            "model0_flops": 0.0}


def _log_trial_summary(log_dir: Path, record: dict[str, Any], frame: pd.DataFrame | None, *,
                       metric: str) -> None:
    """The trial's intervals in TensorBoard; a logging failure never stops a trial."""
    try:
        from sweep.observe.intervals import log_trial_summary

        log_trial_summary(log_dir, record, frame, metric=metric)
    except Exception as exc:  # noqa: BLE001
        _ChainLogger._warn(exc)


def _record_reuse(stage_dir: Path, ledger: Any, record: dict[str, Any], *, trial_id: str,
                  number: int, storage: RunStorage | None = None,
                  run_dir: Path | None = None) -> None:
    if record["trial_id"] == trial_id or number == record.get("number"):
        return  # the same trial, restarted after a crash
    src, dst = stage_dir / record["trial_id"], stage_dir / trial_id
    for name in ("config.yaml", "generations.parquet"):  # so trials/<id>/ is complete
        if storage is not None and run_dir is not None:  # the owner may be on another node
            rel_src, rel_dst = ((d / name).relative_to(run_dir).as_posix() for d in (src, dst))
            if storage.exists(rel_src) and not storage.exists(rel_dst):
                storage.copy(rel_src, rel_dst)
        elif (src / name).is_file() and not (dst / name).exists():
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


def _set_threads(cpus: float, *, torch_family: bool = False) -> None:
    """Several trials share a machine: each takes only its CPU share of torch's threads.

    Only where torch is used: a family with a ``device`` field (the torch families), or torch
    loaded already. A trial of a numpy family does not import torch at all (its BLAS
    threads are Ray's ``OMP_NUM_THREADS``): a new process's imports and first short trial
    took 4.4-5.8 s and 381 MB peak RSS with torch, 2.1-2.3 s and 200 MB without
    (2026-12-02); in a Tune sweep the trial process's imports went from 2.8 s to 1.6 s."""
    if not torch_family and "torch" not in sys.modules:
        return
    import torch

    torch.set_num_threads(max(1, int(cpus)))
