"""A trial of k seeds without Ray: per-seed chains, aggregated record, resume, confirmation seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep import run_chain
from sweep.config import dump_config, load_config, trial_config
from sweep.engine.replicates import CONFIRM_SEED_OFFSET, mean_se, upper_bound
from sweep.files.atomic import write_text
from sweep.rundir.confirmation import (
    confirmation_candidates,
    confirmation_frame,
    confirmed_answer,
)
from sweep.rundir.ledger import Ledger
from sweep.rundir.results import cheapest_feasible, results_frame, sweep_summary

PARAMS = {"recursion.regime": "replace", "recursion.real_fraction": 0.5}


def _run_dir(tmp_path: Path, *, seeds: int = 3, generations: int = 4, confirm_seeds: int = 4,
             tolerance: float = 0.05) -> Path:
    cfg = load_config({
        "name": "rep", "seed": 11, "model": {"family": "gaussian"},
        "recursion": {"generations": generations, "samples_per_generation": 40},
        "collapse": {"metric": "real_nll", "tolerance": tolerance, "confidence": 0.9},
        "search": {"sampler": "random", "trials": 4, "seeds": seeds,
                   "confirm": {"top": 2, "seeds": confirm_seeds},
                   "space": {"recursion.regime": {"choice": ["replace", "accumulate"]},
                             "recursion.real_fraction": {"choice": [0.0, 0.5]}}},
    })
    run_dir = tmp_path / cfg.name
    write_text(run_dir / "sweep.yaml", dump_config(cfg))
    return run_dir


def _trial(run_dir: Path, params=PARAMS, **kw):
    from sweep.search.trial import run_trial

    reports: list[dict] = []
    kw.setdefault("trial_id", "a")
    kw.setdefault("number", 0)
    rec = run_trial(run_dir, params, node="n", report=lambda m, c: reports.append(m), **kw)
    return rec, reports


def _chain_gaps(run_dir: Path, seeds, params=PARAMS):
    cfg = trial_config(load_config(run_dir / "sweep.yaml"), params)
    out = []
    for s in seeds:
        summary = run_chain(cfg.model_copy(update={"seed": s})).attrs["summary"]
        out.append((summary["quality_gap"], summary["total_flops"], summary["collapsed"]))
    return out


def test_trial_runs_k_seeds_and_records_means_and_the_bound(tmp_path):
    run_dir = _run_dir(tmp_path, seeds=3)
    rec, reports = _trial(run_dir)
    assert rec["seeds"] == [11, 12, 13] and rec["n_seeds"] == 3
    expected = _chain_gaps(run_dir, [11, 12, 13])
    gaps = [g for g, _, _ in expected]
    mean, se, n = mean_se(gaps)
    assert rec["quality_gap"] == pytest.approx(mean)
    assert rec["quality_gap_se"] == pytest.approx(se)
    assert rec["quality_gap_ucb"] == pytest.approx(upper_bound(mean, se, n, 0.9))
    assert rec["collapsed"] == (rec["quality_gap_ucb"] > 0.05)
    assert rec["collapse_rate"] == pytest.approx(np.mean([c for _, _, c in expected]))
    assert rec["seed_values"]["quality_gap"] == pytest.approx(gaps)
    frame = pd.read_parquet(run_dir / "trials" / "a" / "generations.parquet")
    assert len(frame) == 3 * 5 and sorted(frame["seed"].unique()) == [11, 12, 13]
    for s in (11, 12, 13):  # one checkpoint and one TensorBoard run per seed
        assert (run_dir / "trials" / "a" / "ckpt" / f"seed_{s}" / "chain.pt").is_file()
        assert list((run_dir / "trials" / "a" / "tb" / f"seed_{s}").glob("events.*"))
    assert list((run_dir / "trials" / "a" / "tb").glob("events.*"))  # the trial's intervals
    assert reports[-1]["done"] and reports[-1]["quality_gap_ucb"] == rec["quality_gap_ucb"]
    # generation 0 of each seed went to the shared cache, one entry per seed
    assert len(list((run_dir / "cache").iterdir())) == 3

    df = results_frame(run_dir, space=list(PARAMS), objectives=["quality_gap", "total_flops"])
    row = df.iloc[0]
    assert row["n_seeds"] == 3 and row["quality_gap_ucb"] == pytest.approx(rec["quality_gap_ucb"])
    assert row["feasible"] == (not rec["collapsed"])
    summary = sweep_summary(df, tolerance=0.05, wall_seconds=1.0)
    assert summary["compute_flops_per_trial_sum"] == pytest.approx(sum(f for _, f, _ in expected))


def test_parallel_chains_match_sequential_ones(tmp_path):
    one = _trial(_run_dir(tmp_path / "seq", seeds=3))[0]
    two = _trial(_run_dir(tmp_path / "par", seeds=3), cpus=2.0)[0]
    assert two["seed_values"] == one["seed_values"]


def test_killed_trial_resumes_each_seed_and_a_done_trial_never_reruns(tmp_path, monkeypatch):
    import sweep.engine.chain

    reference = _trial(_run_dir(tmp_path / "ref", seeds=3))[0]
    run_dir = _run_dir(tmp_path / "kill", seeds=3)
    real_step = sweep.engine.chain.Chain.step
    calls = {"n": 0}

    def dying_step(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 8:  # generation 2 of the second seed: the worker is killed
            raise KeyboardInterrupt
        return real_step(self, *a, **kw)

    monkeypatch.setattr(sweep.engine.chain.Chain, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        _trial(run_dir)
    monkeypatch.setattr(sweep.engine.chain.Chain, "step", real_step)
    rec = _trial(run_dir)[0]
    assert rec["seed_values"] == reference["seed_values"]
    events = Ledger(run_dir).records()
    resumed = {r["seed"]: r["generation"] for r in events if r["event"] == "resume"}
    assert resumed == {11: 2, 12: 2, 13: 2}  # lockstep: every seed had finished generation 1
    assert [r["event"] for r in events].count("start") == 1
    again, reports = _trial(run_dir, trial_id="b", number=1)  # same config: reused, not rerun
    assert again["quality_gap"] == rec["quality_gap"] and len(reports) == 1
    assert [r["event"] for r in Ledger(run_dir).records()][-1] == "reuse"


def test_confirmation_uses_unseen_seeds_and_stays_out_of_the_results(tmp_path):
    run_dir = _run_dir(tmp_path, seeds=3, confirm_seeds=4)
    search = _trial(run_dir)[0]
    conf = _trial(run_dir, trial_id="c0", number=-1, stage="confirm")[0]
    assert conf["seeds"] == [11 + CONFIRM_SEED_OFFSET + i for i in range(4)]
    assert not set(conf["seeds"]) & set(search["seeds"])
    assert conf["key"] != search["key"]
    assert (run_dir / "confirm" / "c0" / "generations.parquet").is_file()
    assert not (run_dir / "trials" / "c0").exists()
    df = results_frame(run_dir, space=list(PARAMS), objectives=["quality_gap", "total_flops"])
    assert list(df["number"]) == [0]
    frame = confirmation_frame(run_dir)
    assert len(frame) == 1 and frame.iloc[0]["n_seeds"] == 4
    assert frame.iloc[0]["confirmed"] == (not conf["collapsed"])
    again = _trial(run_dir, trial_id="c1", number=-1, stage="confirm")[0]  # resume: no rerun
    assert again["key"] == conf["key"]
    assert sum(r["event"] == "done" for r in Ledger(run_dir).records()) == 2


def test_confirmed_answer_is_the_cheapest_candidate_confirmed_on_fresh_seeds(tmp_path):
    # Three feasible search trials; the cheapest fails its confirmation, the next holds.
    run_dir = _run_dir(tmp_path, seeds=3, tolerance=10.0)
    ledger = Ledger(run_dir)
    space = list(PARAMS)
    for number, (frac, flops) in enumerate([(0.0, 100.0), (0.5, 200.0), (0.25, 300.0)]):
        params = {"recursion.regime": "replace", "recursion.real_fraction": frac}
        ledger.append("start", key=f"k{number}", trial_id=f"t{number}", number=number,
                      params=params)
        ledger.append("done", key=f"k{number}", trial_id=f"t{number}", number=number,
                      params=params, status="finished", quality_gap=0.01, quality_gap_se=0.01,
                      quality_gap_ucb=0.03, total_flops=flops, collapsed=False, n_seeds=3)
    df = results_frame(run_dir, space=space, objectives=["quality_gap", "total_flops"])
    cands = confirmation_candidates(df, top=2, tolerance=10.0)
    assert list(cands["number"]) == [0, 1]
    assert cheapest_feasible(df)["number"] == 0
    for number, frac, collapsed in [(0, 0.0, True), (1, 0.5, False)]:
        ledger.append("done", stage="confirm", key=f"c{number}", trial_id=f"c{number}",
                      number=-1, status="finished",
                      params={"recursion.regime": "replace", "recursion.real_fraction": frac},
                      quality_gap=0.02, quality_gap_se=0.005, quality_gap_ucb=0.027,
                      total_flops=150.0 * (number + 1), collapsed=collapsed,
                      collapse_rate=0.1 * (number + 1), n_seeds=10)
    answer = confirmed_answer(cands, confirmation_frame(run_dir))
    assert answer["number"] == 1 and answer["params"]["recursion.real_fraction"] == 0.5
    assert answer["confirmation"]["collapse_rate"] == pytest.approx(0.2)
    assert answer["search"]["quality_gap_ucb"] == 0.03
    assert confirmed_answer(cands.iloc[:1], confirmation_frame(run_dir)) is None


NO_TORCH_TRIAL = """
import sys
from pathlib import Path
from sweep.config import dump_config, load_config
from sweep.files.atomic import write_text
from sweep.search.trial import run_trial
run_dir = Path(sys.argv[1])
cfg = load_config({"name": "np", "seed": 1, "model": {"family": "gaussian"},
                   "recursion": {"generations": 3, "samples_per_generation": 50},
                   "search": {"trials": 1, "seeds": 2,
                              "space": {"recursion.regime": {"choice": ["replace"]}}}})
