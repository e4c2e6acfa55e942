"""Where a Tune sweep's time goes: timestamps from the trial processes and the driver.

Used by ``benchmarks/sweep_overhead.py`` only; production code reads nothing of it.

- In each Ray worker (``install`` is the worker set-up hook, enabled by ``PROBE_ENV``): the
  process's start time, how long the project's imports took there (the trainable's module
  and the engine; torch only in a torch family's first trial), and per trial the moment
  ``run_trial`` was entered, each generation's end, and the seconds spent in checkpoints,
  Tune reports and the trial's final record. One JSON line per event in
  ``<dir>/<pid>.jsonl``.
- In the driver (``DriverProbe``, a context manager): seconds spent in the sweep's Tune
  callback (results, board, status), in Optuna ask/tell, in results rewrites, in Tune's
  experiment-state saves.
- Over the whole machine (``MachineProbe``, a context manager): the cores' busy and idle
  time, the driver's CPU, Ray's own processes' and the others'.

``profile`` and ``machine_cpu`` turn them, with the trial processes' ``events``, into the
rows the benchmark reports.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROBE_ENV = "COLLAPSE_SWEEP_BENCH_PROBE"
#: Names of the profile's phases that the benchmark reads back.
BOOT = "process start to set-up hook (python, ray worker)"
IMPORTS = "imports in the trial process (Tune, project)"
FIRST_GENERATION = "run to first generation done"
DRIVER_TURN = "final report to the trial's end (median; the driver's turn)"
NEXT_TRIAL = "trial's end to the next trial on the same process (median)"
SLOT = "warm trial slot (mean time between trial ends on a reused process)"
RUN_TRIAL_WALL = "run_trial's wall time per trial, in the trial process"
FAULTS = "minor page faults per trial (the trial's thread, mean)"
#: Core-seconds per trial during the Tune sweep, by who spent them (``machine_cpu``).
CPU_PREFIX = "CPU per trial: "
CPU_THREADS = f"{CPU_PREFIX}the trials' threads (run_trial)"
CPU_TRIAL_REST = f"{CPU_PREFIX}the rest of the trial processes (boot, imports, Ray's threads)"
CPU_DRIVER = f"{CPU_PREFIX}the driver (Tune, Optuna, callbacks)"
CPU_RAY = f"{CPU_PREFIX}Ray's own processes (raylet, GCS, dashboard, agents)"
CPU_OTHER = f"{CPU_PREFIX}other processes (and any that came and went)"
CPU_IDLE = f"{CPU_PREFIX}idle cores"
#: Part of the opening row: the chain's construction, which run_chain does too.
BUILD_LABEL = "of the opening, building the chain (held-out set, model; as run_chain does)"


# --------------------------------------------------------------------------- worker side
def _process_start() -> float:
    """This process's start time (seconds since the epoch), from its start in clock ticks
    after boot in /proc (/proc/stat's boot time is whole seconds: too coarse here)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    since_start = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - since_start


class _Log:
    def __init__(self, directory: Path) -> None:
        self.path = directory / f"{os.getpid()}.jsonl"

    def __call__(self, event: str, **fields: Any) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"ev": event, "t": time.time(), **fields}) + "\n")


def install() -> None:
    """Ray worker set-up hook: record the imports and wrap the trial's steps."""
    directory = os.environ.get(PROBE_ENV)
    if not directory:
        return
    log = _Log(Path(directory))
    log("proc", start=_process_start())
    t0 = time.time()
    # What unpickling the trainable imports, and the engine; torch only where the family
    # uses it (the GPT case: in its first trial, inside "run to first trial entered")
    import sweep.search.trainable as trainable
    import sweep.search.trial as trial
    from sweep.engine.chain import Chain  # noqa: F401

    log("imports", seconds=time.time() - t0)
    _timed(trial.TrialRun, "save", log, "save")
    _timed(trial.TrialRun, "finish", log, "finish")
    _timed(trial.TrialRun, "open_chain", log, "open")
    # inside the opening: the chain's own construction (held-out set, model), which the
    # serial loop's run_chain does too, so it is chain work, not the trial's bookkeeping
    _timed(trial.Chain, "__init__", log, "build")
    step = trial.TrialRun.step

    @functools.wraps(step)
    def step_logged(self: Any, *args: Any, **kwargs: Any) -> None:
        step(self, *args, **kwargs)
        log("gen", trial=self.trial_id, generation=self.chain.generation - 1)

    trial.TrialRun.step = step_logged  # type: ignore[method-assign]
    report = trainable._tune_report

    def report_logged(metrics: dict[str, Any], ckpt: Any) -> None:
        # the final report (done) does not return: Tune ends the trial's thread
        t = time.time()
        report(metrics, ckpt)
        log("report", seconds=time.time() - t)

    trainable._tune_report = report_logged
    run_trial = trainable.run_trial

    def run_trial_logged(*args: Any, **kwargs: Any) -> Any:
        # CPU seconds of the trial's thread and of its whole process (Ray's threads, the
        # imports): against the wall time, they tell waiting for a core from running slower
        log("enter", trial=kwargs.get("trial_id"), cpu=time.thread_time(),
            process_cpu=time.process_time(), faults=_thread_faults())
        try:
            return run_trial(*args, **kwargs)
        finally:
            log("exit", trial=kwargs.get("trial_id"), cpu=time.thread_time(),
                process_cpu=time.process_time(), faults=_thread_faults())

    trainable.run_trial = run_trial_logged


