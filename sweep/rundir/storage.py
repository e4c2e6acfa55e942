"""Run directories on object storage (``--storage s3://bucket/prefix``, ``gs://...``).

A sweep on a cluster without a shared disk keeps its run at a URI. Every process works on a
local copy, the run's *cache* (``$COLLAPSE_SWEEP_CACHE``, default
``~/.cache/collapse-sweep``, then ``<hash of the storage URI>/<name>``), and moves files
through ``pyarrow.fs`` (credentials and endpoint from the standard environment, e.g.
``AWS_ENDPOINT_URL``, ``AWS_PROFILE``):

- the driver owns ``sweep.yaml``, the ledger, the Optuna study (``optuna.journal``, uploaded
  up to its last complete line; an older run's ``optuna.db`` as a consistent SQLite
  snapshot), ``results.*``, the summary and the sweep's board, and uploads them as they change
  (``push_run``);
- a trial, on whatever node it runs, writes ``trials/<id>/`` (and ``confirm/<id>/``) in its
  node's cache and uploads them itself: its checkpoint every generation, its table and
  TensorBoard events as they are written (``RunStorage.put_tree``);
- ``resume``, ``analyze``, ``report``, ``tensorboard`` and ``dashboard`` on the URI download
  the run into the cache first (``pull_run``); a cache whose driver is running is already
  the newest copy and is used as it is.

Nothing here imports Ray; the driver side that does is ``sweep.search.remote``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

from sweep.config import ConfigError
from sweep.files.atomic import atomic_path
from sweep.files.study import JOURNAL_FILE, JOURNAL_LOCK, complete_lines
from sweep.rundir.ledger import Ledger

CACHE_ENV = "COLLAPSE_SWEEP_CACHE"
#: Never uploaded by the driver: the trials upload their own directories; Tune writes its
#: state itself (``tune*``); the lock and the generation-0 cache are per machine.
DRIVER_SKIP = ("trials", "confirm", "cache", "tune", "tune-confirm", "driver.lock",
               JOURNAL_LOCK)
#: Trial directories live under these (``sweep.search.trial.STAGE_DIRS``).
TRIAL_ROOTS = ("trials", "confirm")


def is_uri(storage: str | Path) -> bool:
    """True for ``scheme://...`` storage (s3, gs, ...); a plain path is a (shared) disk."""
    text = str(storage)
    return "://" in text and not text.startswith("file://")


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "collapse-sweep")


def cache_dir(run_uri: str) -> Path:
    """This machine's local copy of the run at ``run_uri`` (``.../<storage hash>/<name>``)."""
    parent, _, name = run_uri.rstrip("/").rpartition("/")
    digest = hashlib.sha256(parent.encode()).hexdigest()[:12]
    return cache_root() / digest / name


