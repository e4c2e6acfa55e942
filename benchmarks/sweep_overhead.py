"""Sweep overhead: a Ray Tune sweep of short CPU-bound chains vs the serial loop and plain Optuna."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.common import at_least, at_most, record
from benchmarks.sweep_probe import SLOT
from sweep.config import ChainConfig, load_config
from sweep.engine.chain import run_chain

WORKERS = 2
#: Profile row: how many Tune trials ran the Optuna trials (search.batch: auto batches them).
TUNE_TRIALS = "Tune trials (search.batch: auto)"

METHOD = """\
Two cases. **Short**: 256 trials of one fixed chain (1-D Gaussian, replace, n = 1000, 20
generations, no early stop, a 1.5M-example held-out set evaluated every generation: ~0.4 s
of chain work, small checkpoints; 10 generations before 2026-12-02, when the chain took
0.3-0.4 s, until keeping freed memory in the process, `sweep/engine/allocator.py`, made it
0.22 s), where Tune's per-trial cost dominates (64 trials before
2026-12-01, when ~4 s of start-up in a ~12-s sweep alone capped the efficiency at 0.75;
researchers run thousands of such chains, and start-up has its own row, `run` to the first
generation). **CPU-bound**
(rows prefixed `cpu-bound:`): 32 trials of a small GPT chain (truth-lm, `xs`, 200 sequences,
2 epochs, 10 generations: ~0.38 s of single-threaded compute per generation, ~4 s per trial;
torch held to one thread in the serial loop and the pool, as in a 1-CPU trial). The only
searched parameter is `seed`, values 0..N-1 visited once each by the grid sampler, with
`search.seeds: 1`, `search.batch` at its default (`auto`: one Optuna trial per Tune trial
until trials have been timed, then as many as fill ~5 s (~2 s before 2026-12-02), fewer
near the end; profile row `Tune trials`), and no confirmation stage (the defaults run 5 chains per trial and re-run
the 3 cheapest configs on 20 more seeds; before 2026-12-01 this benchmark had inherited
them), so the sweep, the serial loop and the peer do exactly the same chains. Every trial
keeps its per-generation checkpoint (a killed worker loses at most one generation) and its
TensorBoard events; Tune reports, Tune checkpoints and generations.parquet are throttled
(`sweep/search/trial.py`), the driver's results/board refresh too (`sweep/search/progress.py`).
numpy's BLAS is held to one thread everywhere (Ray's workers get OMP_NUM_THREADS=1, the serial
loop and the pool `threadpoolctl`).

Three ways, in one process, one after another: **serial** = `run_chain` for the seeds in a
plain loop, timed in chunks (32 short chains, 4 GPT chains) before the pool, between the pool
and Tune, and after Tune; each sweep is measured against the mean per-chain time of the two
chunks around it (this host's speed drifts: the same 256 chains once took 84 s and, 17
minutes later, 62 s); **Tune** =
`sweep.search.driver.run_sweep` (OptunaSearch on the run's journal study, `concurrency: 2`,
`reuse_actors=True`, ledger, checkpoints, TensorBoard as in every sweep) on a Ray already
started (its `ray.init` is reported separately); **Optuna + pool** = plain Optuna ask/tell
(in memory) with a warmed 2-process `ProcessPoolExecutor` (spawn) running `run_chain`, two
trials in flight. Parallel efficiency = serial / (2 x wall), start-up included; per-trial
overhead = (wall - serial / 2) / trials. **Warm** figures leave the once-per-sweep start-up
out: the warm trial slot is the mean time between consecutive trial ends on one reused
trial process (so it holds the trial, the driver's turn between trials and the competition
for the 2 cores), warm per-trial overhead = slot - serial chain time per trial, warm
efficiency = serial chain time per trial / slot. `collapse-sweep run` to the first
generation is timed first, before this process starts its Ray: the command as a user types
it (a new process that imports the project, starts a local Ray and runs 2 short trials), up
to the earliest generation-0 TensorBoard event of its trials.

