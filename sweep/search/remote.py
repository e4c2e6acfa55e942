"""The ledger of a sweep on object storage: one Ray actor on the driver's node owns it.

With ``--storage s3://...`` no trial can reach the driver's disk, so the trials do not open
``ledger.jsonl`` themselves: ``LedgerKeeper``, an actor pinned to the driver's node
(``num_cpus=0``, so it never takes a trial's CPU), appends to the driver's local copy (one
``fsync``'ed line, as ``sweep.rundir.ledger.Ledger`` does) and uploads the ledger and a
snapshot of the Optuna study (``sweep.files.study``) before the call returns. A trial's ``done`` is therefore durable,
locally and in the storage, before Tune (and Optuna) hear of the trial; a driver killed at
any moment leaves a storage from which ``resume URI`` continues without rerunning a finished
trial. ``RemoteLedger`` is the trial's side: the same methods as ``Ledger``.

The keeper also holds each chain's last heartbeat (in memory), which a trial waiting for a
duplicate config's owner uses instead of the owner's checkpoint files (on another node).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweep.files.study import study_file
from sweep.rundir.ledger import LEDGER_FILE, Ledger
from sweep.rundir.storage import RunStorage

NAMESPACE = "collapse-sweep"


class _Keeper:
    """The actor's body (also usable without Ray, in tests)."""

    def __init__(self, run_dir: str, run_uri: str) -> None:
        self.run_dir = Path(run_dir)
        self.ledger = Ledger(self.run_dir)
        self.storage = RunStorage(run_uri)
        self.beats: dict[str, float] = {}
        self.lock = threading.Lock()

    def append(self, event: str, fields: dict[str, Any]) -> None:
        with self.lock:
            self.ledger.append(event, **fields)
            self.storage.put(self.ledger.path, LEDGER_FILE)
            study = study_file(self.run_dir)
            if study is not None:  # the trial this record names is in the snapshot
                self.storage.put_study(study, study.name)

    def claim(self, key: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            owner = self.ledger.claim(key, **fields)
            if owner is None:
                self.storage.put(self.ledger.path, LEDGER_FILE)
            return owner

    def done(self, key: str) -> dict[str, Any] | None:
        return self.ledger.done(key)

    def started(self, key: str) -> dict[str, Any] | None:
        return self.ledger.started(key)

    def beat(self, key: str) -> None:
        self.beats[key] = time.time()

    def last_beat(self, key: str) -> float | None:
        return self.beats.get(key)


LedgerKeeper = ray.remote(num_cpus=0, max_concurrency=8)(_Keeper)


def start_keeper(run_dir: Path, run_uri: str) -> tuple[str, Any]:
    """Start the keeper on this (the driver's) node; returns (its name, its handle)."""
    name = f"ledger-{uuid.uuid4().hex[:12]}"
    node = ray.get_runtime_context().get_node_id()
    handle = LedgerKeeper.options(
        name=name, namespace=NAMESPACE,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
    ).remote(str(run_dir.resolve()), run_uri)
    ray.get(handle.last_beat.remote(""))  # up (and its pyarrow filesystem made) before trials
    return name, handle


class RemoteLedger:
    """A trial's view of the keeper: ``Ledger``'s methods, through Ray."""

    def __init__(self, name: str) -> None:
        self.handle = ray.get_actor(name, namespace=NAMESPACE)

    def append(self, event: str, **fields: Any) -> None:
        ray.get(self.handle.append.remote(event, fields))

    def claim(self, key: str, **fields: Any) -> dict[str, Any] | None:
        return ray.get(self.handle.claim.remote(key, fields))

    def done(self, key: str) -> dict[str, Any] | None:
        return ray.get(self.handle.done.remote(key))

    def started(self, key: str) -> dict[str, Any] | None:
        return ray.get(self.handle.started.remote(key))

    def beat(self, key: str) -> None:
        self.handle.beat.remote(key)  # fire and forget: liveness only

    def last_beat(self, key: str) -> float | None:
        return ray.get(self.handle.last_beat.remote(key))
