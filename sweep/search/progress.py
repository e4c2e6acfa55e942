"""The driver-side Tune callback of a sweep: results, the sweep board, a status line.

As trials finish it rewrites ``results.parquet`` / ``sweep_summary.json`` (at most every
``REFRESH_EVERY_S``) and the TensorBoard Pareto board (``BOARD_EVERY_S``), records trial
errors in the ledger, prunes the checkpoints of finished trials, and (``progress=True``)
shows one rich status line.

Tune pickles its ``RunConfig`` (this callback included) into the run's ``tuner.pkl`` and a
resumed sweep gets that copy back; so the callback holds only plain, picklable settings
(``SweepSettings``) and opens its handles (the live line, the board) in ``setup``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback
from rich.markup import escape

from sweep.config import ChainConfig, ConfigError, trial_config
from sweep.rundir.ledger import Ledger
from sweep.rundir.results import (
    OK_STATUSES,
    cheapest_feasible,
    results_frame,
    sweep_summary,
    write_results,
    write_summary,
)
from sweep.rundir.storage import RunStorage, push_run
from sweep.search import batching
from sweep.search.space import SearchSpec

PRUNE_AFTER_S = 30.0  # a finished trial's Tune checkpoints are deleted after this long
# results.parquet, summary.json and the sweep's TensorBoard board (a matplotlib Pareto plot)
# are redrawn at most this often while trials finish, and at the end: the driver shares the
# CPUs with the trials, and redrawing after every short trial cost more than the trial.
REFRESH_EVERY_S = 5.0
# The Pareto image in RUN_DIR/tb (~0.3 s of driver CPU a drawing of 256 results, ~0.5 s
# before sweep.observe.board dropped tight_layout and minor ticks): drawn this long after the
# sweep starts, then as often, and at the end.
BOARD_EVERY_S = 30.0
STATUS_EVERY_S = 1.0  # the status line is redrawn at most this often between refreshes


@dataclass(frozen=True)
class SweepSettings:
    """What the driver tells its callback: the sweep, where it lives, whether to draw."""

    config: ChainConfig
    spec: SearchSpec
    run_dir: Path
    progress: bool | None
    """Draw the status line; None: when stderr is a terminal."""
    storage: str | None = None
    """The run's URI on object storage (``run_dir`` is then the driver's local cache)."""

    def results(self) -> pd.DataFrame:
        return results_frame(self.run_dir, space=list(self.spec.space),
                             objectives=list(self.spec.objectives))


def write_sweep_results(settings: SweepSettings, *, wall_seconds: float) -> pd.DataFrame:
    """results.parquet/.csv and sweep_summary.json from the ledger; returns the frame."""
    df = settings.results()
    write_results(settings.run_dir, df)
    write_summary(settings.run_dir, sweep_summary(
        df, tolerance=settings.config.collapse.tolerance, wall_seconds=wall_seconds))
    if settings.storage:
        push_run(settings.run_dir, _storage(settings.storage))
    return df


_STORAGES: dict[str, RunStorage] = {}


def _storage(uri: str) -> RunStorage:
    """One RunStorage per URI in the driver: it remembers what it has uploaded."""
    if uri not in _STORAGES:
        _STORAGES[uri] = RunStorage(uri)
    return _STORAGES[uri]


class SweepProgress(Callback):
    """Driver-side: results.parquet + SweepBoard as trials finish, a rich status line."""

    def __init__(self, settings: SweepSettings) -> None:
        self.settings = settings
        self._reset()

    def _reset(self) -> None:
        self._done_dirs: list[tuple[float, str | None, Any]] = []
        self._stale = False  # trials finished since results.parquet was last written
        self._refreshed = self._rendered = 0.0
        self._started = time.time()
        # the board's first drawing waits BOARD_EVERY_S too: a sweep shorter than that
        # draws it once, at its end (it was drawn with the first results as well)
        self._drawn = self._started
        self._done_before = 0
        self._live: Any = None
        self._board: Any = None
        self._trial_started: dict[str, float] = {}
        self._durations: list[float] = []  # wall seconds of the trials finished here
        self._max_running = 0
        self._reported = False  # a trial has reported: generation 0 is behind us

    def __getstate__(self) -> dict[str, Any]:
        # No open handles in tuner.pkl, and no display choice: the copy a resumed sweep gets
        # back draws the status line when stderr is a terminal.
        return {"settings": replace(self.settings, progress=None)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings = state["settings"]
        self._reset()

    # ---------------------------------------------------------------- Tune hooks
    def setup(self, **info: Any) -> None:
        self._reset()
        self._done_before = int((self.settings.results()["status"] != "running").sum())
        progress = self.settings.progress
        if progress is None:
            progress = sys.stderr.isatty()
        if progress:
            from rich.live import Live

            from sweep.observe.status import console

            # the console Ray's and Optuna's warnings print through (sweep.observe.status):
            # they appear above the live line instead of breaking into it
            self._live = Live(console=console(), auto_refresh=False, transient=False)
            self._live.start()
            self._render([])
        try:
            from sweep.observe.board import SweepBoard

            self._board = SweepBoard(self.settings.run_dir)
        except Exception as exc:  # noqa: BLE001 - the board is optional; a sweep goes on
            print(f"sweep board disabled: {type(exc).__name__}: {exc}", file=sys.stderr)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial_started.setdefault(trial.trial_id, time.time())
        if time.time() - self._rendered > STATUS_EVERY_S:
            self._render(trials)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._reported = True
        if time.time() - self._rendered > STATUS_EVERY_S:
            self._render(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._reported = True
        started = self._trial_started.pop(trial.trial_id, None)
        if started is not None:  # a batch's members share its time (the ETA counts them)
            n = len(batching.members(trial.config) or [None])
            self._durations.extend([(time.time() - started) / n] * n)
        self._done_dirs.append((time.time(), trial.path,
                                getattr(trial.storage, "storage_filesystem", None)))
        self._stale = True
        self._maybe_refresh(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        ledger = Ledger(self.settings.run_dir)
        error = error_text(trial.error_file)
        members = batching.members(trial.config)
        if members is None:
            params = {k: v for k, v in trial.config.items() if not k.startswith("__")}
            self._record_error(ledger, trial.trial_id, int(trial.config.get("__number", -1)),
                               params, error)
        for m in members or []:  # a batch: its members without a result
            if ledger.done_by_number(m["number"]) is None:
                self._record_error(ledger, batching.member_dir(trial.trial_id, m["number"]),
                                   m["number"], m["params"], error)
        self._stale = True
        self._maybe_refresh(trials)

    def _record_error(self, ledger: Ledger, trial_id: str, number: int,
                      params: dict[str, Any], error: str) -> None:
        try:
            key = trial_config(self.settings.config, params).fingerprint()
        except ConfigError:
            key = trial_id
        ledger.append("error", key=key, trial_id=trial_id, params=params, number=number,
                      error=error)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.prune(older_than=PRUNE_AFTER_S)
        self._maybe_refresh(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.prune(older_than=0.0)
        self._refresh(trials, final=True)
        if self._live is not None:
            self._live.stop()
            if not self._live.console.is_terminal:  # rich ends the line only on a terminal:
                self._live.console.line()  # in a log, the next line was glued to the status
        if self._board is not None:
            self._board.close()

    # ---------------------------------------------------------------- the work
    def prune(self, *, older_than: float) -> None:
        """Delete the Tune checkpoints of trials finished more than ``older_than`` s ago.

        Tune keeps every checkpoint while a trial runs: its saved experiment state (a second
        or more old) may name any of them, and a resumed trial whose named checkpoint was
        deleted cannot restart. Once a trial has been finished for a while, the state says
        so and its checkpoints (the ledger has the result) go.
        """
        now = time.time()
        keep = []
        for finished, path, fs in self._done_dirs:
            if now - finished < older_than:
                keep.append((finished, path, fs))
            elif path and self.settings.storage and fs is not None:
                _prune_remote(fs, path)
            elif path and os.path.isdir(path):
                for ckpt in Path(path).glob("checkpoint_*"):
                    shutil.rmtree(ckpt, ignore_errors=True)
        self._done_dirs = keep

    def _maybe_refresh(self, trials: list) -> None:
        if self._stale and time.time() - self._refreshed >= REFRESH_EVERY_S:
            self._refresh(trials)

    def _refresh(self, trials: list, *, final: bool = False) -> None:
        self._stale, self._refreshed = False, time.time()
        df = write_sweep_results(self.settings, wall_seconds=time.time() - self._started)
        if self._board is not None and (final or time.time() - self._drawn >= BOARD_EVERY_S):
            self._drawn = time.time()
            try:
                self._board.update(df)
            except Exception as exc:  # noqa: BLE001 - a plot must not stop a sweep
                print(f"sweep board: {exc}", file=sys.stderr)
        self._render(trials, df)

    def _render(self, trials: list, df: pd.DataFrame | None = None) -> None:
        self._rendered = time.time()
        if self._live is None:
            return
        from rich.text import Text

        self._live.update(Text.from_markup(self.status_line(trials, df)), refresh=True)

    def status_line(self, trials: list, df: pd.DataFrame | None = None) -> str:
        """``name phase | d done (f failed), r running, p pending of t | elapsed ETA | best``.

        done + running + pending = total: a trial the ledger already records as done is not
        also counted as running while Tune catches up. The ETA uses the measured wall time of
        the trials finished so far (this session; else their recorded chain seconds).
        """
        from sweep.analysis.format import trial_label
        from sweep.observe.status import eta_seconds, fmt_seconds

        cfg, spec = self.settings.config, self.settings.spec
        if df is None:
            df = self.settings.results()
        total = spec.num_trials
        finished = set(df.loc[df["status"] != "running", "trial_id"].astype(str))
        done = min(len(finished), total)
        failed = int((~df["status"].isin([*OK_STATUSES, "running"])).sum())
        running = sum(1 for t in trials if t.status == "RUNNING" and t.trial_id not in finished)
        running = min(running, total - done)
        pending = total - done - running
        self._max_running = max(self._max_running, running)
        durations = self._durations or [
            float(x) for x in df.loc[df["status"] != "running", "seconds"] if x == x]
        eta = eta_seconds(durations, pending=pending, running=running,
                          parallel=max(self._max_running, 1))
        elapsed = time.time() - self._started
        phase = ("trials" if self._reported or done else
                 "generation 0 (fit once, shared) and the first trials")
        best = cheapest_feasible(df)
        best_txt = "none yet" if best is None else (
            f"{trial_label(best)} gap {best['quality_gap']:.3f} flops "
            f"{best['total_flops']:.3g} " + " ".join(
                f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in best.items()
                if str(k).startswith("param.")))
        failed_txt = f" ({failed} failed)" if failed else ""
        return (f"[bold]{escape(cfg.name)}[/] {phase} | {done} done{failed_txt}, {running} running, "
                f"{pending} pending of {total} | elapsed {fmt_seconds(elapsed)} ETA "
                f"{fmt_seconds(eta)} | best feasible: {escape(best_txt)}")


def _prune_remote(fs: Any, path: str) -> None:
    """Tune's checkpoints of a finished trial at object storage (a failure only keeps them)."""
    from pyarrow.fs import FileSelector, FileType

    try:
        for info in fs.get_file_info(FileSelector(path, allow_not_found=True)):
            if info.type == FileType.Directory and info.base_name.startswith("checkpoint_"):
                fs.delete_dir(info.path)
    except Exception:  # noqa: BLE001 - pruning is housekeeping
        pass


def error_text(error_file: str | None) -> str:
    """The exception line of a Tune trial's error file (not its path in Ray's session dir)."""
    if not error_file:
        return ""
    try:
        lines = [line.strip() for line in Path(error_file).read_text().splitlines() if line.strip()]
    except OSError:
        return "the trial's worker failed (its error file is gone)"
    return lines[-1][:500] if lines else ""


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
