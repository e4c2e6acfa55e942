"""What researchers touch first: analyze speed, help text, tables on narrow or piped output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


def test_every_subcommand_and_option_has_help():
    import argparse

    from sweep.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, p in sub.choices.items():
        assert helps.get(name), f"{name}: no one-line help in `collapse-sweep --help`"
        assert p.description and len(p.description) > 40, f"{name}: no description"
        for action in p._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.option_strings or action.dest}: no help"


def test_theory_reference_ships_with_the_package():
    import sweep.theory

    ref = Path(sweep.theory.__file__).parent / "REFERENCES.md"
    assert "Gerstgrasser" in ref.read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"theory/REFERENCES.md"' in pyproject
    out = subprocess.run([sys.executable, "-m", "sweep", "theory", "--help"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert "sweep/theory/REFERENCES.md" in " ".join(out.split())
    assert not (ROOT / "notes" / "HELPERS.md").exists()


def _wide_table():
    from rich.table import Table

    names = ["generation", "train_size", "real_nll", "tail_nll", "minority_share",
             "distinct_2", "scorer_agreement", "cumulative_flops"]
    table = Table(title="chain")
    for n in names:
        table.add_column(n, justify="right")
    for g in range(3):
        table.add_row(str(g), *[f"{1.2345678e10 * (g + 1):.4e}"] * (len(names) - 1))
    return names, table


def test_tables_never_cut_column_names_piped_or_narrow():
    import io

    from rich.console import Console

    from sweep.analysis.format import print_table

    for terminal in (False, True):
        names, table = _wide_table()
        buf = io.StringIO()
        print_table(Console(file=buf, width=60, force_terminal=terminal, color_system=None),
                    table)
        text = buf.getvalue()
        assert "…" not in text
        for n in names:
            assert n in text, (terminal, n)
        assert "2.4691e+10" in text  # cells whole too
        lines = text.splitlines()
        if terminal:  # groups that fit, each repeating the generation column
            assert max(len(line) for line in lines) <= 60
            assert sum("generation" in line for line in lines) >= 2
        else:  # one wide table: a file or a pager has no width
            assert sum("generation" in line for line in lines) == 1


def test_chain_table_piped_keeps_column_names(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sweep", "chain", "--set", "recursion.generations=3",
         "--set", "model.family=categorical", "--out", str(tmp_path / "c")],
        capture_output=True, text=True, check=True, cwd=ROOT, env={
            **__import__("os").environ, "COLUMNS": "50"}).stdout
    assert "…" not in out and "generation" in out and "cumulative_flops" in out


SLOW_RAY = """
import builtins, sys, time
t0 = time.monotonic()
real_import = builtins.__import__
def slow_ray_init(*args, **kwargs):
    sys.stderr.write(f"FAKE ray.init at {time.monotonic() - t0:.2f}\\n"); sys.stderr.flush()
    time.sleep(3.0)
    raise SystemExit(7)
def hook(name, *args, **kwargs):
    module = real_import(name, *args, **kwargs)
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "init", None) is not slow_ray_init:
        ray.init = slow_ray_init
        ray.is_initialized = lambda: False
    return module
builtins.__import__ = hook
from sweep.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_first_status_line_within_2s_with_a_slow_ray_start(tmp_path):
    """`run` says what it is doing before Ray is imported or started (a fake slow ray.init)."""
    import os
    import time

    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: s\nsearch: {trials: 4, concurrency: 2, space: "
                   "{curation.strength: {uniform: [0, 0.9]}}}\n")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RAY, "run", str(cfg), "--storage",
                             str(tmp_path / "runs")], cwd=ROOT, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    first = proc.stderr.readline()
    first_at = time.monotonic() - started
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    assert "starting Ray (local," in first and "4 trials, 2 at a time" in first, first
    assert "FAKE ray.init" in rest  # the line came before Ray started, not after
    # 2 s on an idle machine; on a shared one every process is slower by
    # about load / cores, and so is the bound
    slack = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    assert first_at < 2.0 * slack, f"first status line after {first_at:.2f} s (load x{slack:.1f})"


