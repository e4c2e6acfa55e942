"""What a sweep driver says on the terminal, from its first second.

- ``announce``: one line before anything slow happens (importing Ray, starting it):
  ``quick: 24 trials, 2 at a time; starting Ray (local, 2 CPUs)...``.
- ``phase``: one line per slow step after that (Ray ready, generation 0, trials).
- ``route_logs``: Ray's and Optuna's own log records go to ``RUN_DIR/driver.log`` at every
  level; the terminal shows WARNING and above only, printed through the same rich console as
  the live status line so they appear above it instead of breaking into it.
- ``eta_seconds``: the time left from measured trial durations, not from the elapsed time
  (which counts Ray's start and generation 0 and overestimated a 268 s sweep as 1390 s).

No Ray import here: the CLI calls ``announce`` before it imports the driver.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

LOG_FILE = "driver.log"
#: Loggers of the libraries a sweep drives; their records below WARNING stay in the log file.
LIBRARY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "optuna")

_console: Any = None
_started = time.monotonic()


def console() -> Any:
    """The driver's stderr console (one, so that log lines and the live line share it)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False)
    return _console


def announce(name: str, *, trials: int, concurrency: int, address: str | None,
             resume: bool = False, enabled: bool = True) -> None:
    """The first line of a sweep, printed before Ray is imported or started."""
    global _started
    _started = time.monotonic()
    if not enabled:
        return
    where = (f"joining Ray at {address}" if address else
             f"starting Ray (local, {os.cpu_count() or 1} CPUs)")
    verb = "resuming" if resume else f"{trials} trials, {concurrency} at a time"
    phase(name, f"{verb}; {where}...")


def phase(name: str, text: str, *, enabled: bool = True) -> None:
    """One line for a slow step, with the seconds since ``announce``."""
    if not enabled:
        return
    from rich.markup import escape

    console().print(f"[bold]{escape(name)}[/bold] [dim]{time.monotonic() - _started:5.1f}s[/dim] "
                    f"{escape(text)}")


class _ConsoleHandler(logging.Handler):
    """Log records printed by the driver's console (above a live line, never through it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from rich.markup import escape

            console().print(f"[yellow]{escape(record.levelname)}[/yellow] "
                            f"{escape(self.format(record))}", soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def route_logs(run_dir: Path, *, loggers: Sequence[str] = LIBRARY_LOGGERS) -> Callable[[], None]:
    """Every record of ``loggers`` to RUN_DIR/driver.log; WARNING+ also to the terminal.

    Replaces the libraries' own stream handlers (Ray configures one at import and again in
    ``ray.init``, Optuna has a default one) so that INFO lines ("Started a local Ray
    instance", "A new study created") no longer reach the terminal. Call it again after
    ``ray.init``. Returns ``restore``, which puts the handlers and levels back as they were
    before the first call (a notebook or a test process goes on after the sweep).
    """
    global _saved
    path = Path(run_dir) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    first = _saved is None
    if first:
        _saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
                  for name in loggers}
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_handler.set_name(_FILE_HANDLER)
    terminal = _ConsoleHandler(level=logging.WARNING)
    terminal.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    terminal.set_name(_TERMINAL_HANDLER)
    _optuna_default_handler(enable=False)
    for name in loggers:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if handler.get_name() in (_FILE_HANDLER, _TERMINAL_HANDLER):
                logger.removeHandler(handler)  # called again: replace ours
                handler.close()
            elif isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler):
                logger.removeHandler(handler)
        if name in ("ray", "optuna"):  # children propagate to these
            logger.addHandler(file_handler)
            logger.addHandler(terminal)
            logger.setLevel(logging.INFO)
    return _restore


_FILE_HANDLER, _TERMINAL_HANDLER = "collapse-sweep-file", "collapse-sweep-terminal"
_saved: dict[str, tuple[int, list[logging.Handler]]] | None = None


def _optuna_default_handler(*, enable: bool) -> None:
    try:
        import optuna
    except ImportError:
        return
    if enable:
        optuna.logging.enable_default_handler()
    else:
        optuna.logging.disable_default_handler()  # its own stream handler, INFO and up


def _restore() -> None:
    """Undo ``route_logs``: the libraries' handlers and levels as before the sweep."""
    global _saved
    if _saved is None:
        return
    for name, (level, handlers) in _saved.items():
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if handler.get_name() in (_FILE_HANDLER, _TERMINAL_HANDLER):
                logger.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.setLevel(level)
    _saved = None
    _optuna_default_handler(enable=True)


def eta_seconds(durations: Iterable[float], *, pending: int, running: int,
                parallel: int) -> float:
    """Seconds left: the pending and running trials at the mean measured duration, spread
    over ``parallel`` slots (a running trial counts half: on average it is half done).
    NaN until a trial has finished."""
    done = [d for d in durations if isinstance(d, (int, float)) and math.isfinite(d) and d > 0]
    if not done:
        return math.nan
    mean = sum(done) / len(done)
    return (pending + 0.5 * running) * mean / max(1, parallel)


def fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
