"""Serve a run's TensorBoard on the loopback interface only.

``RUN_DIR`` holds one run per trial (``trials/<id>/tb``) and the sweep board (``tb``), so
``--logdir RUN_DIR`` shows them side by side and the HParams dashboard compares the trials.
TensorBoard is bound to 127.0.0.1: event files name paths and configs, and TensorBoard has no
authentication; reach it from elsewhere through an SSH tunnel
(``ssh -L 6006:127.0.0.1:6006 host``), never by binding 0.0.0.0.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

#: The only addresses ``serve`` binds (loopback).
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def command(logdir: str | Path, *, port: int = 6006) -> str:
    """The equivalent shell command line, for printing."""
    port_arg = "" if port == 6006 else f" --port {port}"
    return f"tensorboard --logdir {shlex.quote(str(logdir))} --host 127.0.0.1{port_arg}"


def argv(logdir: str | Path, *, port: int = 6006, host: str = "127.0.0.1") -> list[str]:
    """TensorBoard's command-line arguments (without the program name)."""
    if host not in LOOPBACK:
        raise ValueError(f"host: {host!r} is not a loopback address (allowed: {', '.join(LOOPBACK)}); "
                         "use an SSH tunnel to reach TensorBoard from another machine")
    if not 0 <= int(port) < 65536:
        raise ValueError(f"port: {port} is out of range (allowed: 0..65535)")
    return ["--logdir", str(logdir), "--host", host, "--port", str(int(port))]


def serve(logdir: str | Path, *, port: int = 6006, host: str = "127.0.0.1") -> None:
    """Run TensorBoard on ``logdir`` until interrupted (Ctrl-C), bound to ``host`` only."""
    from tensorboard import program

    args = argv(logdir, port=port, host=host)
    if not Path(logdir).is_dir():
        raise FileNotFoundError(f"logdir: {logdir} does not exist")
    tb = program.TensorBoard()
    tb.configure(argv=[None, *args])
    try:
        tb.main()  # blocks; prints "TensorBoard ... at http://127.0.0.1:PORT/"
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- optuna-dashboard
DASHBOARD_INSTALL = "pip install 'collapse-sweep[dashboard]'"


def dashboard_storage(run_dir: str | Path) -> Any:
    """The sweep's Optuna storage (RUN_DIR/optuna.journal, or an older run's optuna.db);
    FileNotFoundError naming RUN_DIR when it has none."""
    from sweep.files.study import open_storage

    return open_storage(run_dir)


def serve_dashboard(run_dir: str | Path, *, port: int = 8080, host: str = "127.0.0.1") -> None:
    """optuna-dashboard on the sweep's study until interrupted, bound to ``host`` only.

    The study carries the objectives' names, the feasibility constraint and, per trial,
    the Tune trial id and its directory (``trials/<id>``) as user attributes.
    """
    import importlib.util

    if host not in LOOPBACK:
        raise ValueError(f"host: {host!r} is not a loopback address (allowed: {', '.join(LOOPBACK)})")
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise ModuleNotFoundError(f"optuna-dashboard is not installed ({DASHBOARD_INSTALL})")
    storage = dashboard_storage(run_dir)
    from optuna_dashboard import run_server

    print(f"optuna-dashboard: http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    try:
        run_server(storage, host=host, port=int(port))
    except KeyboardInterrupt:
        pass