def test_status_counts_add_up_and_eta_comes_from_trial_durations():
    from sweep.observe.status import eta_seconds, fmt_seconds

    # 10 trials left (4 pending, 2 running), 2 slots, trials of 10 s: (4 + 1) * 10 / 2
    assert eta_seconds([8.0, 12.0], pending=4, running=2, parallel=2) == 25.0
    assert fmt_seconds(eta_seconds([], pending=4, running=2, parallel=2)) == "?"
    assert fmt_seconds(125) == "2m05s" and fmt_seconds(7.4) == "7s"


def test_live_line_counts_and_trial_label(tmp_path):
    """done + running + pending = total, a trial done in the ledger is not also running."""
    import re
    from types import SimpleNamespace

    import pandas as pd

    from sweep.config import load_config
    from sweep.search.progress import SweepProgress, SweepSettings
    from sweep.search.space import validate_search

    cfg = load_config({"name": "live", "collapse": {"tolerance": 0.1}, "search": {
        "trials": 6, "concurrency": 2, "space": {"curation.strength": {"uniform": [0, 0.9]}}}})
    settings = SweepSettings(config=cfg, spec=validate_search(cfg), run_dir=tmp_path,
                             progress=False)
    df = pd.DataFrame({"trial_id": ["a1", "b2", "c3"], "number": [0, 1, 2],
                       "status": ["finished", "failed", "running"], "quality_gap": [0.05, None, None],
                       "total_flops": [1e9, None, None], "seconds": [4.0, 1.0, 0.0],
                       "feasible": [True, False, False], "collapsed": [False, True, False],
                       "param.curation.strength": [0.3, 0.5, 0.1]})
    progress = SweepProgress(settings)
    progress._durations = [10.0]
    trials = [SimpleNamespace(trial_id=t, status="RUNNING") for t in ("a1", "c3", "d4")]
    line = progress.status_line(trials, df)
    m = re.search(r"(\d+) done \((\d+) failed\), (\d+) running, (\d+) pending of (\d+)", line)
    assert m, line
    done, failed, running, pending, total = map(int, m.groups())
    assert (done, failed, running, total) == (2, 1, 2, 6)  # a1 is done, not also running
    assert done + running + pending == total
    assert "a1 #0 gap 0.050" in line  # Tune id and Optuna number side by side
    assert "ETA 15s" in line  # (2 pending + 2 running / 2) * 10 s / 2 slots


def test_library_logs_go_to_the_run_dir_and_only_warnings_to_the_terminal(tmp_path, capsys):
    import logging

    from sweep.observe import status

    ray_logger = logging.getLogger("ray")
    before = (ray_logger.level, list(ray_logger.handlers))
    restore = status.route_logs(tmp_path)
    try:
        status._console = None  # a console on this test's captured stderr
        logging.getLogger("ray.tune").info("Started a local Ray instance.")
        logging.getLogger("optuna.storages").info("A new study created")
        logging.getLogger("ray.tune").warning("a slow callback")
    finally:
        restore()
        status._console = None
    err = capsys.readouterr().err
    assert "a slow callback" in err and "Started a local" not in err and "study created" not in err
    log = (tmp_path / status.LOG_FILE).read_text()
    assert "Started a local Ray instance." in log and "A new study created" in log
    assert (ray_logger.level, ray_logger.handlers) == before


def test_run_validates_before_loading_torch_pandas_or_ray(tmp_path):
    """What `run` does before its first status line (load, validate the search, check the
    memory and the output directory) imports none of the heavy libraries: in a fresh clone
    (no .pyc) torch alone took ~2.5 s here, and the user saw nothing meanwhile."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: s\nmodel: {family: vae}\ndata: {source: images}\nsearch: {trials: 4, "
                   "space: {curation.strength: {uniform: [0, 0.9]}}}\n")
    code = ("import sys\n"
            "from sweep.config import load_config\n"
            "from sweep.config.limits import check_memory\n"
            "from sweep.config.paths import check_output_dir\n"
            "from sweep.search.space import validate_search\n"
            "from sweep.observe.status import announce\n"
            f"config = load_config({str(cfg)!r})\n"
            "spec = validate_search(config)\n"
            f"check_output_dir({str(tmp_path / 'runs')!r}, '--storage')\n"
            "check_memory(config, chains=spec.concurrency)\n"
            "from sweep.rundir.layout import check_new_run\n"
            f"check_new_run(__import__('pathlib').Path({str(tmp_path / 'runs' / 's')!r}), "
            "extend=False, overwrite=False)\n"
            "print(sorted(m for m in ('torch', 'pandas', 'ray', 'pyarrow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


def test_run_into_an_existing_name_says_so_before_starting_ray(tmp_path):
    """`run` into a run that exists is refused in one line before "starting Ray" is printed
    (it was printed first, then Ray was imported and started, then the error came)."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: s\nmodel: {family: gaussian, dim: 1}\nsearch: {trials: 2, "
                   "space: {curation.strength: {uniform: [0, 0.9]}}}\n")
    (tmp_path / "runs" / "s").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "sweep.yaml").write_text(cfg.read_text())
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "sweep", "run", "s.yaml", "--storage", "runs"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "runs/s already exists; add trials to it with --extend" in out.stderr
    assert "starting Ray" not in out.stdout + out.stderr