class RunStorage:
    """One run's directory at a URI: upload, download, list, delete, relative to the run."""

    def __init__(self, uri: str) -> None:
        from pyarrow import fs as pafs

        self.uri = uri.rstrip("/")
        self._pafs = pafs
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError
            raise ConfigError(f"--storage: {self.uri}: {_first_line(exc)}") from None
        self._sent: dict[str, tuple[int, int]] = {}  # rel -> (size, mtime_ns) uploaded

    def path(self, rel: str = "") -> str:
        return "/".join([self.root, rel.strip("/")]) if rel.strip("/") else self.root

    # ---------------------------------------------------------------- checks
    def check_writable(self) -> None:
        """ConfigError (one line) unless the bucket exists and takes a write here."""
        probe = self.path(".write-test")
        try:
            with self.fs.open_output_stream(probe) as out:
                out.write(b"ok")
            self.fs.delete_file(probe)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"--storage: {self.uri} is not writable ({_first_line(exc)}); "
                              "check the bucket name, credentials and AWS_ENDPOINT_URL") from None

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != self._pafs.FileType.NotFound

    # ---------------------------------------------------------------- writes
    def put(self, local: Path, rel: str) -> None:
        with open(local, "rb") as src, self.fs.open_output_stream(self.path(rel)) as out:
            while chunk := src.read(1 << 22):
                out.write(chunk)

    def put_bytes(self, data: bytes, rel: str) -> None:
        with self.fs.open_output_stream(self.path(rel)) as out:
            out.write(data)

    def put_study(self, local: Path, rel: str) -> None:
        """The Optuna study file ``local``, as a reader may use it while the driver writes:
        a journal up to its last complete line, an SQLite database as a consistent snapshot."""
        if local.name == JOURNAL_FILE:
            self.put_bytes(complete_lines(local.read_bytes()), rel)
        else:
            self.put_db(local, rel)

    def put_db(self, local: Path, rel: str) -> None:
        """A consistent snapshot of the SQLite database ``local`` (written by others meanwhile)."""
        with tempfile.TemporaryDirectory() as tmp:
            snap = Path(tmp) / local.name
            src = sqlite3.connect(f"file:{local}?mode=ro", uri=True, timeout=30)
            try:
                dst = sqlite3.connect(snap)
                try:
                    src.backup(dst)
                finally:
                    dst.close()
            finally:
                src.close()
            self.put(snap, rel)

    def put_tree(self, local_dir: Path, rel: str = "", *,
                 skip: Callable[[str], bool] | None = None) -> int:
        """Upload the files under ``local_dir`` that changed since this object last sent them."""
        sent = 0
        if not local_dir.is_dir():
            return 0
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            sub = path.relative_to(local_dir).as_posix()
            if sub.startswith(".") or "/." in sub or (skip is not None and skip(sub)):
                continue  # atomic writes' temp files
            target = f"{rel.strip('/')}/{sub}".lstrip("/")
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            if self._sent.get(target) == stamp:
                continue
            if path.suffix == ".db" or path.name == JOURNAL_FILE:
                self.put_study(path, target)
            else:
                try:
                    self.put(path, target)
                except FileNotFoundError:
                    continue  # replaced meanwhile: the next call sends the new one
            self._sent[target] = stamp
            sent += 1
        return sent

    def copy(self, src_rel: str, dst_rel: str) -> None:
        self.fs.copy_file(self.path(src_rel), self.path(dst_rel))

    def delete(self, rel: str = "") -> None:
        """Remove ``rel`` (a file or a directory, the whole run when empty) if it exists."""
        info = self.fs.get_file_info(self.path(rel))
        if info.type == self._pafs.FileType.Directory:
            if rel:
                self.fs.delete_dir(self.path(rel))
            else:
                self.fs.delete_dir_contents(self.path(), missing_dir_ok=True)
        elif info.type == self._pafs.FileType.File:
            self.fs.delete_file(self.path(rel))
        self._sent = {k: v for k, v in self._sent.items()
                      if rel and not (k == rel or k.startswith(rel.rstrip("/") + "/"))}

    # ---------------------------------------------------------------- reads
    def files(self, rel: str = "") -> list[tuple[str, int, float]]:
        """(path relative to ``rel``, size, mtime) of every file under ``rel``; [] if none."""
        base = self.path(rel)
        selector = self._pafs.FileSelector(base, recursive=True, allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(selector):
            if info.type == self._pafs.FileType.File:
                mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
                out.append((info.path[len(base):].lstrip("/"), int(info.size or 0), mtime))
        return out

    def get(self, rel: str, local: Path) -> bool:
        """Download one file (atomically); False when it does not exist."""
        try:
            src = self.fs.open_input_stream(self.path(rel))
        except FileNotFoundError:
            return False
        with src, atomic_path(local) as tmp, open(tmp, "wb") as out:
            while chunk := src.read(1 << 22):
                out.write(chunk)
        return True

    def get_tree(self, rel: str, local_dir: Path, *,
                 keep: Callable[[str], bool] | None = None) -> int:
        """Download the files under ``rel`` that are missing or different here; returns the
        count. A downloaded file gets the storage's mtime, so an unchanged one is skipped."""
        got = 0
        for sub, size, mtime in self.files(rel):
            if keep is not None and not keep(sub):
                continue
            local = local_dir / sub
            try:
                st = local.stat()
                if st.st_size == size and st.st_mtime >= mtime - 1e-3:
                    continue
            except FileNotFoundError:
                pass
            if self.get(f"{rel.strip('/')}/{sub}".lstrip("/"), local):
                os.utime(local, (mtime, mtime))
                got += 1
        return got


def push_run(local: Path, storage: RunStorage) -> int:
    """Upload what the driver owns (everything but the trials' directories, Tune's state,
    the lock and the generation-0 cache) where it changed; returns the files sent."""
    return storage.put_tree(local, skip=lambda sub: sub.split("/", 1)[0] in DRIVER_SKIP)


def pull_run(storage: RunStorage, local: Path, *, checkpoints: str = "none",
             trials_only: bool = False) -> Path:
    """Bring ``local`` up to date with the run at ``storage``; returns ``local``.

    ``checkpoints``: ``none`` (analysis: tables, configs, TensorBoard events only) or
    ``unfinished`` (resume: also the checkpoints of trials whose ``done`` record the ledger
    lacks, the ones that continue). Tune's state and the generation-0 cache stay remote.
    ``trials_only``: only the trials' directories (the driver, whose own files are newer).
    """
    local.mkdir(parents=True, exist_ok=True)
    if not trials_only:  # sweep.yaml, the ledger, the study, results...
        storage.get_tree("", local, keep=lambda sub: "/" not in sub and sub != JOURNAL_LOCK)
    finished = {r.get("trial_id") for r in Ledger(local).records() if r.get("event") == "done"}

    def keep(sub: str) -> bool:
        top, _, rest = sub.partition("/")
        if top in ("tune", "tune-confirm", "cache") or "/" not in sub:
            return False
        if trials_only and top not in TRIAL_ROOTS:
            return False
        if top in TRIAL_ROOTS:
            trial, _, inner = rest.partition("/")
            if inner.startswith("ckpt/") or inner == "ckpt":
                return checkpoints == "unfinished" and trial not in finished
        return True

    storage.get_tree("", local, keep=keep)
    return local


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
