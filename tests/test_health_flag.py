"""A sweep's health check: run before the trials, recorded in RUN_DIR/health.json, and a
failed one flagged by `analyze` (a loud line) and the HTML report (a banner)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from test_analysis import make_run  # tests/ is on sys.path (no package)

from sweep.analysis.core import analyze
from sweep.config import load_config
from sweep.rundir.health import HEALTH_FILE, health_warning, read_health, write_health

FAILED = {"passed": False, "converged": False, "noise_ok": True,
          "reason": "model 0 is not trained to convergence: 2x the budget improves excess by "
                    "40.6% (limit 12.5% = 0.25 x tolerance); train longer (model.train.epochs)"}
PASSED = {"passed": True, "converged": True, "noise_ok": True,
          "reason": "ok: model 0 fit in closed form; no-synthetic control gap +0.001 +- 0.002 "
                    "within 0.0333"}


def _analyze_text(run) -> tuple[dict, str]:
    buf = io.StringIO()
    summary = analyze(run, console=Console(file=buf, width=300, force_terminal=False))
    return summary, buf.getvalue()


def test_read_write_and_warning_line(tmp_path):
    assert read_health(tmp_path) is None and health_warning(None) is None
    write_health(tmp_path, PASSED)
    assert read_health(tmp_path)["passed"] is True and health_warning(read_health(tmp_path)) is None
    write_health(tmp_path, FAILED)
    line = health_warning(read_health(tmp_path))
    assert line.startswith("HEALTH CHECK FAILED") and "not trained to convergence" in line
    (tmp_path / HEALTH_FILE).write_text("{not json")  # unreadable: flagged, never dropped
    assert read_health(tmp_path)["passed"] is False
    assert "unreadable" in health_warning(read_health(tmp_path))


@pytest.mark.parametrize("record", [FAILED, PASSED, None], ids=["failed", "passed", "not-run"])
def test_analyze_and_report_flag_a_failed_check_only(tmp_path, record):
    from sweep.report.build import build_report

    run = make_run(tmp_path)
    if record is not None:
        write_health(run, record)
    summary, text = _analyze_text(run)
    html = build_report(run).read_text()
    saved = json.loads((run / "analysis.json").read_text())
    if record is FAILED:
        assert saved["health_warning"].startswith("HEALTH CHECK FAILED")
        first = [line for line in text.splitlines() if line.strip()][1]
        assert first.startswith("HEALTH CHECK FAILED") and "not trained to convergence" in first
        assert "read the answer below as provisional" in text
        assert 'id="health-check-failed"' in html and "not trained to convergence" in html
    else:
        assert saved["health_warning"] is None
        assert "HEALTH CHECK FAILED" not in text and "provisional" not in text
        assert "health-check-failed" not in html and "HEALTH CHECK FAILED" not in html
        expected = "health check passed" if record is PASSED else "health check not run"
        assert expected in text and expected in html


def _sweep(tolerance: float, **search):
    return load_config({
        "name": "hc", "model": {"family": "gaussian"},
        # fresh real data: the control's gap varies by seed (a fixed D_0 refits exactly)
        "recursion": {"generations": 3, "samples_per_generation": 50, "real_source": "fresh"},
        "collapse": {"metric": "real_nll", "tolerance": tolerance},
        "search": {"sampler": "grid", "trials": 2, "seeds": 1,
                   "space": {"recursion.regime": {"choice": ["replace", "accumulate"]}}, **search},
    })


def test_sweep_health_check_records_a_real_check(tmp_path, capsys):
    """The driver's check on real (closed-form) chains: a tolerance far below the gap's
    seed-to-seed noise fails it (recorded, printed), a generous one passes."""
    from sweep.search.driver import sweep_health_check

    record = sweep_health_check(_sweep(1e-9), tmp_path / "tight", progress=False)
    assert record["passed"] is False and not record["noise_ok"]
    assert read_health(tmp_path / "tight")["reason"] == record["reason"]
    assert "HEALTH CHECK FAILED" in capsys.readouterr().err
    record = sweep_health_check(_sweep(5.0), tmp_path / "loose", progress=False)
    assert record["passed"] is True and len(record["control_gaps"]) == 3
    assert "HEALTH CHECK FAILED" not in capsys.readouterr().err


def test_run_sweep_checks_before_the_trials_once(tmp_path, monkeypatch):
    """run_sweep writes health.json before the trials start; --extend keeps the first check,
    --overwrite redoes it, search.check: false skips it."""
    import sweep.search.driver as driver

    seen = []
    monkeypatch.setattr(driver, "_fit", lambda settings, **kw: seen.append(
        read_health(settings.run_dir)) or settings.run_dir)
    run = driver.run_sweep(_sweep(1e-9), storage=str(tmp_path), progress=False)
    assert seen[-1] is not None and seen[-1]["passed"] is False
    write_health(run, PASSED)
    # (the grid's 2 points were asked for: extending searches them with another sampler)
    driver.run_sweep(_sweep(1e-9, sampler="random"), storage=str(tmp_path), progress=False,
                     extend=True)
    assert seen[-1]["passed"] is True  # not rerun
    driver.run_sweep(_sweep(1e-9), storage=str(tmp_path), progress=False, overwrite=True)
    assert seen[-1]["passed"] is False  # rerun on the emptied directory
    driver.run_sweep(_sweep(1e-9, check=False), storage=str(tmp_path), progress=False,
                     overwrite=True)
    assert seen[-1] is None


def test_cli_no_check_sets_search_check_false(tmp_path, monkeypatch):
    from sweep.cli.main import main as cli_main

    seen = {}

    def fake_run_sweep(config, **kw):
        seen["check"] = (config.search or {}).get("check", True)
        raise SystemExit(0)

    import sweep.search.driver as driver

    monkeypatch.setattr(driver, "run_sweep", fake_run_sweep)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(_sweep(0.1).model_dump(mode="json")))
    for flag, expected in ((["--no-check"], False), ([], True)):
        with pytest.raises(SystemExit):
            cli_main(["run", str(cfg), "--storage", str(tmp_path / "runs"), "--quiet", *flag])
        assert seen["check"] is expected