**Profile** (rows `profile: ...`): the Ray workers run a set-up hook
(`benchmarks/sweep_probe.py`) that records each trial process's start (from /proc), its
imports of Tune and the project (torch only where the family uses it: the GPT case imports
it in its first trial; an analytic trial never does since 2026-12-02), and per trial the entry into `run_trial`, each
generation, and the seconds spent opening the chain (config, held-out set, ledger `start`),
in per-generation checkpoints, in intermediate Tune reports and in the final record (table,
TensorBoard summary, ledger `done`); the final report does not return (Tune ends the trial),
so `final report to the trial's end` is the driver's turn: Tune's result handling, Optuna's
tell, the callbacks, stopping the trial. The driver wraps its own steps and times them:
Optuna ask and tell (the run's `optuna.journal`), the sweep's Tune callback, results rewrites, Tune's
experiment-state saves. Per-trial rows are totals divided by the trials. The `CPU per
trial` rows split the cores' time during the Tune sweep (they add up to 2 x wall / trials):
the trials' threads (`time.thread_time` around `run_trial`; its minor page faults have a row
too), the rest of the trial processes (their whole CPU time: boot, imports, Ray's threads),
the driver (the benchmark process's CPU time over the sweep; `driver CPU per trial` before
2026-12-03, the same figure), Ray's own
processes (raylet, GCS, dashboard, agents: psutil, before and after), other processes with
what the rest misses (from the machine's busy time in /proc/stat), and idle cores; against
`run_trial`'s wall time, the trial thread's CPU tells waiting for a core from running slower.

**Ledger lookups** (rows `ledger lookup ...`): a trial asks the ledger whether its chain is done
or started before it runs; in a sweep 3,000 trials in (9,000 records), the mean time of one
lookup after another trial's append, parsing the whole file (as before 2026-12-01) vs the
per-process cache that parses only the appended lines, side by side in one process."""


#: The CPU-bound case: a small GPT chain (truth-lm, xs, 200 sequences, 2 epochs): ~0.38 s
#: of single-threaded compute per generation.
GPT = {"model": {"family": "gpt", "size": "xs", "train": {"epochs": 2, "batch_size": 64,
                                                          "patience": 1}},
       "data": {"source": "truth-lm", "test_size": 200}}


def base_config(*, trials: int, generations: int, n: int, test_size: int = 0,
                gpt: bool = False) -> ChainConfig:
    problem = GPT if gpt else {"model": {"family": "gaussian", "dim": 1},
                               "data": {"source": "truth", "test_size": test_size}}
    return load_config({
        "name": "bench-overhead",
        "seed": 0,
        **problem,
        "recursion": {"generations": generations, "samples_per_generation": n, "regime": "replace"},
        "collapse": {"metric": "real_nll", "tolerance": 0.1, "stop_early": False},
        "search": {"sampler": "grid", "trials": trials, "concurrency": WORKERS,
                   # one chain per trial and no confirmation stage: the same chains as
                   # the serial loop and the peer (the defaults run 5 seeds per trial
                   # and re-run the 3 cheapest configs on 20 more)
                   "seeds": 1, "confirm": {"top": 0},
                   "check": False,  # the health check is not per-trial overhead
                   "space": {"seed": {"int": [0, trials - 1], "step": 1}},
                   "objectives": {"quality_gap": "min", "total_flops": "min"}},
        "resources": {"cpu": 1, "gpu": 0},
    })


def _chain_objectives(config: ChainConfig, seed: int) -> tuple[float, float]:
    s = run_chain(config, seed=seed).attrs["summary"]
    return float(s["quality_gap"]), float(s["total_flops"])


def _one_blas_thread() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    torch.set_num_threads(1)  # as a 1-CPU trial does (sweep.search.trial._set_threads)


def _warm() -> int:
    import sweep.engine.chain  # noqa: F401 - import cost paid before timing

    return os.getpid()


def serial_loop(config: ChainConfig, seeds: list[int]) -> float:
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            t0 = time.perf_counter()
            for s in seeds:
                _chain_objectives(config, s)
            return time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


def optuna_pool(config: ChainConfig, trials: int, *, sampler_seed: int = 0) -> float:
    """Plain Optuna ask/tell, ``WORKERS`` trials in flight on a warmed process pool."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with ProcessPoolExecutor(WORKERS, mp_context=mp.get_context("spawn"),
                             initializer=_one_blas_thread) as pool:
        list(pool.map(_warm_n, range(WORKERS * 2)))
        # The seeds 0..trials-1 once each, as the sweep's grid (GridSampler cannot be used
        # with ask/tell: it calls study.stop() when the grid is exhausted).
        study = optuna.create_study(directions=["minimize", "minimize"],
                                    sampler=optuna.samplers.RandomSampler(seed=sampler_seed))
        for s in range(trials):
            study.enqueue_trial({"seed": s})
        t0 = time.perf_counter()
        running: dict[Any, Any] = {}
        asked = 0
        while asked < trials or running:
            while asked < trials and len(running) < WORKERS:
                trial = study.ask()
                seed = trial.suggest_int("seed", 0, trials - 1)
                running[pool.submit(_chain_objectives, config, seed)] = trial
                asked += 1
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                study.tell(running.pop(fut), list(fut.result()))
        return time.perf_counter() - t0


def _warm_n(_: int) -> int:
    time.sleep(0.2)  # so that every worker gets one warm-up job
    return _warm()


def trial_vs_chain(config: ChainConfig, seeds: list[int]) -> tuple[float, float]:
    """Mean seconds of ``run_trial`` without Ray (files, checkpoints, ledger, TB) vs ``run_chain``."""
    from threadpoolctl import threadpool_limits

    from sweep.config import dump_config
    from sweep.search.trial import run_trial

    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp, \
            threadpool_limits(1, user_api="blas"):
        run_dir = Path(tmp)
        (run_dir / "sweep.yaml").write_text(dump_config(config))
        # the sweep's config parsed once, as a trial process does (``trainable._sweep_config``)
        run = {"node": "local", "report": lambda metrics, ckpt: None, "base": config}
        run_trial(run_dir, {"seed": 10**6}, trial_id="warm", number=-1, **run)
        t_trial, t_chain = [], []
        for s in seeds:
            t0 = time.perf_counter()
            run_trial(run_dir, {"seed": s}, trial_id=f"t{s}", number=s, **run)
            t_trial.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _chain_objectives(config, s)
            t_chain.append(time.perf_counter() - t0)
    return sum(t_trial) / len(seeds), sum(t_chain) / len(seeds)


def tune_sweep(config: ChainConfig, storage: Path, probe_dir: Path
               ) -> tuple[float, pd.DataFrame, dict[str, Any]]:
    """The Tune sweep's wall time, its results and its phase profile (``sweep_probe``)."""
    from benchmarks.sweep_probe import DriverProbe, MachineProbe, events, machine_cpu, profile
    from sweep.search.driver import run_sweep

    for old in probe_dir.glob("*.jsonl"):  # the trial processes of an earlier sweep
        old.unlink()
    with MachineProbe() as machine, DriverProbe() as driver:
        started = time.time()
        t0 = time.perf_counter()
        run_dir = run_sweep(config, name=config.name, storage=str(storage), progress=False)
        wall = time.perf_counter() - t0
    logged = events(probe_dir)
    phases = profile(logged, started, driver, trials=config.search["trials"])
    phases.update(machine_cpu(logged, machine, trials=config.search["trials"]))
    from sweep.files.study import load_study

    study = load_study(Path(run_dir), config.name)
    phases[TUNE_TRIALS] = len({t.user_attrs.get("tune_trial_id") for t in study.trials})
    return wall, pd.read_parquet(Path(run_dir) / "results.parquet"), phases


#: The run's status line once Ray is up: "Ray started (2 CPUs) in 4.1 s; Tune starts ...".
RAY_STARTED = re.compile(r"Ray started \(\d+ CPUs\) in ([\d.]+) s")


def run_to_first_generation(config: ChainConfig) -> dict[str, float]:
    """``collapse-sweep run`` as a user starts it (a new process, its own local Ray): seconds
    from the command to the first trial's first generation (its TensorBoard event), to the
    command's end, to its "Ray started" status line, and the Ray start that line reports."""
    import subprocess
    import sys

    from benchmarks.sweep_probe import first_generation_of_run
    from sweep.config import dump_config

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-first-") as tmp:
        cfg = Path(tmp) / "sweep.yaml"
        cfg.write_text(dump_config(config))
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "sweep", "run", str(cfg), "--storage",
                                 str(Path(tmp) / "runs")], cwd=tmp, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        timer = threading.Timer(600, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # each line as it is printed (unbuffered)
                if "ray_line" not in times and (m := RAY_STARTED.search(line)):
                    times["ray_line"], times["ray_start"] = time.time() - started, float(m[1])
        finally:
            timer.cancel()
        if proc.wait() != 0:
            raise RuntimeError(f"run_to_first_generation: collapse-sweep run exited {proc.returncode}")
        times["end"] = time.time() - started
        first = first_generation_of_run(Path(tmp) / "runs" / config.name)
    if first is None:
        raise RuntimeError("run_to_first_generation: no generation-0 TensorBoard event")
    times["first"] = first - started
    return times


def _first_generation_note(t: dict[str, float]) -> str:
    """Where the time to the first generation went, from the run's own status line."""
    note = (f"a new process starting its own local Ray, {WORKERS} short trials at once; the "
            f"command ended after {t['end']:.1f} s")
    if "ray_line" not in t:
        return note
    before = t["ray_line"] - t["ray_start"]
    return (f"{note}. Its status line \"Ray started ... in {t['ray_start']:.1f} s\" came "
            f"{t['ray_line']:.1f} s in: {before:.1f} s for Python, the CLI's imports and the "
            f"run's checks, then ray.init (the driver's imports in a thread beside it); the "
            f"first generation {t['first'] - t['ray_line']:.1f} s after that line: Tune's "
            "start, the trial process's imports (Tune, the project) and generation 0")


def measure(config: ChainConfig, trials: int, *, chunk: int, bare_trials: int,
            probe_dir: Path) -> dict[str, Any]:
    """Optuna + pool and the Tune sweep, each between two timed serial chunks of ``chunk``
    chains, and run_trial without Ray beside run_chain.

    This host's speed drifts: the same 256 serial chains took 84.3 s before the sweeps and
    62.1 s after them, 17 minutes apart (2026-12-02 05:18 run), so one serial time for the
    whole run (the mean of a loop before and one after, as before) put either sweep up to a
    third off. A sweep's serial time is now its trials times the mean per-chain time of the
    chunks just before and just after it: serial chunk, pool, serial chunk, Tune, serial chunk.
    """
    seeds = list(range(trials))

    def serial_chunk(i: int) -> float:  # seconds per chain, chunk i's own seeds
        chunk_seeds = [seeds[(i * chunk + j) % trials] for j in range(chunk)]
        return serial_loop(config, chunk_seeds) / chunk

    before_peer = serial_chunk(0)
    peer = optuna_pool(config, trials)
    between = serial_chunk(1)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        wall, results, phases = tune_sweep(config, Path(tmp), probe_dir)
    after_tune = serial_chunk(2)
    bare_trial, bare_chain = trial_vs_chain(config, seeds[:bare_trials])
    ok = results["status"].isin(["finished", "stopped_collapsed"])
    return {"trials": trials, "chunk": chunk, "chunks": [before_peer, between, after_tune],
            "serial": (between + after_tune) / 2 * trials,
            "serial_peer": (before_peer + between) / 2 * trials, "peer": peer, "wall": wall,
            "in_trial": float(results.loc[ok, "seconds"].mean()), "failed": int((~ok).sum()),
            "bare_trial": bare_trial, "bare_chain": bare_chain, "phases": phases,
            "generations": config.recursion.generations}


#: The serial time each sweep is measured against (the chunks around it): Tune's, the pool's.
SERIAL_OF = {"wall": "serial", "peer": "serial_peer"}


def _efficiency(m: dict[str, Any], wall: str) -> float:
    """Parallel efficiency of the run whose wall time is ``m[wall]``: serial / (2 x wall)."""
    return m[SERIAL_OF[wall]] / (WORKERS * m[wall])


def _per_trial_overhead(m: dict[str, Any], wall: str) -> float:
    """Seconds per trial the run whose wall time is ``m[wall]`` took beyond a perfect 2-way
    split of the serial loop: (wall - serial / 2) / trials."""
    return (m[wall] - m[SERIAL_OF[wall]] / WORKERS) / m["trials"]


def _explain(m: dict[str, Any]) -> str:
    """Why the efficiency is missed, from the profile: start-up, then the warm slot's parts,
    then what the machine itself gives two chains at once (the plain pool, same run)."""
    from benchmarks import sweep_probe as p

    ph = m["phases"]
    per_chain = m["serial"] / m["trials"]
    # the trial's own bookkeeping: the per-trial rows, the opening less the chain's
    # construction (its own row: the serial chain time counts it as well)
    build = f"per trial: {p.BUILD_LABEL}"
    in_trial = sum(v for k, v in ph.items() if k.startswith("per trial: ") and k != build)
    in_trial -= ph.get(build, 0.0)
    driver = {k[len("driver per trial: "):]: v for k, v in ph.items()
              if k.startswith("driver per trial: ")}
    biggest = max(driver, key=driver.get) if driver else "?"
    # the first generation's own work is per_chain / (generations + 1); the rest is start-up
    startup = ph[p.FIRST_GENERATION] - per_chain / (m["generations"] + 1)
    ideal = m["serial"] / WORKERS
    peer_eff = _efficiency(m, "peer")
    ceiling = m["bare_chain"] / m["bare_trial"] * peer_eff
    return (f"missed. Start-up: the first generation is done {ph[p.FIRST_GENERATION]:.1f} s "
            f"after run_sweep starts (of a {m['wall']:.1f} s sweep whose perfect 2-way split is "
            f"{ideal:.1f} s; with no per-trial cost at all, {startup:.1f} s of start-up alone "
            f"caps the efficiency at {ideal / (ideal + startup):.2f}): {ph[p.BOOT]:.1f} s for "
            "each trial process to boot "
            f"Ray's worker, {ph[p.IMPORTS]:.1f} s of imports in it (Tune, the project; "
            "torch in a torch family's first trial), the rest Tune's set-up and generation 0. Warm, a worker slot "
            f"takes {ph[p.SLOT]:.3f} s per trial for {per_chain:.3f} s of chain work: "
            f"{in_trial:.3f} s "
            "of the trial's own bookkeeping (opening less the chain's construction, "
            "checkpoints, reports, final record), "
            f"{ph[p.DRIVER_TURN]:.3f} s waiting for the driver's turn (Tune's result handling, "
            f"Optuna tell, callbacks, stopping the trial), {ph[p.NEXT_TRIAL]:.3f} s to start "
            "the next; the rest is the chain running slower beside the other trial (a trial's "
            f"own time was {m['in_trial']:.3f} s against {per_chain:.3f} s alone), the driver "
            f"({ph[p.CPU_DRIVER]:.3f} s CPU per trial; of its timed steps {biggest} the most, "
            f"{driver.get(biggest, 0.0):.3f} s) and Ray's processes on 2 cores. The machine "
            f"itself: the plain process pool, same chains, same run, reached {peer_eff:.2f}. "
            f"Our own per-trial work (a checkpoint and a TensorBoard event every generation, "
            f"the records): run_trial without Ray took {m['bare_trial']:.3f} s for "
            f"{m['bare_chain']:.3f} s of the same chains, so a scheduler that cost nothing, "
            f"splitting the trials as the pool does, would reach at most {ceiling:.2f}; "
            f"Tune reached {_efficiency(m, 'wall'):.2f}.{_cores(m)}")


def _overhead_parts(m: dict[str, Any], overhead: float) -> str:
    """The warm per-trial overhead split into what the profile can tell apart."""
    own = m["bare_trial"] - m["bare_chain"]
    side_by_side = _per_trial_overhead(m, "peer")
    rest = overhead - own - side_by_side
    return (f"missed: {own:.3f} s of it is the trial's own work, timed without Ray (run_trial "
            "minus run_chain on the same seeds: a checkpoint and a TensorBoard event every "
            f"generation, the table, the ledger), {side_by_side:.3f} s what two chains side "
            "by side cost each other (the plain pool's per-trial overhead, same run), "
            f"{rest:.3f} s the rest: Tune, Ray and the driver sharing the 2 cores.{_cores(m)}")


def _unit(phase: str) -> str:
    from benchmarks import sweep_probe as p

    if phase in ("trial processes", TUNE_TRIALS, p.FAULTS):
        return "count"
    return "core-s" if phase.startswith(p.CPU_PREFIX) else "s"


def _cores(m: dict[str, Any]) -> str:
    """Where the cores' time went during the Tune sweep, per trial (the probe's CPU rows)."""
    from benchmarks import sweep_probe as p

    ph = m["phases"]
    if p.CPU_THREADS not in ph:
        return ""
    per_chain = m["serial"] / m["trials"]
    threads, wall = ph[p.CPU_THREADS], ph[p.RUN_TRIAL_WALL]
    parts = ", ".join(f"{name.removeprefix(p.CPU_PREFIX)} {ph[name]:.3f}" for name in (
        p.CPU_TRIAL_REST, p.CPU_DRIVER, p.CPU_RAY, p.CPU_OTHER, p.CPU_IDLE))
    return (f" Where the {WORKERS} cores went during the sweep, core-s per trial (they add up "
            f"to {WORKERS} x wall / trials = {WORKERS * m['wall'] / m['trials']:.3f}): the trials' "
            f"threads {threads:.3f} (the same chains alone: {per_chain:.3f} s, so "
            f"{threads - per_chain:+.3f} of bookkeeping, a torch family's import in its first "
            "trial and slower running side by side), "
            f"{parts}. A trial's thread got {threads:.3f} s of CPU in {wall:.3f} s of run_trial: "
            f"{wall - threads:.3f} s waiting for a core (or the GIL).")


def _chunks(m: dict[str, Any]) -> str:
    names = ("before the pool", "between the pool and Tune", "after Tune")
    return ", ".join(f"{t:.3f} s {n}" for t, n in zip(m["chunks"], names, strict=True))


#: Targets (issue 18): parallel efficiency on 2 workers for ~0.4-s and CPU-bound trials, the
#: warm per-trial overhead, and seconds from `collapse-sweep run` to the first generation.
SHORT_EFFICIENCY, CPU_EFFICIENCY, WARM_OVERHEAD_S, FIRST_GENERATION_S = 0.8, 0.9, 0.05, 10.0


def _records(m: dict[str, Any], prefix: str, *, cpu_bound: bool) -> list[dict[str, Any]]:
    eff, peer_eff = _efficiency(m, "wall"), _efficiency(m, "peer")
    bound = CPU_EFFICIENCY if cpu_bound else SHORT_EFFICIENCY
    target, met = at_least(eff, bound)
    trials = m["trials"]
    per_chain = m["serial"] / trials
    phases = dict(m["phases"])
    slot = phases.pop(SLOT)
    warm_eff = per_chain / slot
    warm_target, warm_met = at_least(warm_eff, bound)
    over_target, over_met = at_most(slot - per_chain, WARM_OVERHEAD_S)
    return [
        record(f"{prefix}trials", trials, "trials"),
        record(f"{prefix}serial chain time per trial", per_chain, "s",
               note=f"per chain, in chunks of {m['chunk']}: {_chunks(m)}; Tune's figures use "
                    "the mean of the two chunks around it, the pool's the two around the pool"),
        record(f"{prefix}tune sweep wall", m["wall"], "s"),
        record(f"{prefix}tune per-trial overhead", _per_trial_overhead(m, "wall"), "s"),
        record(f"{prefix}tune in-trial time per trial", m["in_trial"], "s"),
        record(f"{prefix}tune parallel efficiency (2 workers)", eff, "ratio", target=target, met=met,
               note=None if met else _explain(m)),
        record(f"{prefix}tune warm trial slot (between trial ends on a reused process)", slot, "s"),
        record(f"{prefix}tune warm per-trial overhead (slot - serial chain time)",
               slot - per_chain, "s", target=over_target, met=over_met,
               note=None if over_met else _overhead_parts(m, slot - per_chain)),
        record(f"{prefix}tune warm parallel efficiency (serial chain time / slot)", warm_eff,
               "ratio", target=warm_target, met=warm_met),
        record(f"{prefix}run_trial without Ray, per trial", m["bare_trial"], "s",
               note=f"bare run_chain on the same seeds: {m['bare_chain']:.3f} s"),
        record(f"{prefix}optuna+pool sweep wall", m["peer"], "s"),
        record(f"{prefix}optuna+pool per-trial overhead", _per_trial_overhead(m, "peer"), "s"),
        record(f"{prefix}optuna+pool parallel efficiency (2 workers)", peer_eff, "ratio"),
        record(f"{prefix}tune wall / optuna+pool wall", m["wall"] / m["peer"], "ratio"),
        record(f"{prefix}failed trials", m["failed"], "trials", target="0", met=m["failed"] == 0),
        *[record(f"{prefix}profile: {name}", value, _unit(name)) for name, value in phases.items()],
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    import ray

    if ray.is_initialized():  # its workers lack the probe's hook: every profile row would be 0
        raise RuntimeError("sweep_overhead starts and times its own Ray, and this process "
                           "already has one: run it in a fresh process "
                           "(python -m benchmarks.run_all --only sweep_overhead)")
    # Short: 256 trials of ~0.4 s (overhead-bound). CPU-bound: 32 small-GPT trials of ~3.5 s
    # (10 generations of ~0.35 s), where the per-trial cost amortises. Values: (config,
    # trials, trials also timed by run_trial without Ray).
    # Serial chunks (``measure``): 32 short chains (~10 s), 4 GPT chains (~26 s).
    short, long = ((4, 3, 2), (2, 1, 1)) if quick else ((256, 20, 32), (32, 10, 4))
    configs = {
        "": (base_config(trials=short[0], generations=short[1], n=1000,
                         test_size=200_000 if quick else 1_500_000), short[0], short[2],
             min(short[0], 4 if quick else 8)),
        "cpu-bound: ": (base_config(trials=long[0], generations=long[1], n=200, gpt=True), long[0],
                        long[2], min(long[0], 4)),
    }
    for config, *_ in configs.values():
        _chain_objectives(config, 10**7)  # warm-up (imports, allocator)
    # First, with no Ray of ours running: a user's `run` from the command to generation 0.
    first = run_to_first_generation(
        base_config(trials=WORKERS, generations=2, n=1000, test_size=200_000))
    target, met = at_most(first["first"], FIRST_GENERATION_S)
    records = [record("`collapse-sweep run` to the first trial's first generation", first["first"],
                      "s", target=target, met=met, note=_first_generation_note(first))]
    # The driver's one-time imports (Tune, Optuna's storage layer, the sweep board and
    # matplotlib for its Pareto image) are paid before timing, as the peer imports Optuna
    # and warms its pool first; starting Tune's trainable actors stays in the timing.
    import matplotlib.figure  # noqa: F401
    import optuna.storages.journal  # noqa: F401
    import ray
    import ray.tune  # noqa: F401

    import sweep.observe.board  # noqa: F401
    from benchmarks.sweep_probe import PROBE_ENV
    from sweep.search.driver import init_ray
    from sweep.search.rayinit import environ

    # Ray's workers inherit the driver's environment: one BLAS/OpenMP thread per 1-CPU trial
    # (Ray's own default, made explicit). Their set-up hook records the probe's timestamps.
    probe_tmp = tempfile.TemporaryDirectory(prefix="bench-probe-")
    probe_dir = Path(probe_tmp.name)
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    with environ({"OMP_NUM_THREADS": "1"}):
        started = init_ray(None, runtime_env={
            "worker_process_setup_hook": "benchmarks.sweep_probe.install",
            "env_vars": {PROBE_ENV: str(probe_dir), "PYTHONPATH": path}})
    ray_init = time.perf_counter() - t0
    try:
        for prefix, (config, trials, chunk, bare) in configs.items():
            m = measure(config, trials, chunk=chunk, bare_trials=bare, probe_dir=probe_dir)
            records += _records(m, prefix, cpu_bound=bool(prefix))
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
        probe_tmp.cleanup()
    records.append(record("ray.init", ray_init, "s"))
    records += ledger_lookups(3000 if not quick else 300)
    return records


def ledger_lookups(trials: int) -> list[dict[str, Any]]:
    """A trial's ledger lookups (done? started?) in a sweep ``trials`` trials in (3 records
    each): the whole file parsed per lookup (before 2026-12-01) vs the per-process cache
    that reads only what was appended (``sweep.rundir.ledger``), side by side."""
    import json

    from sweep.rundir.ledger import LEDGER_FILE, Ledger

    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        path = Path(tmp) / LEDGER_FILE
        rec = {"event": "done", "time": 1.0, "pid": 1, "trial_id": "0a1b2_00001-12",
               "params": {"recursion.regime": "replace", "recursion.real_fraction": 0.5},
               "status": "finished", "quality_gap": 0.01, "total_flops": 1e6, "node": "n"}
        path.write_text("".join(json.dumps({**rec, "key": f"k{i}", "number": i // 3}) + "\n"
                                for i in range(3 * trials)))
        ledger = Ledger(tmp)
        ledger.records()  # the process's first read parses the file once
        full, cached = [], []
        for i in range(20):  # each lookup after another trial's append
            ledger.append("start", key=f"new{i}", number=trials + i)
            t0 = time.perf_counter()
            [json.loads(line) for line in path.read_text().splitlines()]
            full.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ledger.done(f"new{i}")
            cached.append(time.perf_counter() - t0)
    f, c = sum(full) / len(full), sum(cached) / len(cached)
    return [record(f"ledger lookup {trials} trials in: whole file parsed", f, "s"),
            record(f"ledger lookup {trials} trials in: appended lines only (cache)", c, "s",
                   note=f"{f / c:.0f}x faster; a trial makes 3 lookups")]
