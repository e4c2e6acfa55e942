"""Starting Ray for a sweep's driver: a local instance, or a connection to a cluster.

Nothing here imports Tune, so the CLI can start Ray as soon as a run's config has passed its
checks, with the driver's own imports (Tune, Optuna, pandas, TensorBoard's writer: ~1.5 s of
CPU) running in a thread meanwhile instead of before it (``prestart``). ``start_ray`` then
finds Ray running and hands it over to the sweep as started by this process: the sweep
stops it at its end, and its trials watch this process (a killed driver ends them).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray

from sweep.engine.allocator import worker_env

# Tune's experiment state (RUN_DIR/tune) is never read back: a resumed sweep is rebuilt from
# sweep.yaml, the ledger, the study and the trials' checkpoints. Saving it every second (as
# before) cost the driver ~40 ms of CPU per trial on the CPUs the trials use (and a write to
# object storage each second); once a minute and at the end it only records what ran.
DRIVER_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "60", "RAY_AIR_NEW_OUTPUT": "0",
              "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
              "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
#: A local Ray's own settings (the user's environment wins). Ray starts one idle worker
#: process per CPU at ``ray.init`` for the first tasks; Tune's trial actors never take them
#: (they carry their own runtime env, ``sweep.search.trainable``), so on 2 cores those
#: workers' boot only competed with Ray's start and the first trial processes: `run` to the
#: first generation took 10.1 s without them against 11.4 s with (9 alternated pairs,
#: 2026-12-02, paired difference 1.3 +/- 0.4 s), ray.init 5.4 s against 6.4 s.
LOCAL_RAY_ENV = {"RAY_prestart_worker_first_driver": "0"}
#: What the driver imports once trials run (the sweep board: its module, matplotlib and PIL
#: for the Pareto image; pyarrow for results.parquet). Imported in a thread while ray.init
#: waits for Ray's processes, instead of between Tune's start and the first trial (measured:
#: `run` to the first generation, benchmarks/RESULTS.md). Not torch: the board writes its
#: events without it (sweep.observe.events); only the health check's chains import it.
WARM_IMPORTS = ("sweep.observe.board", "matplotlib.figure", "matplotlib.backends.backend_agg",
                "PIL.PngImagePlugin", "pyarrow.parquet")
#: The driver module itself (Tune, Optuna, pandas), imported beside ray.init by ``prestart``.
DRIVER_MODULE = "sweep.search.driver"
#: Modules that both ray.init and the import of Tune load: imported before the thread starts,
#: so the two never import the same module at once (Ray's packages import each other in
#: cycles, and two threads entering a cycle from both ends is Python's import deadlock).
SHARED_WITH_TUNE = ("ray._common.usage.usage_lib", "ray.dashboard", "gzip", "gettext",
                    "pkgutil", "socketserver")

_handed_over = False  # Ray was started by prestart() and not yet taken by start_ray()
#: Seconds prestart() took to start the Ray that start_ray() hands (or last handed) over
#: (the driver's imports beside it included); None when start_ray() last started or found
#: a Ray of its own
_prestart_seconds: float | None = None


def start_ray(address: str | None, *, runtime_env: dict[str, Any] | None = None) -> bool:
    """Connect (address) or start a local Ray; True when this process started it for the
    caller (this call, or ``prestart`` before it).

    ``runtime_env``: for a local Ray, the job's runtime environment (the benchmark's probe)."""
    global _handed_over, _prestart_seconds
    for key, value in DRIVER_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        started, _handed_over = _handed_over, False
        if not started:
            _prestart_seconds = None
        return started
    _prestart_seconds = None
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        # Local: no dashboard (its job API runs code for whoever reaches it); Ray's token
        # auth stays on for the GCS / raylet ports. address="local" starts a new instance
        # even when another Ray runs on this machine (a bare ray.init() would join that one
        # via /tmp/ray/ray_current_cluster and refuse num_cpus).
        auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        worker_log = logging.getLogger("ray._private.worker")
        auth_log.addFilter(_token_auth_on_by_default)
        worker_log.addFilter(_local_instance_started)
        try:
            # Ray's processes inherit this environment, its trial processes from them: one
            # malloc arena (sweep.engine.allocator: ~0.4 s less per Tune trial of short chains)
            with environ({**local_ray_env(), **worker_env()}):
                ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=False, runtime_env=runtime_env)
        finally:
            auth_log.removeFilter(_token_auth_on_by_default)
            worker_log.removeFilter(_local_instance_started)
    return True


def local_ray_env() -> dict[str, str]:
    """``LOCAL_RAY_ENV`` less what the environment sets already."""
    return {k: v for k, v in LOCAL_RAY_ENV.items() if k not in os.environ}


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ inside the block (for the processes started there), the
    environment as it was after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def prestart(address: str | None) -> None:
    """Start Ray now, importing the driver and ``WARM_IMPORTS`` in a thread meanwhile; the
    sweep's ``start_ray`` takes it over. For the CLI, after the run's checks passed.

    Ctrl-C meanwhile is held until both are done, then raised (KeyboardInterrupt): raised
    while two threads import, it can leave a module lock held, and the command hung instead
    of exiting (seen in tests/test_faults.py's Ctrl-C drill)."""
    global _handed_over, _prestart_seconds
    began = time.time()
    with interrupt_held():
        for name in SHARED_WITH_TUNE:
            importlib.import_module(name)
        imports = import_in_background((DRIVER_MODULE, *WARM_IMPORTS))
        _handed_over = start_ray(address)
        imports.join()
        _prestart_seconds = time.time() - began


def ray_start_seconds(started: float) -> float:
    """How long starting the Ray that ``start_ray`` last returned took, for the status line:
    ``prestart``'s own time if it was taken over from there (not the time since: the sweep's
    health check runs between the two), else the time since ``started``."""
    return _prestart_seconds if _prestart_seconds is not None else time.time() - started


@contextlib.contextmanager
def interrupt_held() -> Iterator[None]:
    """SIGINT inside the block is raised as KeyboardInterrupt when the block ends (main
    thread only: elsewhere Python delivers no signals anyway). Around ``ray.init`` with an
    import thread running: Ctrl-C raised inside an import can leave its module lock held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def import_in_background(names: tuple[str, ...]) -> threading.Thread:
    """Import ``names`` in a daemon thread (a later import of one waits for it, Python's
    per-module import lock); a module that fails to import is left to its real user."""
    def work() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - its user imports it again and says why
                continue

    thread = threading.Thread(target=work, name="warm-imports", daemon=True)
    thread.start()
    return thread


def _token_auth_on_by_default(record: logging.LogRecord) -> bool:
    """False for Ray's WARNING that a local Ray has token auth on by default: it is on here
    by design (README, "Security"), and the line broke into the sweep's first status lines.
    Its warning that auth is *off* (RAY_AUTH_MODE=disabled) still shows."""
    return "Token authentication is enabled" not in record.getMessage()


def _local_instance_started(record: logging.LogRecord) -> bool:
    """False for Ray's INFO line "Started a local Ray instance.": it broke into the sweep's
    status lines with its own timestamp format, and the next status line says so."""
    return "Started a local Ray instance" not in record.getMessage()
