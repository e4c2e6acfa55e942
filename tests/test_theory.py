"""REFERENCES.md reproduced by the engine, with thousands of seeds and its tolerances."""

from __future__ import annotations

import pytest

from sweep.cli import main
from sweep.config import load_config
from sweep.recursion import run_chains
from sweep.theory import run_theory


def test_gaussian_replace_variance_decay():
    # E[var_g] = ((n-1)/n)^(g+1); 4000 seeds give ~1.1% standard error at g = 20 (see theory.py).
    n, seeds = 100, 4000
    df = run_chains(load_config({"recursion": {"generations": 20}, "data": {"test_size": 10}}),
                    range(seeds))
    for g in (0, 10, 20):
        measured = df.loc[df.generation == g, "var"].mean()
        assert measured == pytest.approx(((n - 1) / n) ** (g + 1), rel=0.05)


@pytest.mark.slow
def test_every_theory_row_passes():
    rows, _, _ = run_theory()
    failed = [(r.check, r.statistic, r.generation, r.measured, r.theory) for r in rows if not r.passed]
    assert not failed
    checks = {r.check for r in rows}
    assert {"gaussian replace (MLE)", "gaussian accumulate", "linreg replace",
            "linreg accumulate", "categorical replace"} <= checks


@pytest.mark.slow
def test_theory_command_writes_png_and_exits_zero(tmp_path):
    assert main(["theory", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "theory.png").stat().st_size > 10_000
    assert (tmp_path / "theory.csv").is_file()
