"""A family from outside the project (tests/plugins/collapse_exponential.py, the README's
"Write your own family"): a chain and a two-trial sweep run on it by name, no project edit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep import ConfigError, load_config, run_chain

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"
FAMILY = "collapse_exponential:FAMILY"


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def test_readme_example_is_the_tested_file():
    readme = (ROOT / "README.md").read_text()
    assert (PLUGINS / "collapse_exponential.py").read_text().strip() in readme


def test_chain_command_runs_a_family_named_by_dotted_path(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(PLUGINS)])}
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "sweep", "chain", "--set", f"model.family={FAMILY}",
         "--set", "model.rate=2.0", "--set", "recursion.generations=4",
         "--set", "recursion.samples_per_generation=2000", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = pd.read_parquet(out / "generations.parquet")
    assert list(df["generation"]) == [0, 1, 2, 3, 4]
    assert df["rate"].iloc[0] == pytest.approx(2.0, rel=0.1)  # MLE on 2000 draws: ~2% error
    assert np.isfinite(df["real_nll"]).all() and (df["cumulative_flops"].diff().dropna() > 0).all()


def test_its_own_model_validates_its_section(on_path):
    with pytest.raises(ConfigError, match=r"^model.rat: unknown field \(allowed: family, rate\)"):
        load_config({"model": {"family": FAMILY, "rat": 2.0}})
    with pytest.raises(ConfigError, match=r"^model.rate: input should be greater than 0"):
        load_config({"model": {"family": FAMILY, "rate": 0}})
    with pytest.raises(ConfigError, match=r"^model.family: 'collapse_exponential:NOPE'"):
        load_config({"model": {"family": "collapse_exponential:NOPE"}})


def test_chain_is_reproducible_and_resumable(on_path, tmp_path):
    cfg = load_config({"model": {"family": FAMILY}, "recursion": {"generations": 6,
                       "regime": "accumulate"}, "curation": {"scorer": "oracle", "strength": 0.5}})
    a = run_chain(cfg)
    b = run_chain(cfg, checkpoint_dir=tmp_path / "ckpt")
    pd.testing.assert_frame_equal(a, b)
    assert run_chain(cfg, checkpoint_dir=tmp_path / "ckpt").equals(a)  # finished: nothing rerun


def test_two_trial_sweep_on_it(ray_session, on_path, tmp_path):
    from sweep.search.driver import run_sweep

    cfg = load_config({
        "name": "expo", "model": {"family": FAMILY, "rate": 3.0},
        "recursion": {"generations": 5},
        "search": {"sampler": "grid", "trials": 2, "concurrency": 2,
                   "space": {"recursion.regime": {"choice": ["replace", "accumulate"]}}}})
    run_dir = run_sweep(cfg, storage=str(tmp_path), progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == 2 and (df["status"] == "finished").all(), df[["status", "error"]]
    assert set(df["param.recursion.regime"]) == {"replace", "accumulate"}
    for trial_id in df["trial_id"]:
        frame = pd.read_parquet(run_dir / "trials" / trial_id / "generations.parquet")
        assert len(frame) == 6 * 5 and "rate" in frame  # 5 seeds per trial (search.seeds)
