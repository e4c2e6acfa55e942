"""Scratch: the CLI runs behind notes/IMAGE_COLLAPSE.md and tests/test_image_collapse.py.

    PYTHONPATH=$PWD python notes/scratch/image_collapse_runs.py vae [OUT]

runs `collapse-sweep chain configs/<family>-digits.yaml --set recursion.regime=R --seed S`
(what the test runs: 3 seeds x replace / accumulate, two chains at a time, one per core), then
prints per generation the mean (sd over seeds) of fd and minority_share, each run's final
values, and the paired per-seed differences the test's thresholds come from.
"""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

SEEDS, REGIMES = (0, 1, 2), ("replace", "accumulate")


def chain(family: str, regime: str, seed: int, out: Path) -> pd.DataFrame:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "sweep", "chain", f"configs/{family}-digits.yaml",
           "--set", f"recursion.regime={regime}", "--seed", str(seed), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return pd.read_parquet(out / "generations.parquet")


def main(family: str, out: Path) -> None:
    runs = [(r, s) for r in REGIMES for s in SEEDS]
    with ThreadPoolExecutor(2) as pool:
        dfs = dict(zip(runs, pool.map(lambda rs: chain(family, *rs, out / f"{family}-{rs[0]}-{rs[1]}"),
                                      runs), strict=True))
    for col in ("fd", "minority_share"):
        print(f"\n{family} {col}: mean (sd over seeds 0, 1, 2) per generation; mean {col}_se")
        print("| generation | " + " | ".join(REGIMES) + " |\n|---|---|---|")
        for g in range(len(dfs[runs[0]])):
            cells = []
            for r in REGIMES:
                v = np.array([dfs[(r, s)][col].iloc[g] for s in SEEDS])
                se = np.mean([dfs[(r, s)][f"{col}_se"].iloc[g] for s in SEEDS])
                cells.append(f"{v.mean():.4g} ({v.std(ddof=1):.2g}; se {se:.2g})")
            print(f"| {g} | " + " | ".join(cells) + " |")
    for r in REGIMES:
        print(r, "final fd", [round(float(dfs[(r, s)]["fd"].iloc[-1]), 1) for s in SEEDS],
              "final minority_share", [round(float(dfs[(r, s)]["minority_share"].iloc[-1]), 4) for s in SEEDS],
              "generation-0 minority_share", [round(float(dfs[(r, s)]["minority_share"].iloc[0]), 4) for s in SEEDS])
    gap = {r: np.mean([dfs[(r, s)]["fd"].iloc[-1] / dfs[(r, s)]["fd"].iloc[0] - 1 for s in SEEDS])
           for r in REGIMES}
    share = {r: np.array([dfs[(r, s)]["minority_share"].iloc[-1] for s in SEEDS]) for r in REGIMES}
    share0 = np.array([dfs[("replace", s)]["minority_share"].iloc[0] for s in SEEDS])
    print(f"mean fd gap: replace {gap['replace']:.3f}, accumulate {gap['accumulate']:.3f}")
    print(f"final minority share accumulate - replace per seed {np.round(share['accumulate'] - share['replace'], 4)}"
          f", mean {np.mean(share['accumulate'] - share['replace']):.4f}")
    print(f"replace: final - generation-0 minority share per seed {np.round(share['replace'] - share0, 4)}"
          f", mean {np.mean(share['replace'] - share0):.4f}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/image-collapse-runs"))
