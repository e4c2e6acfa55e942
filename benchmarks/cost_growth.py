"""Cost growth over 50 generations per regime, and the compact token pool."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import numpy as np

from benchmarks.common import at_most, record, rss_bytes
from sweep.config import ChainConfig, load_config
from sweep.engine.chain import Chain
from sweep.engine.regimes import REGIMES, Pool

GROWTH_LIMIT = 1.25  # last-10 / first-10 generations, for what should stay flat

METHOD = """\
One 4-D Gaussian chain per regime (n = 20 000 per generation, 50 generations, real fraction
0.2, self-curation at strength 0.3), the three regimes stepped in lockstep (generation g of
every regime, then g + 1: interleaved), 3 chain seeds; per-generation time is the median
over the seeds. A second, separate pass steps the same chains under `tracemalloc` and
records each step's peak traced allocation (reset before the step) and the pool's `nbytes`;
RSS is read at the end. Slope ratio = mean of generations 41-50 / mean of generations 1-10
(generation 0, the real-data fit, excluded). `replace` and `accumulate-subsample` train on n
examples every generation and must stay flat (time ratio <= 1.25); `accumulate` trains on
D_0 + every batch, so its data grows linearly (ratio of mean training sizes ~7.1): its target
is time ratio <= that data ratio (linear, not super-linear). The pool of
`accumulate-subsample` also holds the union (it is what is subsampled), so its memory grows
like accumulate's while its time does not. The compact pool: `sweep.engine.regimes.Pool` fed 1M
tokens as int32 / int64 arrays of shape (rows, 128) in batches of 512 rows (one
generation of LM samples), nbytes and the traced allocation (capacity doubling) reported.
numpy's BLAS is held to one thread (threadpoolctl)."""


def _config(regime: str, generations: int, n: int) -> ChainConfig:
    return load_config({
        "model": {"family": "gaussian", "dim": 4},
        "recursion": {"generations": generations, "samples_per_generation": n, "regime": regime,
                      "real_fraction": 0.2},
        "curation": {"scorer": "self", "strength": 0.3},
        "collapse": {"stop_early": False},
    })


def _time_pass(configs: dict[str, ChainConfig], seeds: list[int]) -> tuple[dict[str, np.ndarray],
                                                                            dict[str, np.ndarray]]:
    times = {r: [] for r in configs}
    sizes = {r: None for r in configs}
    for seed in seeds:
        chains = {r: Chain(c, seed=seed) for r, c in configs.items()}
        per = {r: [] for r in configs}
        while not all(ch.done for ch in chains.values()):
            for r, ch in chains.items():
                t0 = time.perf_counter()
                ch.step()
                per[r].append(time.perf_counter() - t0)
        for r in configs:
            times[r].append(per[r])
            sizes[r] = np.array([row["train_size"] for row in chains[r].rows], dtype=float)
    return {r: np.median(np.array(t), axis=0) for r, t in times.items()}, sizes


def _memory_pass(configs: dict[str, ChainConfig], seed: int) -> tuple[dict[str, np.ndarray],
                                                                      dict[str, int]]:
    peaks: dict[str, list[int]] = {r: [] for r in configs}
    pool_bytes: dict[str, int] = {}
    tracemalloc.start()
    try:
        for r, c in configs.items():
            chain = Chain(c, seed=seed)
            while not chain.done:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                chain.step()
                peaks[r].append(tracemalloc.get_traced_memory()[1] - base)
            pool_bytes[r] = chain.pool.nbytes
            del chain
    finally:
        tracemalloc.stop()
    return {r: np.array(p, dtype=float) for r, p in peaks.items()}, pool_bytes


def _ratio(series: np.ndarray, k: int = 10) -> float:
    return float(np.mean(series[-k:]) / np.mean(series[1 : k + 1]))


def compact_pool(dtype: type, *, tokens: int = 1_000_000, length: int = 128,
                 batch_rows: int = 512) -> tuple[int, int, int]:
    """(tokens stored, pool nbytes, traced bytes while the pool is alive)."""
    rng = np.random.default_rng(0)
    rows = -(-tokens // length)
    tracemalloc.start()
    try:
        pool = Pool(rng.integers(0, 256, size=(batch_rows, length), dtype=dtype))
        while len(pool) < rows:
            take = min(batch_rows, rows - len(pool))
            pool.append(rng.integers(0, 256, size=(take, length), dtype=dtype))
        traced = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return int(pool.view().size), pool.nbytes, traced


def run(quick: bool) -> list[dict[str, Any]]:
    generations, n, seeds = (20, 2_000, [0]) if quick else (50, 20_000, [0, 1, 2])
    configs = {r: _config(r, generations, n) for r in REGIMES}
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a loaded 2-core machine an idle 2-thread OpenBLAS adds noise that
    # has nothing to do with the regimes.
    with threadpool_limits(1, user_api="blas"):
        Chain(configs["replace"], seed=99).step()  # warm-up
        times, sizes = _time_pass(configs, seeds)
        peaks, pool_bytes = _memory_pass(configs, seeds[0])
    rss = rss_bytes()
    k = 10 if not quick else 5
    records = []
    for r in REGIMES:
        t_ratio = _ratio(times[r], k)
        data_ratio = _ratio(sizes[r], k)
        if r == "accumulate":
            target, met = at_most(t_ratio, round(data_ratio, 2))
        else:
            target, met = at_most(t_ratio, GROWTH_LIMIT)
        records.append(record(f"{r}: time ratio last/first 10 gens", t_ratio, "ratio", target=target,
                              met=met, note=f"{np.mean(times[r][1:k + 1]) * 1e3:.1f} -> "
                                            f"{np.mean(times[r][-k:]) * 1e3:.1f} ms per generation; "
                                            f"training-set size ratio {data_ratio:.2f}"))
        mem_ratio = _ratio(peaks[r], k)
        if r == "replace":
            mt, mm = at_most(mem_ratio, GROWTH_LIMIT)
        else:
            mt, mm = None, None
        records.append(record(f"{r}: peak traced memory ratio last/first 10 gens", mem_ratio,
                              "ratio", target=mt, met=mm,
                              note=f"{np.mean(peaks[r][1:k + 1]) / 2**20:.2f} -> "
                                   f"{np.mean(peaks[r][-k:]) / 2**20:.2f} MiB peak per step; pool "
                                   f"{pool_bytes[r] / 2**20:.2f} MiB at the end"))
    records.append(record("process RSS after the chains", rss / 2**20, "MiB"))
    for dtype, per_token in ((np.int32, 4), (np.int64, 8)):
        tokens, nbytes, traced = compact_pool(dtype)
        mb = nbytes / 1e6
        target, met = at_most(mb, round(tokens * per_token / 1e6 * 1.01, 2))
        records.append(record(f"pool of {tokens / 1e6:.2f}M {np.dtype(dtype).name} tokens: nbytes",
                              mb, "MB", target=target, met=met,
                              note=f"{traced / 1e6:.1f} MB allocated incl. spare capacity "
                                   "(doubling growth)"))
    return records
