"""The report renders every figure from real analytic chains, and degrades gracefully."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_analysis import base_config, make_run  # tests/ is on sys.path (no package)

from sweep.analysis.core import load_sweep
from sweep.config import dump_config, load_config
from sweep.files.atomic import write_text
from sweep.report.build import build_report, fig_theory, trial_configs
from sweep.theory.curves import theory_curves

FIGURES = ("compute_vs_quality", "phase", "real_nll", "tail", "theory")


def _imgs(text: str) -> list[str]:
    return re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" alt="([a-z_]+)"', text)


@pytest.mark.parametrize("with_running", [False, True])
def test_report_renders_every_figure(tmp_path, with_running):
    run = make_run(tmp_path, with_running=with_running)
    index = build_report(run)
    text = index.read_text()
    assert _imgs(text) == list(FIGURES)
    for png in FIGURES:
        assert (run / "report" / f"{png}.png").stat().st_size > 10_000
    assert "Cheapest non-collapsing configuration:</b> regime=" in text
    assert "Feasible Pareto front" in text and "Parameter importance" in text
    for pkg in ("python", "numpy", "torch", "ray", "optuna", "platform"):
        assert f"<th>{pkg}</th>" in text
    assert "tolerance: 0.1" in text  # the exact sweep.yaml
    assert (run / "results.csv").is_file() and (run / "generations.csv").is_file()
    trials = 9 if with_running else 8
    assert (run / "generations.csv").read_text().count("\n") == 8 * 9 + (3 if with_running else 0) + 1
    assert len(load_sweep(run).results) == trials + (1 if with_running else 0)


def test_report_of_a_sweep_without_results(tmp_path):
    run = tmp_path / "empty"
    write_text(run / "sweep.yaml", dump_config(load_config(base_config() | {"name": "empty"})))
    text = build_report(run).read_text()
    assert _imgs(text) == []  # no empty frames: each figure is a line saying why
    assert "No finished trial yet" in text
    assert "No configuration avoided collapse" in text


@pytest.mark.parametrize(("family", "column"), [("gaussian", "var"), ("linreg", "param_error"),
                                                ("categorical", "gini")])
def test_theory_overlay_only_on_trials_meeting_its_assumptions(tmp_path, family, column):
    run = make_run(tmp_path, family=family, name=family)
    sweep = load_sweep(run)
    configs = trial_configs(sweep)
    matching = {t for t, c in configs.items() if theory_curves(c)}
    # pure regime (real_fraction 0, strength 0): t0 replace; accumulate only for linreg
    assert matching == ({"t0", "t4"} if family == "linreg" else {"t0"})
    assert all(c.column == column for t in matching for c in theory_curves(configs[t]))
    assert fig_theory(sweep, tmp_path / "theory.png", configs).stat().st_size > 10_000


def test_theory_curves_match_references():
    g = np.arange(4)
    linreg = load_config({"model": {"family": "linreg"}, "recursion": {"regime": "accumulate"}})
    (curve,) = theory_curves(linreg)
    assert np.allclose(curve.expected(g), [1, 1.25, 1.25 + 1 / 9, 1.25 + 1 / 9 + 1 / 16])
    gauss = load_config({"recursion": {"samples_per_generation": 10}})
    assert np.allclose(theory_curves(gauss)[0].expected(g), 0.9 ** (g + 1))
    assert theory_curves(load_config({"recursion": {"real_fraction": 0.1}})) == []
    assert theory_curves(load_config({"recursion": {"regime": "accumulate-subsample"}})) == []