def test_rays_token_auth_on_note_and_started_line_are_dropped_and_its_off_warning_kept():
    import logging

    from sweep.search.rayinit import _local_instance_started, _token_auth_on_by_default

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("ray", logging.WARNING, "f.py", 1, msg, None, None)

    assert not _token_auth_on_by_default(rec("Token authentication is enabled for this Ray "
                                             "cluster. Set RAY_AUTH_MODE=disabled to opt out."))
    assert _token_auth_on_by_default(rec("Token authentication is disabled for this Ray "
                                         "cluster. Anyone with network access ..."))
    assert not _local_instance_started(rec("Started a local Ray instance."))
    assert _local_instance_started(rec("Connecting to existing Ray cluster at address: ..."))


def test_ray_started_early_by_run_is_handed_to_the_sweep_once(monkeypatch):
    """`run` starts Ray before importing the driver (rayinit.prestart); the sweep's start_ray
    then owns it (stops it at the end, its trials watch the driver), once. A Ray running
    before either (a test session's, a notebook's) is never the sweep's to stop."""
    from types import SimpleNamespace

    from sweep.search import rayinit

    inits: list[dict] = []
    fake = SimpleNamespace(initialized=False)
    fake.is_initialized = lambda: fake.initialized

    def init(**kwargs):
        inits.append(kwargs)
        fake.initialized = True

    fake.init = init
    monkeypatch.setattr(rayinit, "ray", fake)
    imported: list[tuple[str, ...]] = []
    monkeypatch.setattr(rayinit, "import_in_background",
                        lambda names: imported.append(names) or SimpleNamespace(join=lambda: None))
    monkeypatch.setattr(rayinit, "_handed_over", False)

    monkeypatch.setattr(rayinit, "_prestart_seconds", None)

    assert rayinit.start_ray(None) is True  # a plain start: this call started it
    started = time.time() - 7.0
    assert 7.0 <= rayinit.ray_start_seconds(started) < 8.0  # the status line's own clock
    assert rayinit.start_ray(None) is False  # running already, not handed over
    fake.initialized = False
    before = time.time()
    rayinit.prestart(None)
    took = time.time() - before
    assert len(inits) == 2 and inits[1]["address"] == "local"
    assert imported == [(rayinit.DRIVER_MODULE, *rayinit.WARM_IMPORTS)]
    time.sleep(0.2)  # the sweep's health check runs here, between prestart and the take-over
    assert rayinit.start_ray(None) is True  # the sweep takes over the early start ...
    # ... and says how long prestart took, not "in 0.0 s" from the take-over, nor the time
    # since prestart began (which holds the health check)
    assert 0.0 <= rayinit.ray_start_seconds(time.time() - 60) <= took
    assert rayinit.start_ray(None) is False  # ... once
    assert 7.0 <= rayinit.ray_start_seconds(started) < 8.5  # a later sweep in this process
    assert len(inits) == 2


def test_ctrl_c_while_ray_starts_is_raised_once_the_start_is_done():
    """prestart holds SIGINT until Ray has started and the driver's imports have ended (raised
    while two threads import, it could leave a module lock held: `run` hung), then raises it."""
    import os
    import signal

    from sweep.search.rayinit import interrupt_held

    before = signal.getsignal(signal.SIGINT)  # Python's, or one a Tune run left in this process
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_held():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("after the signal")  # the block was not cut short
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is before  # restored