def _thread_faults() -> int:
    """Minor page faults of the calling thread so far (memory the allocator handed back to
    the OS and touched again)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def _timing(original: Callable[..., Any], done: Callable[[float], None]) -> Callable[..., Any]:
    """``original``, calling ``done(seconds)`` after each call (also when it raises)."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            done(time.perf_counter() - t)

    return wrapper


def _timed(cls: Any, name: str, log: _Log, event: str) -> None:
    setattr(cls, name, _timing(getattr(cls, name), lambda seconds: log(event, seconds=seconds)))


# --------------------------------------------------------------------------- driver side
class DriverProbe:
    """Time spent in the driver's own steps while a sweep runs (wraps, then restores)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.fit_started: float | None = None
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, name: str, label: str) -> None:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)

        def done(seconds: float) -> None:
            self.seconds[label] += seconds
            self.calls[label] += 1

        self._undo.append((owner, name, original))
        setattr(owner, name, _timing(original, done))

    def __enter__(self) -> DriverProbe:
        from ray.tune import Tuner
        from ray.tune.execution.tune_controller import TuneController

        import sweep.search.progress as progress
        from sweep.search.searcher import ConstrainedOptunaSearch

        for hook in ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error",
                     "on_step_begin", "on_experiment_end", "setup"):
            self._wrap(progress.SweepProgress, hook, "sweep callback (results, board, status)")
        self._wrap(progress, "write_sweep_results", "results rewrites")
        self._wrap(ConstrainedOptunaSearch, "suggest", "optuna ask")
        self._wrap(ConstrainedOptunaSearch, "on_trial_complete", "optuna tell")
        self._wrap(TuneController, "checkpoint", "tune experiment-state saves")
        fit = Tuner.__dict__["fit"]
        probe = self

        def fit_marked(tuner: Any, *args: Any, **kwargs: Any) -> Any:
            probe.fit_started = probe.fit_started or time.time()
            return fit(tuner, *args, **kwargs)

        self._undo.append((Tuner, "fit", fit))
        Tuner.fit = fit_marked
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


class MachineProbe:
    """Where the machine's CPU time went while a sweep ran (a context manager): all cores'
    busy and idle seconds (/proc/stat), the driver's, and each process alive at both ends
    (Ray's own: raylet, GCS, dashboard and agents; and any other). Trial processes start
    and end inside the sweep: their CPU comes from the probe's own records instead."""

    def __enter__(self) -> MachineProbe:
        self._stat, self._procs = _cpu_stat(), _process_cpu()
        self._driver = time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        busy, idle = (b - a for a, b in zip(self._stat, _cpu_stat(), strict=True))
        self.busy, self.idle = busy, idle
        self.driver = time.process_time() - self._driver
        self.ray = self.other = 0.0
        self.pids: dict[int, float] = {}  # seconds per process alive at both ends
        for key, (name, seconds) in _process_cpu().items():
            if key in self._procs and key[0] != os.getpid():
                spent = seconds - self._procs[key][1]
                self.pids[key[0]] = spent
                if _is_ray(name):
                    self.ray += spent
                else:
                    self.other += spent


def _cpu_stat() -> tuple[float, float]:
    """All cores' busy and idle seconds since boot (idle counts iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / tick, idle / tick


def _process_cpu() -> dict[tuple[int, float], tuple[str, float]]:
    """(pid, start time) -> (name and command line, user + system CPU seconds), every process."""
    import psutil

    out = {}
    for proc in psutil.process_iter(["name", "cmdline", "create_time", "cpu_times"]):
        info = proc.info
        if info["cpu_times"] is None or info["create_time"] is None:
            continue  # gone, or not ours to read
        name = " ".join([info["name"] or "", *(info["cmdline"] or [])[:3]])
        out[(proc.pid, info["create_time"])] = (name, info["cpu_times"].user
                                                + info["cpu_times"].system)
    return out


def _is_ray(name: str) -> bool:
    return any(k in name for k in ("raylet", "gcs_server", "ray/", "ray::", "dashboard",
                                   "log_monitor", "runtime_env", "monitor.py"))


# --------------------------------------------------------------------------- the profile
def events(directory: Path) -> dict[int, list[dict[str, Any]]]:
    out = {}
    for path in directory.glob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[int(path.stem)] = rows
    return out


def first_generation_of_run(run_dir: Path) -> float | None:
    """The wall time (epoch s) of the earliest generation-0 TensorBoard event of any trial."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    first = None
    for path in Path(run_dir).glob("trials/*/tb/**/events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            if event.step == 0 and event.summary.value:
                first = event.wall_time if first is None else min(first, event.wall_time)
                break
    return first


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_cpu(logged: dict[int, list[dict[str, Any]]], machine: MachineProbe,
                trials: int) -> dict[str, float]:
    """Core-seconds per trial during the sweep, by who spent them (``logged``: the trial
    processes' ``events``); they add up to the cores times the sweep's wall time over the
    trials."""
    procs = {pid: rows for pid, rows in logged.items()
             if any(r["ev"] == "exit" for r in rows)}
    threads = process = wall = faults = 0.0
    for pid, rows in procs.items():
        opened: dict[Any, dict[str, Any]] = {}
        for r in rows:
            if r["ev"] == "enter" and "cpu" in r:
                opened[r["trial"]] = r
            elif r["ev"] == "exit" and r["trial"] in opened:
                entered = opened.pop(r["trial"])
                threads += r["cpu"] - entered["cpu"]
                faults += r.get("faults", 0) - entered.get("faults", 0)
                wall += r["t"] - entered["t"]
        # the process's whole CPU to its last trial's end (from its start: it began in the
        # sweep), unless it was alive before the sweep too: then what the machine probe saw
        last = max(r.get("process_cpu", 0.0) for r in rows if r["ev"] == "exit")
        process += machine.pids.get(pid, last)
    ray = machine.ray - sum(v for p, v in machine.pids.items() if p in procs)
    accounted = process + machine.driver + ray + machine.other
    per = 1 / max(trials, 1)
    return {RUN_TRIAL_WALL: wall * per, FAULTS: faults * per, CPU_THREADS: threads * per,
            CPU_TRIAL_REST: (process - threads) * per,
            CPU_DRIVER: machine.driver * per, CPU_RAY: max(ray, 0.0) * per,
            CPU_OTHER: (machine.other + max(machine.busy - accounted, 0.0)) * per,
            CPU_IDLE: machine.idle * per}


def profile(logged: dict[int, list[dict[str, Any]]], started: float, driver: DriverProbe,
            trials: int) -> dict[str, Any]:
    """Phases of one sweep (seconds) from the trial processes' ``events`` and the driver's
    probe; ``started``: time.time() when ``run_sweep`` was called."""
    procs = {pid: rows for pid, rows in logged.items()
             if any(r["ev"] == "enter" for r in rows)}  # processes that ran trials
    enters = sorted(r["t"] for rows in procs.values() for r in rows if r["ev"] == "enter")
    gens = sorted(r["t"] for rows in procs.values() for r in rows if r["ev"] == "gen")
    starts = [r["start"] for rows in procs.values() for r in rows if r["ev"] == "proc"]
    imports = [r["seconds"] for rows in procs.values() for r in rows if r["ev"] == "imports"]
    hooks = [r["t"] for rows in procs.values() for r in rows if r["ev"] == "proc"]
    sums: dict[str, float] = defaultdict(float)
    cycles = []  # between consecutive trial ends on one reused process: the warm trial slot
    gaps = []  # from one trial's exit to the next trial's entry in the same process
    stops = []  # from the final record (then the final report) to the trial's end
    for rows in procs.values():
        last_exit = last_finish = None
        for r in rows:
            if r["ev"] in ("save", "report", "finish", "open", "build"):
                sums[r["ev"]] += r["seconds"]
            if r["ev"] == "enter" and last_exit is not None:
                gaps.append(r["t"] - last_exit)
            if r["ev"] == "finish":
                last_finish = r["t"]
            if r["ev"] == "exit":
                if last_exit is not None:
                    cycles.append(r["t"] - last_exit)
                last_exit = r["t"]
                if last_finish is not None:
                    stops.append(r["t"] - last_finish)
    fit = driver.fit_started or started
    out = {
        "driver set-up (ledger, searcher, Tuner)": fit - started,
        "Tune start to first trial process": (min(starts) - fit) if starts else float("nan"),
        BOOT: (
            _median([h - s for h, s in zip(sorted(hooks), sorted(starts), strict=False)])),
        IMPORTS: _median(imports),
        "run to first trial entered": (enters[0] - started) if enters else float("nan"),
        FIRST_GENERATION: (gens[0] - started) if gens else float("nan"),
        DRIVER_TURN: _median(stops),
        NEXT_TRIAL: _median(gaps),
        "trial processes": len(procs),
        SLOT: statistics.mean(cycles) if cycles else float("nan"),
    }
    for ev, label in (("open", "opening the chain (config, test set, ledger start)"),
                      ("build", BUILD_LABEL),
                      ("save", "per-generation checkpoints"),
                      ("report", "intermediate Tune reports"),
                      ("finish", "final record (table, TensorBoard summary, ledger done)")):
        out[f"per trial: {label}"] = sums[ev] / max(trials, 1)
    for label, seconds in sorted(driver.seconds.items()):
        out[f"driver per trial: {label}"] = seconds / max(trials, 1)
    return out
