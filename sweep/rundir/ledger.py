"""A durable, append-only record of a sweep's chains (``RUN_DIR/ledger.jsonl``).

Ray Tune saves its experiment state only every few seconds, so after a killed driver it
can re-create trials that had already finished. The ledger is what makes "every trial runs
exactly once" true: a chain's completion is written here (one fsync'ed line) before Tune
hears of it, and a trial whose key is already done returns the recorded result at once.

Events (one JSON object per line):
  ``start``  a chain began from generation 0   (key, trial_id, number, params, ...)
  ``resume`` a chain continued from a checkpoint (key, generation)
  ``done``   a chain ended: finished | stopped_collapsed | diverged | failed (+ summary)
  ``error``  the driver saw the trial error out after all retries (retried on resume)

The key of a trial is the fingerprint of its resolved chain config (params and seed
included): equal work has equal keys, whatever Tune or Optuna call the trial.
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

LEDGER_FILE = "ledger.jsonl"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; keep them as strings that float() reads back.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class Ledger:
    """Append-only JSON-lines file; every append is one ``write`` + ``fsync``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LEDGER_FILE

    def append(self, event: str, **fields: Any) -> None:
        record = _clean({"event": event, "time": time.time(), "pid": os.getpid(), **fields})
        line = (json.dumps(record, default=_json_default) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND + one write keeps concurrent writers' lines whole on a local filesystem.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a writer died mid-line: end its torn line, keep ours whole
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def claim(self, key: str, *, number: int, **fields: Any) -> dict[str, Any] | None:
        """Append ``start`` for ``key`` unless another trial (another ``number``) started it:
        then its start record is returned and nothing is written. The check and the append
        hold an exclusive lock on the ledger, so two trials of one config (a duplicate a
        sampler asked twice, a trial handed out again after a crash beside a new one) never
        both start the chain: the second waits for the first's result."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            owner = self.started(key)
            if owner is not None and owner.get("number") != number:
                return owner
            self.append("start", key=key, number=number, **fields)
            return None
        finally:
            os.close(fd)  # releases the lock

    def records(self) -> list[dict[str, Any]]:
        """Every record, in order (read-only: the dicts are this process's cache of the file)."""
        return _read(self.path)

    def done(self, key: str) -> dict[str, Any] | None:
        """The first ``done`` record of ``key`` or None."""
        return _copy(next((r for r in self.records()
                           if r["event"] == "done" and r["key"] == key), None))

    def done_by_number(self, number: int) -> dict[str, Any] | None:
        """The result of search trial ``number``: its own ``done`` record, or that of the
        trial whose chains it reused (a duplicate config); None when it has none."""
        records = [r for r in self.records() if r.get("stage", "search") == "search"]
        mine = [r for r in records if r.get("number") == number and r["event"] in ("done", "reuse")]
        own = next((r for r in mine if r["event"] == "done"), None)
        reused = {r["key"] for r in mine}
        return _copy(own or next((d for d in records
                                  if d["event"] == "done" and d["key"] in reused), None))

    def started(self, key: str) -> dict[str, Any] | None:
        return _copy(next((r for r in self.records()
                           if r["event"] == "start" and r["key"] == key), None))

    def chains_started(self) -> dict[str, int]:
        """How many times each key's chain was started from generation 0."""
        counts: dict[str, int] = {}
        for r in self.records():
            if r["event"] == "start":
                counts[r["key"]] = counts.get(r["key"], 0) + 1
        return counts


#: path -> ((device, inode), bytes read, the last bytes read, records)
_CACHE: dict[str, tuple[tuple[int, int], int, bytes, list[dict[str, Any]]]] = {}
_CACHE_LOCK = threading.Lock()
_TAIL = 64  # bytes before the offset that must be unchanged for the cache to hold


def _read(path: Path) -> list[dict[str, Any]]:
    """The file's records, reading only what was appended since this process last read it.

    A trial looks its key up (done? started?) before it runs: re-parsing the whole file each
    time made every trial cost O(trials so far) (measured in benchmarks/RESULTS.md). The
    cache is per process and file; it starts over when the file is another one (inode),
    shorter than what was read, or no longer ends what was read with the same bytes (a
    rewrite). Only whole lines are taken: a line being written (or torn by a crash) is read
    once it ends, and a torn one never parses (that event did not happen).
    """
    name = os.path.abspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return []
    ident = (st.st_dev, st.st_ino)
    with _CACHE_LOCK:
        cached_ident, offset, tail, records = _CACHE.get(name, (ident, 0, b"", []))
        if cached_ident != ident or st.st_size < offset:
            offset, tail, records = 0, b"", []
        with open(name, "rb") as f:
            f.seek(offset - len(tail))
            chunk = f.read()
            if not chunk.startswith(tail):  # rewritten in place: read it all again
                offset, tail, records = 0, b"", []
                f.seek(0)
                chunk = f.read()
        chunk = chunk[len(tail):]
        whole = chunk.rfind(b"\n") + 1
        for line in chunk[:whole].splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line after a crash: that event did not happen
        offset += whole
        tail = (tail + chunk[:whole])[-_TAIL:]
        _CACHE[name] = (ident, offset, tail, records)
        return list(records)


def _copy(record: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if record is None else copy.deepcopy(record)


def as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
