"""One sweep trial without Ray: build the chain, share generation 0, step, record, resume.

``sweep/search/driver.py`` wraps :func:`run_trial` in a Tune function trainable and passes its own
``report`` callable; everything else (files, ledger, cache, checkpoints) lives here so that
it can be read and tested without a Ray cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweep.config import ChainConfig, dump_config, load_config, trial_config
from sweep.engine.chain import Chain
from sweep.files.atomic import write_parquet, write_text
from sweep.files.checkpoint import CorruptCheckpoint, load_checkpoint, save_checkpoint
from sweep.rundir.ledger import Ledger

#: report(metrics, checkpoint_dir_or_None) -> None (tune.report in a sweep).
Report = Callable[[dict[str, Any], Path | None], None]

OK_STATUSES = ("finished", "stopped_collapsed")
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
#: Tests only: a file with a generation number; the trial SIGKILLs itself once after it.
TEST_KILL_FILE = "_test_kill_at"
#: Tests only: JSON {path: value}; a trial whose params match raises at generation 1.
TEST_FAIL_FILE = "_test_fail_params"


def sweep_config(run_dir: Path) -> ChainConfig:
    return load_config(Path(run_dir) / "sweep.yaml")


def model0_key(config: ChainConfig) -> str:
    """Content address of generation 0: it depends on the seed, model, data and n only."""
    dump = config.model_dump(mode="json")
    blob = {"seed": config.seed, "model": dump["model"], "data": dump["data"],
            "n": config.recursion.samples_per_generation}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _final_record(chain: Chain, *, objectives: list[str]) -> dict[str, Any]:
    s = chain.summary()
    status = s["status"]
    values = [s.get(k, math.nan) for k in objectives]
    if status in OK_STATUSES and not all(math.isfinite(float(v)) for v in values):
        status = "diverged"  # an objective Optuna cannot be told is a divergence
    return {"status": status, "quality_gap": float(s["quality_gap"]),
            "total_flops": float(s["total_flops"]), "collapsed": bool(s["collapsed"]),
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
    """sweep.observe.board.ChainLogger when that module works; a logging failure never stops a chain."""

    def __init__(self, log_dir: Path, *, config: ChainConfig, params: dict[str, Any]) -> None:
        self._inner: Any = None
        try:
            from sweep.observe.board import ChainLogger

            self._inner = ChainLogger(log_dir, config=config, params=params)
        except Exception as exc:  # noqa: BLE001 - absent module or TB problem: no TB events
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
        if not isinstance(exc, ModuleNotFoundError):
            print(f"chain logger disabled: {type(exc).__name__}: {exc}", file=sys.stderr)


def run_trial(run_dir: Path, params: dict[str, Any], *, trial_id: str, number: int,
              node: str, report: Report, restored: Path | None = None,
              cpus: float = 1.0) -> dict[str, Any]:
    """Run (or finish, or look up) the chain of one trial; returns its ledger record."""
    run_dir = Path(run_dir)
    base = sweep_config(run_dir)
    objectives = list((base.search or {}).get("objectives") or ["quality_gap", "total_flops"])
    config = trial_config(base, params)
    key = config.fingerprint()
    ledger = Ledger(run_dir)

    if (record := ledger.done(key)) is not None:
        # Done already: before a driver crash, or an earlier trial sampled the same config
        # (NSGA-II crossover does). Its result is this trial's result; nothing is rerun.
        _record_reuse(run_dir, ledger, record, trial_id=trial_id, number=number)
        report(_metrics(record, done=True, generation=record.get("generations_run", 0)), None)
        return record

    first = ledger.started(key)
    if first is not None and first.get("number") != number:
        # Another trial (a duplicate config) owns this chain: wait for its result rather
        # than run the same chain twice; take over only if it stopped making progress.
        record = _wait_for_owner(ledger, key, run_dir / "trials" / first["trial_id"] / "ckpt")
        if record is not None:
            _record_reuse(run_dir, ledger, record, trial_id=trial_id, number=number)
            report(_metrics(record, done=True, generation=record.get("generations_run", 0)), None)
            return record
    _set_threads(cpus)
    tdir = run_dir / "trials" / (first["trial_id"] if first else trial_id)
    own_ckpt = tdir / "ckpt"
    state = _newest_state([restored, own_ckpt])
    cache = run_dir / "cache" / model0_key(config)
    shared = _load_cache(cache) if state is None else None
    chain = Chain(config, model0_state=(shared or {}).get("model0"))
    seconds, shared_model0 = 0.0, shared is not None
    if state is not None:
        chain.load_state_dict(state)
        seconds = float(state.get("sweep_seconds", 0.0))
        shared_model0 = bool(state.get("shared_model0", False))
        ledger.append("resume", key=key, trial_id=tdir.name, generation=chain.generation)
    elif first is not None:  # its checkpoints were lost or damaged: the chain starts over
        ledger.append("resume", key=key, trial_id=tdir.name, generation=0)
    else:
        write_text(tdir / "config.yaml", dump_config(config))
        ledger.append("start", key=key, trial_id=tdir.name, number=number, params=params,
                      seed=config.seed, node=node)
    logger = _ChainLogger(tdir / "tb", config=config, params=params)
    kill_at = _test_kill_generation(run_dir, key)
    fail = _test_fail(run_dir, params)
    started = time.perf_counter()
    last = {"report": started, "tune_ckpt": started, "parquet": started}

    def due(what: str, every: float) -> bool:
        now = time.perf_counter()
        if now - last[what] >= every:
            last[what] = now
            return True
        return False

    def write_frame() -> None:
        frame = chain.frame()
        frame.insert(0, "seed", config.seed)
        write_parquet(frame, tdir / "generations.parquet")

    def finish(record: dict[str, Any]) -> dict[str, Any]:
        elapsed = seconds + time.perf_counter() - started
        record.update(key=key, trial_id=tdir.name, number=number, params=params,
                      seed=config.seed, node=node, seconds=elapsed,
                      shared_model0=shared_model0, model0_key=model0_key(config))
        if chain.rows:
            write_frame()
        ledger.append("done", **record)  # durable before Tune (and Optuna) hear of it
        return record

    record: dict[str, Any] = {}
    while not chain.done:
        try:
            if fail and chain.generation == 1:
                raise RuntimeError("test failure (_test_fail_params)")
            chain.step(on_generation=logger.log_generation)
        except Exception as exc:  # noqa: BLE001 - the chain's own error: a failed trial
            record = finish(_failed_record(exc, chain))
            report(_metrics(record, done=True, generation=chain.generation), None)
            break
        if chain.generation == 1 and not shared_model0 and _load_cache(cache, warn=False) is None:
            save_checkpoint(cache, {"model0": chain.model0_state})
        payload = {**chain.state_dict(), "shared_model0": shared_model0,
                   "sweep_seconds": seconds + time.perf_counter() - started}
        save_checkpoint(own_ckpt, payload)  # a killed trial loses at most the next generation
        record = _final_record(chain, objectives=objectives)
        if chain.done:
            record = finish(record)
        elif due("parquet", PARQUET_EVERY_S):
            write_frame()
        if chain.done or due("report", REPORT_EVERY_S):
            metrics = _metrics(record, done=chain.done, generation=chain.generation - 1)
            if not chain.done and due("tune_ckpt", TUNE_CHECKPOINT_EVERY_S):
                with tempfile.TemporaryDirectory() as tmp:
                    save_checkpoint(tmp, payload)
                    report(metrics, Path(tmp))
            else:
                report(metrics, None)
        if kill_at is not None and chain.generation - 1 == kill_at and not chain.done:
            _kill_self_once(run_dir, key)
    if "key" not in record:  # restored a finished chain whose end was not recorded yet
        record = finish(_final_record(chain, objectives=objectives))
        report(_metrics(record, done=True, generation=chain.generation - 1), None)
    logger.close(record)  # the logger picks the final metrics it knows
    return record


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


def _test_kill_generation(run_dir: Path, key: str) -> int | None:
    path = run_dir / TEST_KILL_FILE
    if not path.is_file() or (run_dir / f"_test_killed_{key}").exists():
        return None
    return int(path.read_text().strip())


def _test_fail(run_dir: Path, params: dict[str, Any]) -> bool:
    path = run_dir / TEST_FAIL_FILE
    if not path.is_file():
        return False
    want = json.loads(path.read_text())
    return all(params.get(k) == v for k, v in want.items())


def _kill_self_once(run_dir: Path, key: str) -> None:
    (run_dir / f"_test_killed_{key}").write_text(str(os.getpid()))
    time.sleep(0.5)  # let the driver take the reported checkpoint first
    os.kill(os.getpid(), signal.SIGKILL)