write_text(run_dir / "sweep.yaml", dump_config(cfg))
record = run_trial(run_dir, {"recursion.regime": "replace"}, trial_id="t", number=0,
                   node="n", report=lambda m, c: None, cpus=2)
assert record["status"] == "finished", record
"""


def test_a_numpy_family_trial_never_imports_torch(tmp_path):
    # ~2 s and ~180 MB less for each trial process; its TensorBoard run and checkpoints
    # are complete all the same
    from tensorboard.backend.event_processing.event_accumulator import (
        HISTOGRAMS,
        EventAccumulator,
    )

    from sweep.files.checkpoint import load_checkpoint
    from tests.processes import loads_torch

    assert not loads_torch(NO_TORCH_TRIAL, str(tmp_path))
    seed_dirs = sorted((tmp_path / "trials" / "t" / "tb").glob("seed_*"))
    ckpt_dirs = sorted((tmp_path / "trials" / "t" / "ckpt").iterdir())
    assert [d.name for d in seed_dirs] == [d.name for d in ckpt_dirs] and len(seed_dirs) == 2
    for seed_dir in seed_dirs:
        acc = EventAccumulator(str(seed_dir), size_guidance={HISTOGRAMS: 0})
        acc.Reload()
        assert [e.step for e in acc.Histograms("tail/test_log_likelihood")] == [0, 1, 2, 3]
        assert set(acc.PluginTagToContent("hparams")) == {
            "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    for ckpt in ckpt_dirs:
        assert load_checkpoint(ckpt)["generation"] == 4
