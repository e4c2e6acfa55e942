"""benchmarks/demo_grid: per-point means, the grid's answer, and a resume that reruns nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks import demo_grid
from sweep.config import dump_config, load_config


def _rows(points):
    return pd.DataFrame([{"regime": r, "real_fraction": f, "seed": s, "gap": g,
                          "total_flops": c, "tolerance": 0.5, "confidence": 0.9, "cpu_s": 1.0}
                         for r, f, gaps, c in points for s, g in enumerate(gaps)])


def test_summary_and_answer_use_the_mean_gap_and_mean_cost():
    rows = _rows([("replace", 0.0, [0.9, 1.1, 1.0], 10.0),          # collapses
                  ("replace", 0.5, [0.2, 0.7, 0.45], 9.0),         # mean 0.45: feasible
                  ("accumulate", 0.0, [0.0, 0.1, 0.05], 20.0)])    # feasible, dearer
    table = demo_grid.summarize(rows)
    point = table[(table.regime == "replace") & (table.real_fraction == 0.5)].iloc[0]
    assert point["gap"] == pytest.approx(0.45) and point["collapsed"] == 1 and point["n"] == 3
    assert point["feasible_mean"] and not point["feasible_ucb"]  # 0.45 + t * se > 0.5
    assert demo_grid.grid_answer(table)["real_fraction"] == 0.5
    assert demo_grid.grid_answer(table, "feasible_ucb")["regime"] == "accumulate"
    assert "| replace | 0.50 | 3 | **+0.450**" in demo_grid.markdown(table, 0.5)


def test_grid_resumes_from_its_parquet(tmp_path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text(dump_config(load_config({
        "model": {"family": "gaussian"}, "collapse": {"metric": "real_nll", "tolerance": 0.1},
        "recursion": {"generations": 3, "samples_per_generation": 50}})))
    out = tmp_path / "grid.parquet"
    first = demo_grid.run_grid(["replace", "accumulate"], [0.0], [0, 1], out, config=str(cfg),
                               workers=1, say=lambda _: None)
    assert len(first) == 4 and out.is_file()
    said = []
    again = demo_grid.run_grid(["replace", "accumulate"], [0.0], [0, 1, 2], out,
                               config=str(cfg), workers=1, say=said.append)
    assert said[0].startswith("4 chains in") and "2 to run" in said[0]
    assert len(again) == 6 and len(pd.read_parquet(out)) == 6
    kept = pd.read_parquet(out).set_index(["regime", "seed"]).loc[("replace", 0), "gap"]
    assert kept == first.set_index(["regime", "seed"]).loc[("replace", 0), "gap"]
