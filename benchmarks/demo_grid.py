"""Dense grid over the demo's search space: the truth `make demo`'s answer is checked against.

    PYTHONPATH=$PWD nice -n 10 python -m benchmarks.demo_grid                  # the grid
    PYTHONPATH=$PWD python -m benchmarks.demo_grid --summary                   # its table
    PYTHONPATH=$PWD python -m benchmarks.demo_grid --regimes replace \\
        --fractions 0.93 --seeds 200-209 --out notes/data/demo_answer.parquet    # one point

Every (regime, real_fraction, seed) of ``configs/quick.yaml`` (``--set`` overrides it) is
run as one chain with ``collapse.stop_early: false`` (so every gap is measured at the same
generation and every chain pays its full cost), in ``--workers`` spawned processes (torch
with one thread each; ``--workers 1``: in this process). One row per chain is appended to ``--out`` (a parquet file) as it
finishes; a rerun skips the chains already there, so a killed grid resumes where it stopped.

Per grid point the summary gives the mean gap, its standard error and one-sided upper
confidence bound (``collapse.confidence``, Student's t), the number of seeds whose gap
exceeds the tolerance (collapsed), and the mean FLOPs. The dense-grid answer is the cheapest
point whose *mean* gap is within the tolerance (also given: the cheapest whose upper bound
is). Seeds default to 100..109: the demo sweep uses 0, 1 (search) and 1,000,000+ (confirm)
and its health check 0..2, so the grid's seeds are ones the sweep never saw.

Not part of ``make bench`` (it takes ~40 CPU-minutes): results are in notes/DEMO_GRID.md.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pandas as pd

CONFIG = "configs/quick.yaml"
OUT = "notes/data/demo_grid.parquet"
REGIMES = ["replace", "accumulate", "accumulate-subsample"]
FRACTIONS = [round(0.1 * i, 1) for i in range(11)]
SEEDS = list(range(100, 110))
KEY = ["regime", "real_fraction", "seed"]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def chain_row(config_path: str, overrides: list[str], regime: str, fraction: float,
              seed: int) -> dict[str, Any]:
    """One chain of the grid: its gap, cost, excess per generation, CPU and wall seconds."""
    from sweep.config import load_config
    from sweep.engine.chain import Chain, drive

    cfg = load_config(config_path, [*overrides, f"recursion.regime={regime}",
                                    f"recursion.real_fraction={fraction}",
                                    "collapse.stop_early=false"])
    wall, cpu = time.perf_counter(), time.process_time()
    chain = drive(Chain(cfg, seed=seed))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    s = chain.summary()
    metric = cfg.collapse.metric
    return {"regime": regime, "real_fraction": float(fraction), "seed": int(seed),
            "gap": float(s["quality_gap"]), "collapsed": bool(s["collapsed"]),
            "status": str(s["status"]), "total_flops": float(s["total_flops"]),
            "metric": metric, "tolerance": float(cfg.collapse.tolerance),
            "confidence": float(cfg.collapse.confidence),
            "metric_by_generation": [float(r.get(metric, math.nan)) for r in chain.rows],
            "cpu_s": cpu, "wall_s": wall}


def run_grid(regimes: list[str], fractions: list[float], seeds: list[int], out: Path, *,
             config: str = CONFIG, overrides: list[str] | None = None, workers: int = 2,
             say=print) -> pd.DataFrame:
    """Run the grid's missing chains (resuming from ``out``); returns every row of ``out``."""
    overrides = list(overrides or [])
    done = pd.read_parquet(out) if out.exists() else pd.DataFrame(columns=KEY)
    have = {(r, round(float(f), 9), int(s)) for r, f, s in done[KEY].itertuples(index=False)}
    todo = [(r, float(f), int(s)) for r in regimes for f in fractions for s in seeds
            if (r, round(float(f), 9), int(s)) not in have]
    say(f"{len(have)} chains in {out}, {len(todo)} to run on {workers} worker(s)")
    rows = done.to_dict("records")
    if not todo:
        return done
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n = 0

    def record(new: list[dict[str, Any]]) -> None:
        nonlocal n
        for row in new:
            rows.append(row)
            n += 1
            say(f"[{n}/{len(todo)} {time.perf_counter() - t0:6.0f}s] {row['regime']:>20} "
                f"f={row['real_fraction']:.2f} seed {row['seed']}: gap {row['gap']:+.3f} "
                f"flops {row['total_flops']:.3g} cpu {row['cpu_s']:.1f}s")
        tmp = out.with_suffix(".tmp")
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        os.replace(tmp, out)  # a kill leaves the previous complete file

    if workers <= 1:  # in this process (torch's thread count as it is)
        for job in todo:
            record([chain_row(config, overrides, *job)])
        return pd.DataFrame(rows)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker) as pool:
        pending = {pool.submit(chain_row, config, overrides, *job) for job in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            record([fut.result() for fut in finished])
    return pd.DataFrame(rows)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per grid point: n, mean gap, se, upper bound, collapsed count, mean FLOPs, CPU s."""
    from sweep.engine.replicates import upper_bound

    out = []
    for (regime, fraction), g in rows.groupby(["regime", "real_fraction"], sort=True):
        n = len(g)
        mean = float(g["gap"].mean())
        se = float(g["gap"].std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        tol, conf = float(g["tolerance"].iloc[0]), float(g["confidence"].iloc[0])
        ucb = upper_bound(mean, se, n, conf)
        out.append({"regime": regime, "real_fraction": float(fraction), "n": n,
                    "gap": mean, "gap_se": se, "gap_ucb": ucb,
                    "collapsed": int((g["gap"] > tol).sum()),
                    "flops": float(g["total_flops"].mean()),
                    "flops_sd_rel": float(g["total_flops"].std(ddof=0) / g["total_flops"].mean()),
                    "cpu_s": float(g["cpu_s"].mean()),
                    "feasible_mean": mean <= tol, "feasible_ucb": ucb <= tol})
    return pd.DataFrame(out)


def grid_answer(table: pd.DataFrame, by: str = "feasible_mean") -> dict[str, Any] | None:
    """The cheapest point (mean FLOPs) that is feasible by ``by``; None if none is."""
    ok = table[table[by].astype(bool)]
    if ok.empty:
        return None
    return ok.sort_values(["flops", "regime", "real_fraction"]).iloc[0].to_dict()


def markdown(table: pd.DataFrame, tolerance: float) -> str:
    lines = ["| regime | real fraction | seeds | mean gap +- se | UCB | collapsed (gap > "
             f"{tolerance:g}) | mean FLOPs | CPU s/chain |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        mark = "**" if r.feasible_mean else ""
        lines.append(f"| {r.regime} | {r.real_fraction:.2f} | {r.n} | {mark}{r.gap:+.3f}{mark} "
                     f"+- {r.gap_se:.3f} | {r.gap_ucb:+.3f} | {r.collapsed}/{r.n} | "
                     f"{r.flops:.4g} | {r.cpu_s:.1f} |")
    return "\n".join(lines)


def _seeds(text: str) -> list[int]:
    if "-" in text and "," not in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--regimes", default=",".join(REGIMES))
    p.add_argument("--fractions", default=",".join(str(f) for f in FRACTIONS))
    p.add_argument("--seeds", default=f"{SEEDS[0]}-{SEEDS[-1]}", help="e.g. 100-109 or 1,5,7")
    p.add_argument("--out", default=OUT, help="parquet file (resumed from when it exists)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--summary", action="store_true", help="only print the table of --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.summary:
        rows = pd.read_parquet(out)
    else:
        rows = run_grid(args.regimes.split(","), [float(f) for f in args.fractions.split(",")],
                        _seeds(args.seeds), out, config=args.config, overrides=args.set,
                        workers=args.workers)
    table = summarize(rows)
    tol = float(rows["tolerance"].iloc[0])
    print(markdown(table, tol))
    print(f"chains: {len(rows)}, CPU {rows['cpu_s'].sum() / 60:.1f} min; metric "
          f"{rows['metric'].iloc[0]}, tolerance {tol:g}")
    for by in ("feasible_mean", "feasible_ucb"):
        ans = grid_answer(table, by)
        print(f"cheapest point with {by.split('_')[1]} gap within tolerance: " + (
            "none" if ans is None else f"{ans['regime']} real_fraction {ans['real_fraction']:.2f}"
            f" (gap {ans['gap']:+.3f} +- {ans['gap_se']:.3f}, FLOPs {ans['flops']:.4g})"))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
