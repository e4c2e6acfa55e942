"""REFERENCES.md reproduced by the engine, with thousands of seeds and its tolerances."""

from __future__ import annotations

import pandas as pd
import pytest

from sweep.cli.main import main
from sweep.config import load_config
from sweep.engine.chain import run_chains


def test_gaussian_replace_variance_decay():
    # E[var_g] = ((n-1)/n)^(g+1); 4000 seeds give ~1.1% standard error at g = 20 (see theory.py).
    n, seeds = 100, 4000
    df = run_chains(load_config({"recursion": {"generations": 20}, "data": {"test_size": 10}}),
                    range(seeds))
    for g in (0, 10, 20):
        measured = df.loc[df.generation == g, "var"].mean()
        assert measured == pytest.approx(((n - 1) / n) ** (g + 1), rel=0.05)


@pytest.mark.slow
def test_theory_command_passes_every_row(tmp_path):
    # The whole `collapse-sweep theory`: Gaussian replace (MLE and unbiased) and accumulate,
    # linear regression replace (ratio g+1) and accumulate (sum 1/i^2), categorical replace.
    assert main(["theory", "--out", str(tmp_path)]) == 0
    rows = pd.read_csv(tmp_path / "theory.csv")
    assert rows.passed.all(), rows[~rows.passed]
    assert {"gaussian replace (MLE)", "gaussian accumulate", "linreg replace",
            "linreg accumulate", "categorical replace"} <= set(rows.check)
    assert (rows.seeds >= 2000).all()
    assert (tmp_path / "theory.png").stat().st_size > 10_000
