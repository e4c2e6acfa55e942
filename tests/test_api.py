"""The documented Python API: `from sweep import run_sweep, resume_sweep, load_sweep`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- api-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its api-example block"
    return m.group(1)


def test_import_sweep_does_not_import_ray():
    code = "import sys, sweep; print('ray' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()
    assert out == ["False", "False"]


def test_readme_example_runs(ray_session, tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "analytic-sweep.yaml", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102
    result, again = namespace["result"], namespace["again"]
    assert len(result.results) == 6
    assert set(result.results["status"]) <= {"finished", "stopped_collapsed"}
    assert result.run_dir == Path("runs/analytic-sweep")
    assert namespace["page"].is_file()
    # the answer is the cheapest feasible trial of the table
    feasible = result.results[result.results["feasible"]]
    if feasible.empty:
        assert result.answer is None and "no configuration" in repr(result)
    else:
        assert result.answer["total_flops"] == pytest.approx(feasible["total_flops"].min())
        assert result.answer["trial_id"] in result.answer_text
        assert result.answer_text in repr(result)
    html = result._repr_html_()
    assert "SweepResult" in html and "6 trials" in html
    assert again.results["trial_id"].tolist() == result.results["trial_id"].tolist()
    assert set(namespace["result"].importance("quality_gap")) == {
        "recursion.regime", "recursion.real_fraction", "curation.strength"}


def test_run_sweep_rejects_bad_config_before_ray(monkeypatch):
    import sweep
    from sweep import ConfigError

    with pytest.raises(ConfigError, match="search.sampler"):
        sweep.run_sweep({"search": {"sampler": "nope", "space": {"curation.strength":
                                                                  {"uniform": [0, 1]}}}},
                        storage="/nonexistent/never-written")
