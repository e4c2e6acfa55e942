"""The Tune trainable: what a trial process runs (``run_trial``, or a batch of them).

Kept apart from the driver (``sweep.search.driver``) so that a trial process, which
imports this module to unpickle the trainable, does not import what only the driver uses
(Optuna and the searcher, the progress display, the trackers): ~0.3 s of CPU less for each
trial process to start.

A trial process still boots Ray's worker (~1.2-1.7 s) and imports ``ray.tune`` (~1.5 s of
the ~1.7 s of imports) before its first trial, and that cannot be done ahead in Ray 2.60
(tried 2026-12-02): Tune creates its trainable actors with a ``runtime_env`` of its own
(``env_vars``, ``ray/tune/execution/class_cache.py``), so they never take the ``ray::IDLE``
workers Ray starts at ``ray.init`` (a plain actor does), nor the workers of warm-up tasks
given that same runtime env.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweep.config import ChainConfig, load_config, parse_yaml
from sweep.rundir.storage import RunStorage, cache_dir
from sweep.search import batching
from sweep.search.trial import run_trial, tune_metrics

WATCH_DRIVER_S = 0.25  # a local trial process checks this often that its driver is alive


def tune_trainable(config: dict[str, Any]) -> None:
    """The Tune function trainable: one trial = ``run_trial`` with Tune's report/checkpoint;
    a batch (``sweep.search.batching``) = ``run_trial`` for each of its Optuna trials."""
    params = {k: v for k, v in config.items() if not k.startswith("__")}
    base = _sweep_config(config["__sweep"]) if config.get("__sweep") else None
    where: dict[str, Any] = {"run_dir": Path(config.get("__run_dir", "."))}
    if config.get("__storage"):  # object storage: this node's cache, the driver's ledger
        from sweep.search.remote import RemoteLedger

        where = {"run_dir": cache_dir(config["__storage"]),
                 "storage": RunStorage(config["__storage"]),
                 "ledger": RemoteLedger(config["__ledger"])}
    if config.get("__driver_pid"):
        _watch_driver(int(config["__driver_pid"]))
    stage = str(config.get("__stage", "search"))
    if stage == "confirm":  # a confirmation run: the candidate's params travel as JSON
        params = json.loads(config["__params"])
    ctx = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
    trial_id = tune.get_context().get_trial_id()
    run = dict(**where, base=base, node=node, cpus=float(config.get("__cpus", 1)), stage=stage)
    if (members := batching.members(config)) is not None:
        _run_batch(members, trial_id=trial_id, **run)
        return
    run.update(params=params, trial_id=trial_id, number=int(config.get("__number", -1)),
               report=_tune_report)
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        run_trial(**run)
        return
    with checkpoint.as_directory() as restored:
        run_trial(**run, restored=Path(restored))


def _run_batch(members: list[dict[str, Any]], *, trial_id: str, **run: Any) -> None:
    """The Optuna trials of one batch, one after another, each a trial of its own
    (``trials/<tune id>-<number>``). Tune hears progress while a member runs and, at the
    end, one final report with every member's metrics. No Tune checkpoints: each member
    resumes from its own (written every generation), and a retried batch finds the
    members done in the ledger."""
    results = []
    for member in members:
        record = run_trial(**run, params=member["params"],
                           trial_id=batching.member_dir(trial_id, member["number"]),
                           number=int(member["number"]), report=_member_report)
        results.append({**tune_metrics(record, done=True,
                                   generation=int(record.get("generations_run", 0))),
                        "number": int(member["number"])})
    final = {**results[-1], batching.BATCH_RESULTS: json.dumps(results), "members": len(results),
             "failed": all(r["failed"] for r in results)}
    _tune_report(final, None)


@functools.lru_cache(maxsize=4)
def _sweep_config(text: str) -> ChainConfig:
    """The sweep config each trial gets as YAML, parsed once per trial process (a reused
    process runs many trials of one sweep): YAML and validation took ~16 ms of a trial."""
    return load_config(parse_yaml(text))


_WATCHED: set[int] = set()


def _watch_driver(pid: int) -> None:
    """End this trial process when the local driver that started Ray is gone (SIGKILL).

    Ray does not stop a killed driver's trial workers, which then hold CPUs and write into
    the run directory; ``resume`` takes over their chains from the checkpoints.
    """
    if pid in _WATCHED:
        return
    _WATCHED.add(pid)

    def watch() -> None:
        while True:
            time.sleep(WATCH_DRIVER_S)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="watch-driver", daemon=True).start()


def _tune_report(metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
    ckpt = tune.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir is not None else None
    tune.report(metrics, checkpoint=ckpt)


def _member_report(metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
    """A batch member's progress (throttled by run_trial) goes to Tune, without a checkpoint;
    its end does not (Tune would end the batch): the batch's final report carries it."""
    if not metrics.get("done"):
        _tune_report(metrics, None)
