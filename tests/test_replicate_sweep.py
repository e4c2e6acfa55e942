"""A Ray sweep with replicates and confirmation, end to end (small analytic chains)."""

from __future__ import annotations

import pandas as pd
import pytest

from sweep.config import load_config
from sweep.engine.replicates import CONFIRM_SEED_OFFSET
from sweep.rundir.ledger import Ledger


@pytest.mark.slow
def test_sweep_with_seeds_confirms_the_cheapest_on_unseen_seeds(ray_session, tmp_path):
    from sweep.analysis.core import summarize
    from sweep.analysis.load import load_sweep
    from sweep.search.driver import confirmations_to_run, run_sweep
    from sweep.search.progress import SweepSettings
    from sweep.search.space import validate_search

    cfg = load_config({
        "name": "rep", "seed": 5, "model": {"family": "gaussian"},
        "recursion": {"generations": 4, "samples_per_generation": 50},
        "collapse": {"metric": "real_nll", "tolerance": 0.05, "confidence": 0.9},
        "search": {"sampler": "grid", "trials": 6, "seeds": 3, "confirm": {"top": 2, "seeds": 4},
                   "space": {"recursion.regime": {"choice": ["replace", "accumulate"]},
                             "recursion.real_fraction": {"grid": [0.0, 0.5, 0.9]}}},
        "resources": {"cpu": 1, "gpu": 0},
    })
    run_dir = run_sweep(cfg, storage=str(tmp_path), progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == 6 and (df["n_seeds"] == 3).all()
    assert (df["feasible"] == (df["quality_gap_ucb"] <= 0.05)).all()
    assert (df["quality_gap_ucb"] >= df["quality_gap"]).all()
    for trial_id in df["trial_id"]:
        gens = pd.read_parquet(run_dir / "trials" / trial_id / "generations.parquet")
        assert sorted(gens["seed"].unique()) == [5, 6, 7] and len(gens) == 3 * 5

    records = Ledger(run_dir).records()
    confirmed = [r for r in records if r["event"] == "done" and r.get("stage") == "confirm"]
    n_feasible = int(df["feasible"].sum())
    assert len(confirmed) == min(2, n_feasible)
    search_seeds = {s for r in records if r["event"] == "done" and r.get("stage") == "search"
                    for s in r["seeds"]}
    for r in confirmed:  # fresh seeds: never used by any search trial
        assert r["seeds"] == [5 + CONFIRM_SEED_OFFSET + i for i in range(4)]
        assert not set(r["seeds"]) & search_seeds
    summary = summarize(load_sweep(run_dir))
    assert len(summary["confirmation"]) == len(confirmed)
    if summary["answer"] is not None:
        assert summary["answer"]["confirmation"]["confirmed"]
        assert "confirmed on 4 unseen seeds" in summary["answer_text"]
    # A resumed sweep (or a second call) does not redo a confirmation that is recorded.
    settings = SweepSettings(config=load_config(run_dir / "sweep.yaml"), spec=validate_search(cfg),
                             run_dir=run_dir, progress=False)
    assert confirmations_to_run(settings) == []
