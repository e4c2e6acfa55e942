"""What researchers touch first: analyze speed, help text, tables on narrow or piped output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_analysis import make_run  # tests/ is on sys.path (no package)

ROOT = Path(__file__).resolve().parents[1]


def test_analyze_caches_importance_and_skips_sklearn_when_current(tmp_path):
    run = make_run(tmp_path)
    code = ("import sys; from sweep.analysis.core import analyze; analyze(sys.argv[1]); "
            "print('sklearn' in sys.modules, 'ray' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout.split()[-2:]
    cache = json.loads((run / "importance.json").read_text())
    assert set(cache["importance"]) == {"quality_gap", "total_flops"}
    second = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True,
                            text=True, check=True, cwd=ROOT).stdout.split()[-2:]
    assert first == ["True", "False"] and second == ["False", "False"]
    # the cached and the computed tables are the same numbers
    summary = json.loads((run / "analysis.json").read_text())
    assert summary["importance"] == cache["importance"]
    # a changed result invalidates the cache
    import pandas as pd

    df = pd.read_parquet(run / "results.parquet")
    df.loc[0, "quality_gap"] += 1.0
    df.to_parquet(run / "results.parquet")
    third = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout.split()[-2:]
    assert third[0] == "True"
