"""Reproductions of the analytic collapse results (sweep/theory/REFERENCES.md) by the engine.

Each check runs real chains through ``run_chains`` (the same code path as every sweep) over
thousands of seeds and compares a Monte-Carlo statistic with the closed form.

Where each check looks, and why there: for the Gaussian under ``replace`` the fitted
variance is a product of (g + 1) independent chi^2_{n-1} / n factors, so its relative
standard deviation is sqrt(((n+1)(n-1)/n^2 / ((n-1)/n)^2)^(g+1) - 1): 0.7 at g = 20 but 2.5
at g = 100 (n = 100). A 5% check on the mean therefore needs g <= ~20 with a few thousand
seeds; later generations are plotted, not asserted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.config import load_config
from sweep.engine.chain import run_chains
from sweep.theory.curves import theory_curves

N = 100  # samples per generation, as in sweep/theory/REFERENCES.md


@dataclass
class TheoryRow:
    check: str
    statistic: str
    generation: int
    measured: float
    theory: float
    tolerance: float
    kind: str  # "relative": |m / t - 1| <= tol; "lower-bound": m >= t (1 - tol)
    seeds: int

    @property
    def error(self) -> float:
        return self.measured / self.theory - 1.0

    @property
    def passed(self) -> bool:
        if self.kind == "lower-bound":
            return bool(self.error >= -self.tolerance)
        return bool(abs(self.error) <= self.tolerance)


@dataclass
class Check:
    name: str
    config: dict[str, Any]
    seeds: int
    rows: Callable[[pd.DataFrame, int], list[TheoryRow]]
    curve: Callable[[pd.DataFrame], tuple[str, np.ndarray, np.ndarray, np.ndarray]]


def _mean_at(df: pd.DataFrame, col: str, g: int, fn=np.mean) -> float:
    return float(fn(df.loc[df.generation == g, col].to_numpy()))


def _by_gen(df: pd.DataFrame, col: str, fn: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    s = df.groupby("generation")[col].agg(fn)
    return s.index.to_numpy(), s.to_numpy()


Expected = Callable[[np.ndarray], np.ndarray]


def _expected(config: dict[str, Any]) -> Expected:
    """The closed form for ``config``, from sweep.theory.curves (the report's overlays use
    the same function, so a formula lives in one place)."""
    (curve,) = theory_curves(load_config(config))
    return curve.expected


def _at(expect: Expected, g: int) -> float:
    return float(np.asarray(expect(np.array([g])), dtype=float)[0])


def _gauss_replace_rows(expect: Expected) -> Callable[[pd.DataFrame, int], list[TheoryRow]]:
    def rows(df: pd.DataFrame, seeds: int) -> list[TheoryRow]:
        return [TheoryRow("gaussian replace (MLE)", "E[var_g]", g, _mean_at(df, "var", g),
                          _at(expect, g), 0.05, "relative", seeds) for g in (0, 5, 10, 20)]

    return rows


def _gauss_unbiased_rows(df: pd.DataFrame, seeds: int) -> list[TheoryRow]:
    rows = [TheoryRow("gaussian replace (unbiased)", "median var_g", g,
                      _mean_at(df, "var", g, np.median), math.exp(-(g + 1) / (N - 1)), 0.05,
                      "relative", seeds) for g in (10, 50)]
    rows.append(TheoryRow("gaussian replace (unbiased)", "E[var_g]", 20, _mean_at(df, "var", 20),
                          1.0, 0.05, "relative", seeds))
    return rows


def _gauss_accumulate_rows(df: pd.DataFrame, seeds: int) -> list[TheoryRow]:
    g = int(df.generation.max())
    # Bounded: E[var_g] >= ((n-1)/n) * prod_k (1 - 1/(n (k+1))) (the within-batch part alone,
    # 0.95 at g = 100), against ((n-1)/n)^(g+1) = 0.37 under replace. E[mu_g^2] -> (pi^2/6)/n.
    within = (N - 1) / N * np.prod([1 - 1 / (N * (k + 1)) for k in range(1, g + 1)])
    mu2 = df.loc[df.generation == g, "mean"].to_numpy() ** 2
    return [
        TheoryRow("gaussian accumulate", "E[var_g] (bounded)", g, _mean_at(df, "var", g), within,
                  0.05, "lower-bound", seeds),
        TheoryRow("gaussian accumulate", "E[mu_g^2]", g, float(mu2.mean()),
                  (math.pi**2 / 6) / N, 0.10, "relative", seeds),
    ]


def _param_ratio(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    gens, err = _by_gen(df, "param_error")
    return gens, err / err[0]


def _linreg_rows(regime: str, expect: Expected) -> Callable[[pd.DataFrame, int], list[TheoryRow]]:
    def rows(df: pd.DataFrame, seeds: int) -> list[TheoryRow]:
        gens, ratio = _param_ratio(df)
        return [TheoryRow(f"linreg {regime}", "E[err_g] / E[err_0]", g, float(ratio[g]),
                          _at(expect, g), 0.05, "relative", seeds) for g in (1, 5, 10)]

    return rows


def _categorical_rows(expect: Expected) -> Callable[[pd.DataFrame, int], list[TheoryRow]]:
    def rows(df: pd.DataFrame, seeds: int) -> list[TheoryRow]:
        return [TheoryRow("categorical replace", "E[gini_g]", g, _mean_at(df, "gini", g),
                          _at(expect, g), 0.03, "relative", seeds) for g in (0, 10, 25, 50)]

    return rows


def checks(scale: float = 1.0) -> list[Check]:
    """The theory checks; ``scale`` multiplies the seed counts (tests use fewer)."""
    s = lambda n: max(50, int(n * scale))  # noqa: E731
    base = {"recursion": {"samples_per_generation": N}, "data": {"test_size": 50}}

    def cfg(**sections: dict) -> dict:
        out = {k: dict(v) for k, v in base.items()}
        for key, value in sections.items():
            out.setdefault(key, {}).update(value)
        return out

    gauss = cfg(recursion={"generations": 20})
    linreg = {regime: cfg(model={"family": "linreg"}, recursion={"generations": 10, "regime": regime})
              for regime in ("replace", "accumulate")}
    categorical = cfg(model={"family": "categorical"}, recursion={"generations": 50})
    var_curve = _expected(gauss)
    err_curves = {regime: _expected(c) for regime, c in linreg.items()}
    gini_curve = _expected(categorical)
    return [
        Check("gaussian replace (MLE)", gauss, s(3000), _gauss_replace_rows(var_curve),
              lambda df: ("var", *_by_gen(df, "var"), var_curve(_by_gen(df, "var")[0]))),
        Check("gaussian replace (unbiased)",
              cfg(model={"family": "gaussian", "estimator": "unbiased"}, recursion={"generations": 50}),
              s(2000), _gauss_unbiased_rows,
              lambda df: ("median var", *_by_gen(df, "var", "median"),
                          np.exp(-(_by_gen(df, "var")[0] + 1) / (N - 1)))),
        Check("gaussian accumulate", cfg(recursion={"generations": 50, "regime": "accumulate"}),
              s(2000), _gauss_accumulate_rows,
              lambda df: ("var", *_by_gen(df, "var"), np.full(len(_by_gen(df, "var")[0]), np.nan))),
        *(Check(f"linreg {regime}", linreg[regime], s(2000), _linreg_rows(regime, err_curves[regime]),
                lambda df, regime=regime: ("err ratio", *_param_ratio(df),
                                           err_curves[regime](_param_ratio(df)[0])))
          for regime in ("replace", "accumulate")),
        Check("categorical replace", categorical, s(2000), _categorical_rows(gini_curve),
              lambda df: ("gini", *_by_gen(df, "gini"), gini_curve(_by_gen(df, "gini")[0]))),
    ]


def run_theory(*, scale: float = 1.0, workers: int | None = None, progress=None
               ) -> tuple[list[TheoryRow], dict[str, pd.DataFrame], float]:
    """Run every check; returns its rows, the raw frames per check, and the wall time."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    rows: list[TheoryRow] = []
    frames: dict[str, pd.DataFrame] = {}
    workers = workers or os.cpu_count() or 1
    # One pool for every check: worker start-up (imports) is paid once.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for check in checks(scale):
            if progress:
                progress(check.name, check.seeds)
            df = run_chains(load_config(check.config), range(check.seeds), workers=workers,
                            executor=pool)
            frames[check.name] = df
            rows.extend(check.rows(df, check.seeds))
    return rows, frames, time.perf_counter() - start


def rows_frame(rows: list[TheoryRow]) -> pd.DataFrame:
    df = pd.DataFrame([asdict(r) | {"error": r.error, "passed": r.passed} for r in rows])
    return df


def plot_theory(frames: dict[str, pd.DataFrame], path: Path, *, scale: float = 1.0) -> Path:
    """One panel per check: the measured statistic per generation against the closed form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = {c.name: c for c in checks(scale)}
    fig, axes = plt.subplots(2, 3, figsize=(14, 8), constrained_layout=True)
    for ax, (name, df) in zip(axes.flat, frames.items(), strict=False):
        label, gens, measured, theory = cs[name].curve(df)
        ax.plot(gens, measured, "o", ms=3, label=f"measured ({df.seed.nunique()} seeds)")
        if np.isfinite(theory).any():
            ax.plot(gens, theory, "-", lw=1.5, label="theory")
        ax.set_title(name)
        ax.set_xlabel("generation")
        ax.set_ylabel(label)
        ax.legend(frameon=False)
    fig.suptitle("collapse-sweep theory check (n = 100 samples per generation)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
