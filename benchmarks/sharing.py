"""Sharing generation 0 (data + model 0) across the trials of a sweep vs building it per trial."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import at_least, median, record
from sweep.config import ChainConfig, load_config
from sweep.engine.chain import Chain

#: Columns that describe the fit of a model; a shared model 0 was loaded, not fit, so its
#: generation-0 row has no fit diagnostics. They are compared from generation 1 on.
FIT_DIAGNOSTICS = ("train_loss", "val_loss", "epochs_run", "steps")

#: The trials of one sweep: different regimes / real fractions, same seed, data and model.
VARIANTS = [
    {"regime": "replace", "real_fraction": 0.0},
    {"regime": "replace", "real_fraction": 0.5},
    {"regime": "accumulate", "real_fraction": 0.0},
    {"regime": "accumulate-subsample", "real_fraction": 0.2},
]

METHOD = """\
N = 4 trials of one sweep (replace rf 0, replace rf 0.5, accumulate rf 0,
accumulate-subsample rf 0.2; same seed, model and data, as a sweep's trials are), on the
gpt family (size xs, truth-lm data, n = 200 sequences per generation, 1 generation after
model 0, CPU, one torch thread as in a 1-CPU sweep trial: with torch's default 2 threads,
while another torch process ran on this 2-core machine, one gpt generation step took 18 s
instead of about 1 s). **Separate**: every trial runs `Chain(config_i, seed=0)` to the
end, building the truth-lm problem and fitting model 0 itself. **Shared**: one
`Chain(config_0, seed=0)` builds the problem and steps generation 0 once; every trial then
runs `Chain(config_i, seed=0, problem=shared.problem, model0_state=shared.model0_state)`.
Both timed in one process, alternating (separate, shared) x 3, median over the
repetitions. FLOPs: separate = sum of every trial's `cumulative_flops`; shared = the same
minus (N - 1) x generation 0's fit (each trial's row still records model 0's cost). Frames:
every column of every generation must be identical (`DataFrame.equals` per column), except
the fit diagnostics (train_loss, val_loss, epochs_run, steps) of generation 0, which a
loaded model 0 does not have; they are compared from generation 1 on. (Quick mode uses the
gmm family instead, so that the smoke test stays fast.)"""


def configs(quick: bool) -> list[ChainConfig]:
    if quick:
        base = {"model": {"family": "gmm", "components": 2},
                "recursion": {"generations": 2, "samples_per_generation": 200}}
    else:
        base = {"model": {"family": "gpt", "size": "xs", "device": "cpu"},
                "data": {"source": "truth-lm"},
                "recursion": {"generations": 1, "samples_per_generation": 200}}
    out = []
    for v in VARIANTS:
        tree = {**base, "recursion": {**base["recursion"], **v}}
        out.append(load_config(tree))
    return out


def _finish(chain: Chain) -> pd.DataFrame:
    while not chain.done:
        chain.step()
    return chain.frame()


def separate(cfgs: list[ChainConfig]) -> list[pd.DataFrame]:
    return [_finish(Chain(c, seed=0)) for c in cfgs]


def shared(cfgs: list[ChainConfig]) -> list[pd.DataFrame]:
    first = Chain(cfgs[0], seed=0)
    first.step()  # generation 0: data + model 0, once
    problem, state = first.problem, first.model0_state
    return [_finish(Chain(c, seed=0, problem=problem, model0_state=state)) for c in cfgs]


def differences(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Columns that differ (fit diagnostics compared from generation 1 on); [] = identical."""
    if len(a) != len(b):
        return ["<row count>"]
    out = sorted(set(a.columns) ^ set(b.columns))
    for col in (c for c in a.columns if c in b.columns):
        x, y = (a[col].iloc[1:], b[col].iloc[1:]) if col in FIT_DIAGNOSTICS else (a[col], b[col])
        if not x.reset_index(drop=True).equals(y.reset_index(drop=True)):
            out.append(col)
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    import torch

    cfgs = configs(quick)
    reps = 1 if quick else 3
    times: dict[str, list[float]] = {"separate": [], "shared": []}
    frames: dict[str, list[pd.DataFrame]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU sweep trial runs (sweep.search.trial sets it)
    try:
        for _ in range(reps):
            for name, fn in (("separate", separate), ("shared", shared)):
                t0 = time.perf_counter()
                frames[name] = fn(cfgs)
                times[name].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    t_sep, t_sh = median(times["separate"]), median(times["shared"])
    n = len(cfgs)
    flops_sep = float(sum(f["cumulative_flops"].iloc[-1] for f in frames["separate"]))
    gen0 = float(frames["separate"][0]["flops"].iloc[0])  # what fitting model 0 costs
    flops_sh = flops_sep - (n - 1) * gen0
    diffs = [differences(a, b) for a, b in zip(frames["separate"], frames["shared"], strict=True)]
    same = sum(not d for d in diffs)
    diff_cols = sorted({c for d in diffs for c in d})
    diff_note = None
    if diff_cols:
        a, b = frames["separate"][0], frames["shared"][0]
        diff_note = (f"differing columns: {', '.join(diff_cols)}; e.g. generation 0 "
                     + "; ".join(f"{c}: {a[c].iloc[0]:.4g} separate vs {b[c].iloc[0]:.4g} shared"
                                 for c in diff_cols if c in a and c in b)
                     + " (a loaded model 0 reports a different fit cost than the fitted one)")
    family = cfgs[0].model.family
    speed = t_sep / t_sh
    target, met = at_least(speed, 1.0)
    return [
        record(f"{family}: {n} trials, separate generation 0", t_sep, "s",
               note=f"repetitions: {', '.join(f'{t:.1f}' for t in times['separate'])} s"),
        record(f"{family}: {n} trials, shared generation 0", t_sh, "s",
               note=f"repetitions: {', '.join(f'{t:.1f}' for t in times['shared'])} s"),
        record(f"{family}: time separate / shared", speed, "ratio", target=target, met=met),
        record(f"{family}: FLOPs separate / shared", flops_sep / flops_sh, "ratio",
               note=f"{flops_sep:.3g} vs {flops_sh:.3g} FLOPs; generation 0 = {gen0:.3g}"),
        record(f"{family}: frames identical (shared vs separate)", same, "trials",
               target=f"= {n}", met=same == n, note=diff_note),
        record(f"{family}: generations per trial", int(np.mean([len(f) for f in frames['shared']])),
               "rows"),
    ]
