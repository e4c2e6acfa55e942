"""Faults and bad input (issue 14): one-line errors, one driver, nothing unpickled, self-healing.

Every bad input a user can type is one row of ``ADVERSARIAL``: exit 2, one line naming the
field and what is allowed, nothing written. The sweep tests use a 4-trial Gaussian grid.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from rich.console import Console

from sweep.cli import main
from sweep.config import dump_config, load_config
from sweep.files.atomic import write_text
from sweep.rundir.ledger import Ledger
from tests.processes import kill_session, running, session_pids

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny", "seed": 1, "model": {"family": "gaussian"},
    "recursion": {"generations": 3, "samples_per_generation": 20},
    "collapse": {"metric": "real_nll", "tolerance": 0.1},
    "search": {"sampler": "grid", "trials": 4, "concurrency": 2, "seeds": 1, "confirm": {"top": 0},
               "space": {"recursion.regime": {"choice": ["replace", "accumulate"]},
                         "recursion.real_fraction": {"grid": [0.0, 0.5]}}},
    "resources": {"cpu": 1, "gpu": 0},
}


def _tiny_yaml(path: Path, **changes) -> Path:
    return write_text(path, dump_config(load_config(TINY, changes)))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --------------------------------------------------------------------------- items 10-13
LONG = "a" * 300
#: (command line as typed, expected text of the one error line). {ro}: a directory this user
#: cannot write (root can write any chmod-ed directory, so root gets /sys).
ADVERSARIAL = [
    ("chain bin.yaml", "config: bin.yaml is not a YAML text file"),
    ("chain dir.yaml", "config: dir.yaml is a directory, not a YAML file"),
    ("chain --out afile", "--out: afile is a file, not a directory"),
    ("run tiny.yaml --storage afile", "--storage: afile is a file, not a directory"),
    ("run tiny.yaml --storage {ro}", "is not writable"),
    (f"chain --set name={LONG}", "name: at most 100 characters"),
    (f"run tiny.yaml --name {LONG}", "--name: at most 100 characters"),
    ("chain --set recursion.samples_per_generation=1000000000000",
     "recursion.samples_per_generation: input should be less than or equal to 100000000"),
    ("chain --set model.dim=512 --set recursion.samples_per_generation=50000000",
     "recursion.samples_per_generation: needs about"),
    ("chain --set model.family=gmm --set model.separation=.inf",
     "model.separation: must be a finite number, got inf"),
    ("chain --set collapse.tolerance=.inf", "collapse.tolerance: must be a finite number, got inf"),
    ("chain --set model.family=linreg --set model.noise_var=.inf",
     "model.noise_var: must be a finite number, got inf"),
    ("chain --set collapse.tolerance=.nan", "collapse.tolerance: must be a finite number, got nan"),
    ("chain --set recursion.real_fraction=.nan",
     "recursion.real_fraction: must be a finite number, got nan"),
    ("run tiny.yaml --name ..", "--name: '..' is not a run name"),
    ("run tiny.yaml --set name=..", "name: '..' is not a run name"),
    ("chain --set name=.", "name: '.' is not a run name"),
    ("chain --set name=a/b", "name: 'a/b' is not a run name (allowed: letters, digits, _ . -"),
    ("chain --seed -5", "--seed: must be >= 0, got -5"),
    ("chain --set model.family=gpt --set model.sise=s",
     "model.sise: unknown field (allowed: family, size, n_layer"),
    ("analyze v[red]/base", "RUN_DIR: v[red]/base is not a sweep directory"),
    ("resume st[/]x/base", "RUN_DIR: st[/]x/base is not a sweep directory"),
]


@pytest.mark.parametrize("line,message", ADVERSARIAL, ids=[r[0][:60] for r in ADVERSARIAL])
def test_adversarial_input_exits_2_with_one_line_and_writes_nothing(
        tmp_path, monkeypatch, capsys, line, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "afile").write_text("x")
    _tiny_yaml(tmp_path / "tiny.yaml")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    (tmp_path / "v[red]").mkdir()
    (tmp_path / "st[").mkdir()
    readonly = "/sys" if os.geteuid() == 0 else "ro"
    before = _files(tmp_path)
    code = main(shlex.split(line.format(ro=readonly)))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message.format(ro=readonly) in err, err
    assert _files(tmp_path) == before  # nothing written, not even an empty ./runs
    ro.chmod(0o755)


# --------------------------------------------------------------------------- item 12
def test_user_text_is_printed_literally(tmp_path, monkeypatch):
    """Paths and table cells with [brackets] are printed as typed, never read as rich markup."""
    from sweep.analysis.core import analyze

    for name in ("st[/]x", "v[red]"):
        run_dir = tmp_path / name / "base"
        _tiny_yaml(run_dir / "sweep.yaml")
        out = io.StringIO()
        analyze(run_dir, console=Console(file=out, width=300))
        assert f"{name}/base" in out.getvalue()

    import sweep.cli.theory as theory_cli
    from sweep.theory.checks import TheoryRow

    row = TheoryRow("gaussian [red]replace", "E[var_g]", 3, 0.9, 0.9, 0.05, kind="relative", seeds=10)
    monkeypatch.setattr(theory_cli, "run_theory", lambda **kw: ([row], {}, 0.1))
    monkeypatch.setattr(theory_cli, "plot_theory", lambda frames, path, scale: Path(path).write_bytes(b""))
    out = io.StringIO()
    theory_cli.run_theory_command(out=tmp_path / "th", console=Console(file=out, width=300))
    assert "E[var_g]" in out.getvalue() and "gaussian [red]replace" in out.getvalue()


def test_torn_ledger_line_does_not_swallow_the_next_record(tmp_path):
    """Item 15: a crash mid-append leaves a torn line; the next append starts a new line."""
    ledger = Ledger(tmp_path)
    ledger.append("start", key="a", trial_id="t0", number=0)
    with open(ledger.path, "a") as f:
        f.write('{"event": "done", "key": "a", "trial_')
    ledger.append("done", key="b", trial_id="t1", number=1)
    assert [(r["event"], r["key"]) for r in ledger.records()] == [("start", "a"), ("done", "b")]


# --------------------------------------------------------------------------- sweeps
def _run(args: str, capsys) -> tuple[int, str, str]:
    code = main(shlex.split(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def _tiny_sweep(ray_session, tmp_path_factory) -> Path:
    """One finished 4-trial sweep, run once per module by the command a user types."""
    root = tmp_path_factory.mktemp("tiny")
    _tiny_yaml(root / "tiny.yaml")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(shlex.split("run tiny.yaml --storage runs --quiet")) == 0
    finally:
        os.chdir(cwd)
    return root / "runs" / "tiny"


@pytest.fixture
def tiny_run(_tiny_sweep, tmp_path, monkeypatch) -> Path:
    """A copy of that sweep in ./runs/tiny (cwd = tmp_path): run directories are relocatable."""
    monkeypatch.chdir(tmp_path)
    _tiny_yaml(tmp_path / "tiny.yaml")
    shutil.copytree(_tiny_sweep, tmp_path / "runs" / "tiny")
    return Path("runs/tiny")


def _answer(run_dir: Path) -> dict:
    """What `analyze` answers, without trial ids (they differ between runs)."""
    from sweep.analysis.core import load_sweep, summarize

    s = summarize(load_sweep(run_dir))
    def strip(t):
        return None if t is None else {k: t[k] for k in ("params", "quality_gap", "total_flops")}
    return {"counts": s["counts"], "cheapest": strip(s.get("cheapest_feasible")),
            "front": sorted(json.dumps(strip(t), sort_keys=True) for t in s["pareto_front"])}


def _study(run_dir: Path) -> optuna.Study:
    name = load_config(run_dir / "sweep.yaml").name
    from sweep.files.study import load_study

    return load_study(run_dir, name)



def test_ledger_is_the_source_of_truth(tiny_run, capsys):
    """Item 5: a corrupt parquet is rebuilt from the ledger; a lost ledger is refused, never
    under-counted (`resume` rebuilds it: test_resume_rebuilds_a_lost_ledger)."""
    answer = _answer(tiny_run)
    csv_before = pd.read_csv(tiny_run / "results.csv")
    (tiny_run / "results.parquet").write_bytes(b"PAR1 not really")
    assert _answer(tiny_run) == answer
    (tiny_run / "results.csv").write_text("trial_id,status\nx,running\n")
    code, _, err = _run(f"report {tiny_run}", capsys)
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(tiny_run / "results.csv"), csv_before)
    assert len(pd.read_parquet(tiny_run / "results.parquet")) == 4

    lines = (tiny_run / "ledger.jsonl").read_text().splitlines(keepends=True)
    (tiny_run / "ledger.jsonl").write_text("".join(lines[: len(lines) // 2]))
    code, _, err = _run(f"analyze {tiny_run}", capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "ledger.jsonl" in err and f"collapse-sweep resume {tiny_run}" in err
    (tiny_run / "ledger.jsonl").unlink()
    code, _out, err = _run(f"analyze {tiny_run}", capsys)
    assert code == 2 and "ledger.jsonl" in err, err


# --------------------------------------------------------------------------- item 9
def _trial_dir(tmp_path: Path, generations: int = 6) -> Path:
    run_dir = tmp_path / "ck"
    cfg = load_config(TINY, {"recursion.generations": generations})
    write_text(run_dir / "sweep.yaml", dump_config(cfg))
    return run_dir


PARAMS = {"recursion.regime": "accumulate", "recursion.real_fraction": 0.5}


class _Killed(Exception):
    pass


def test_corrupt_checkpoint_restarts_with_one_warning(tmp_path, capsys):
    """Item 9: a truncated trial checkpoint: one warning, the chain restarts, same result."""
    from sweep.search.trial import run_trial

    ref = run_trial(_trial_dir(tmp_path / "ref"), PARAMS, trial_id="r", number=0, node="n",
                    report=lambda m, c: None)
    run_dir = _trial_dir(tmp_path)
    generations = []

    def die_at_3(metrics, ckpt):
        generations.append(metrics["generation"])

    import sweep.search.trial as trial_mod

    real_save = trial_mod.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        if Path(path).name == "ckpt" and payload["generation"] == 4:
            raise _Killed  # the worker dies after generation 3's checkpoint

    trial_mod.save_checkpoint = save_then_die
    try:
        with pytest.raises(_Killed):
            run_trial(run_dir, PARAMS, trial_id="t", number=0, node="n", report=die_at_3)
    finally:
        trial_mod.save_checkpoint = real_save
    ckpt = run_dir / "trials" / "t" / "ckpt" / "chain.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    capsys.readouterr()
    record = run_trial(run_dir, PARAMS, trial_id="t", number=0, node="n", report=lambda m, c: None)
    err = capsys.readouterr().err
    assert record["status"] == "finished" and record["quality_gap"] == ref["quality_gap"]
    assert err.count("warning:") == 1 and "checkpoint" in err and "OSError" not in err, err


def test_corrupt_model0_cache_is_rebuilt(tmp_path, capsys):
    """Item 9: random bytes in the shared generation-0 cache: one warning, entry rebuilt."""
    from sweep.config import trial_config
    from sweep.files.checkpoint import load_checkpoint
    from sweep.search.trial import model0_key, run_trial

    ref = run_trial(_trial_dir(tmp_path / "ref"), PARAMS, trial_id="r", number=0, node="n",
                    report=lambda m, c: None)
    run_dir = _trial_dir(tmp_path)
    key = model0_key(trial_config(load_config(run_dir / "sweep.yaml"), PARAMS))
    (run_dir / "cache" / key).mkdir(parents=True)
    (run_dir / "cache" / key / "chain.pt").write_bytes(os.urandom(4096))
    record = run_trial(run_dir, PARAMS, trial_id="t", number=0, node="n", report=lambda m, c: None)
    err = capsys.readouterr().err
    assert record["status"] == "finished" and record["quality_gap"] == ref["quality_gap"]
    assert err.count("warning:") == 1 and "cache" in err and "weights_only" not in err, err
    assert load_checkpoint(run_dir / "cache" / key) is not None  # rebuilt, readable


# --------------------------------------------------------------------------- item 15
def test_chain_command_does_not_rewrite_everything_every_generation(tmp_path, monkeypatch):
    """Item 15: a 300-generation chain writes its parquet and checkpoint a few times, not 301."""
    import sweep.cli.chain as chain_cli
    from sweep.files.checkpoint import load_checkpoint

    writes = {"parquet": 0, "ckpt": 0}
    real_parquet, real_ckpt = chain_cli.write_parquet, chain_cli.save_checkpoint

    def parquet(df, path):
        writes["parquet"] += 1
        return real_parquet(df, path)

    def ckpt(path, state):
        writes["ckpt"] += 1
        return real_ckpt(path, state)

    monkeypatch.setattr(chain_cli, "write_parquet", parquet)
    monkeypatch.setattr(chain_cli, "save_checkpoint", ckpt)
    out = tmp_path / "long"
    assert main(["chain", "--set", "recursion.generations=300", "--out", str(out)]) == 0
    assert writes["parquet"] <= 5 and writes["ckpt"] <= 5, writes
    assert len(pd.read_parquet(out / "generations.parquet")) == 301
    assert load_checkpoint(out / "checkpoint")["generation"] == 301


# --------------------------------------------------------------------------- the driver
def test_resume_does_not_unpickle_the_run_directory(tiny_run, tmp_path, capsys):
    """Item 1: a crafted tune/*.pkl is never loaded; resume rebuilds from ledger + study."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    blob = pickle.dumps(Payload())
    for name in ("tuner.pkl", "trainable.pkl", "search_gen_state-0.pkl"):
        (tiny_run / "tune" / name).write_bytes(blob)
    answer = _answer(tiny_run)
    code, _out, err = _run(f"resume {tiny_run} --quiet", capsys)
    assert code == 0, err
    assert not marker.exists()
    assert _answer(tiny_run) == answer


def test_resume_with_a_relative_run_dir(tiny_run, capsys):
    """Item 2: the README's `collapse-sweep resume runs/quick` works with a relative path."""
    assert not tiny_run.is_absolute()
    code, out, err = _run(f"resume {tiny_run} --quiet", capsys)
    assert code == 0, err
    assert "cheapest non-collapsing configuration" in out


def test_run_into_an_existing_name_refuses_unless_extend_or_overwrite(tiny_run, tmp_path, capsys):
    """Item 3: no silent merge; --extend needs the same space; --overwrite starts over."""
    yaml_before = (tiny_run / "sweep.yaml").read_text()
    narrowed = dict(TINY["search"]["space"], **{"recursion.regime": {"choice": ["replace"]}})
    _tiny_yaml(tmp_path / "narrow.yaml", **{"search.space": narrowed, "search.trials": 2})
    code, _, err = _run("run narrow.yaml --storage runs --quiet", capsys)
    assert code == 2 and err.count("\n") == 1
    assert "runs/tiny already exists" in err and "--extend" in err and "--overwrite" in err
    code, _, err = _run("run narrow.yaml --storage runs --quiet --extend", capsys)
    assert code == 2 and "--extend: the search space differs" in err, err
    assert (tiny_run / "sweep.yaml").read_text() == yaml_before
    assert len(_study(tiny_run).trials) == 4

    _tiny_yaml(tmp_path / "more.yaml", **{"search.trials": 2,
                                          "search.space.recursion.real_fraction": {"grid": [0.0, 0.5, 1.0]}})
    code, _, err = _run("run more.yaml --storage runs --quiet --extend", capsys)
    assert code == 2 and "--extend: the search space differs" in err, err

    code, _, err = _run("run tiny.yaml --storage runs --quiet --extend", capsys)  # the same grid
    assert code == 2 and "has run all 4 points of its grid already" in err, err
    assert load_config(tiny_run / "sweep.yaml").search["trials"] == 4

    _tiny_yaml(tmp_path / "same.yaml", **{"search.trials": 2, "search.sampler": "random"})
    code, _, err = _run("run same.yaml --storage runs --quiet --extend", capsys)
    assert code == 0, err
    assert len(_study(tiny_run).trials) == 6
    assert load_config(tiny_run / "sweep.yaml").search["trials"] == 6  # the whole study
    assert len(pd.read_parquet(tiny_run / "results.parquet")) == 6

    code, _out, err = _run("run narrow.yaml --storage runs --quiet --overwrite", capsys)
    assert code == 0, err
    assert load_config(tiny_run / "sweep.yaml").search["space"] == narrowed
    assert len(_study(tiny_run).trials) == 2
    df = pd.read_parquet(tiny_run / "results.parquet")
    assert len(df) == 2 and set(df["param.recursion.regime"]) == {"replace"}


HOLD_LOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""


def test_one_driver_per_run_directory(tiny_run, capsys):
    """Item 4: a second driver is refused; a dead driver's lock does not stay held."""
    from sweep.rundir.lock import LOCK_FILE

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tiny_run / LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for line in (f"resume {tiny_run} --quiet", "run tiny.yaml --storage runs --quiet --extend"):
            code, _, err = _run(line, capsys)
            assert code == 2 and err.count("\n") == 1, err
            assert f"{tiny_run} is in use by another driver" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, _out, err = _run(f"resume {tiny_run} --quiet", capsys)  # the killed holder let go
    assert code == 0, err
    assert len(_study(tiny_run).trials) == 4


def test_grid_search_survives_a_late_failure_and_all_failures(tmp_path, caplog):
    """Item 6: telling FAIL for the last grid point neither raises nor logs a traceback."""
    import logging

    from sweep.search.searcher import build_searcher
    from sweep.search.space import validate_search

    for failing in ({3}, {0, 1, 2, 3}):
        cfg = load_config(TINY, {"name": f"grid{len(failing)}"})
        spec = validate_search(cfg)
        run_dir = tmp_path / cfg.name
        write_text(run_dir / "sweep.yaml", dump_config(cfg))
        searcher = build_searcher(cfg, spec, run_dir)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            for i in range(4):
                assert searcher.suggest(f"t{i}") is not None
            for i in range(4):
                result = {"quality_gap": 0.01, "total_flops": 1.0 + i, "failed": i in failing}
                searcher.on_trial_complete(f"t{i}", result, error=i in failing)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        states = [t.state.name for t in _study(run_dir).trials]
        assert states == ["FAIL" if i in failing else "COMPLETE" for i in range(4)]


def test_run_exits_1_when_no_trial_finished(faults, tmp_path, monkeypatch, capsys):
    """Every trial failed: the sweep has no answer, so `run` says so in one line and exits 1
    (a script or a job scheduler must not read success); the rows are still recorded."""
    monkeypatch.chdir(tmp_path)
    _tiny_yaml(tmp_path / "bad.yaml", name="bad", **{"search.check": False})
    faults.fail("bad", when={}, at_generation=1)  # every chain raises at generation 1
    code, out, err = _run("run bad.yaml --storage runs --quiet", capsys)
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("collapse-sweep: no trial finished (4 failed); first error: trial ")
    assert "test failure" in line
    df = pd.read_parquet(tmp_path / "runs" / "bad" / "results.parquet")
    assert len(df) == 4 and (df["status"] == "failed").all()
    assert "results:" in out  # where the records are, as after any run


def test_trials_close_tensorboard_with_final_metrics(tiny_run):
    """Item 14: every trial's events hold final/* and the HParams session end."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dirs = sorted((tiny_run / "trials").glob("*/tb"))
    assert len(dirs) == 4
    for tb in dirs:
        acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        finals = [t for t in tags["scalars"] + tags["tensors"] if t.startswith("final/")]
        assert "final/quality_gap" in finals, tags
        ends = [e for e in acc.PluginTagToContent("hparams")]
        assert "_hparams_/session_end_info" in ends, ends


def test_trial_error_column_holds_the_message(tmp_path):
    """Item 9: the error column is the exception, not a path into Ray's session directory."""
    from sweep.search.progress import error_text

    f = tmp_path / "error.txt"
    f.write_text("Traceback (most recent call last):\n  File x\nRuntimeError: boom at generation 2\n")
    assert error_text(str(f)) == "RuntimeError: boom at generation 2"
    assert error_text("") == ""


# --------------------------------------------------------------------------- item 8 (a real driver)
def _driver(args: list[str], cwd: Path, *, drop: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=cwd, env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(run_dir: Path, event: str, count: int, proc: subprocess.Popen, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len([r for r in Ledger(run_dir).records() if r["event"] == event]) >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    pytest.fail(f"no {count} {event} records within {timeout} s")


def _trial_workers_exit(sid: int, timeout: float = 20.0) -> None:
    """Item 15: a killed local driver's trial processes (ray::ImplicitFunc) end on their own."""
    deadline = time.time() + timeout
    while True:
        left = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.getsid(int(entry)) == sid:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if b"ImplicitFunc" in cmd:
                        left.append(int(entry))
            except (OSError, ProcessLookupError):
                continue
        if not left:
            return
        assert time.time() < deadline, f"trial workers outlived their driver: {left}"
        time.sleep(0.25)


@pytest.mark.slow
def test_ctrl_c_exits_130_with_a_resume_hint(ray_session, tmp_path):
    """Item 8: Ctrl-C: exit 130, "interrupted: N of M trials done; resume with: ...", no answer."""
    _tiny_yaml(tmp_path / "slow.yaml", **{"search.trials": 12, "search.sampler": "random",
                                          "recursion.generations": 400,
                                          "search.space.recursion.real_fraction": {"uniform": [0, 1]}})
    # RAY_AUTH_MODE unset, as in a user's shell (this process's Ray set it): a new local Ray
    # then has token auth on by default, and Ray says so in a WARNING
    proc = _driver(["run", "slow.yaml", "--storage", "runs", "--quiet"], tmp_path,
                   drop=("RAY_AUTH_MODE",))
    try:
        _wait_for(tmp_path / "runs" / "tiny", "done", 1, proc)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and " of 12 trials done; resume with: " in last, err
    assert last.endswith("collapse-sweep resume runs/tiny")
    assert "cheapest non-collapsing" not in out and "Tuner.restore" not in err
    # Ray's note that a local Ray has token auth on by default is not repeated by `run`, nor
    # its INFO line that it started (the status line says so)
    assert "Token authentication is enabled" not in err, err
    assert "Started a local Ray instance" not in err, err


@pytest.mark.slow
def test_ctrl_c_while_ray_starts_exits_130_and_takes_ray_with_it(tmp_path):
    """`run` starts Ray as soon as the config passed its checks, the driver's imports beside
    it (sweep.search.rayinit.prestart): Ctrl-C in that window is one line and exit 130, the
    run directory is not begun, and no Ray process outlives the command."""
    _tiny_yaml(tmp_path / "t.yaml")
    proc = _driver(["run", "t.yaml", "--storage", "runs"], tmp_path)
    try:
        first = proc.stderr.readline()  # said before Ray starts (test_ux checks how soon)
        assert "starting Ray (local," in first, first
        time.sleep(1.0)  # ray.init takes seconds more
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
        deadline, left = time.time() + 20, ["?"]
        while left and time.time() < deadline:
            left = running(session_pids(proc.pid))
            time.sleep(0.25)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted before any trial ran", err
    assert not (tmp_path / "runs" / "tiny").exists()
    assert not left, f"left running after Ctrl-C: {left}"


def test_resume_rebuilds_a_lost_ledger(tiny_run, capsys):
    """Item 5: resume rebuilds a deleted ledger from the trials' records; same answer after."""
    answer = _answer(tiny_run)
    (tiny_run / "ledger.jsonl").unlink()
    code, _out, err = _run(f"resume {tiny_run} --quiet", capsys)
    assert code == 0, err
    assert _answer(tiny_run) == answer
    assert len(_study(tiny_run).trials) == 4
    assert all(n == 1 for n in Ledger(tiny_run).chains_started().values())


# --------------------------------------------------------------------------- the fault drill
def _fault_config(path: Path, **changes) -> Path:
    return _tiny_yaml(path, **{
        "name": "drill", "recursion.generations": 60, "recursion.samples_per_generation": 50,
        "search.trials": 6, "search.space.recursion.regime":
            {"choice": ["replace", "accumulate", "accumulate-subsample"]}, **changes})


def _check_drill(run_dir: Path, reference: dict) -> None:
    """Every trial exactly once, every study trial COMPLETE, and the reference's answer."""
    study = _study(run_dir)
    assert len(study.trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    starts = Ledger(run_dir).chains_started()
    assert len(starts) == 6 and all(n == 1 for n in starts.values()), (
        starts, [r for r in Ledger(run_dir).records() if r["event"] in ("start", "resume")])
    df = pd.read_parquet(run_dir / "results.parquet")
    assert sorted(df["number"]) == list(range(6)) and (df["status"] == "finished").all()
    assert _answer(run_dir) == reference


@pytest.mark.slow
def test_fault_drill_every_trial_once_and_the_same_answer(ray_session, tmp_path, monkeypatch, capsys):
    """Driver SIGKILL at three moments, a worker SIGKILL, a deleted ledger, a corrupt parquet,
    a corrupt generation-0 cache, a moved run directory: each ends like an undisturbed run."""
    from sweep.config import trial_config
    from sweep.search.trial import model0_key

    monkeypatch.chdir(tmp_path)
    _fault_config(tmp_path / "drill.yaml")
    code, _, err = _run("run drill.yaml --storage ref --quiet", capsys)
    assert code == 0, err
    reference = _answer(Path("ref/drill"))

    def driver_killed(storage: str, event: str, count: int, *, kill_worker: bool = False) -> Path:
        run_dir = tmp_path / storage / "drill"
        proc = _driver(["run", "drill.yaml", "--storage", storage, "--quiet"], tmp_path)
        try:
            _wait_for(run_dir, event, count, proc)
            if kill_worker:  # the trial's own process (its pid is in its ledger record)
                pid = next(r["pid"] for r in Ledger(run_dir).records() if r["event"] == "start")
                os.kill(pid, signal.SIGKILL)
                _out, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, err
            else:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                _trial_workers_exit(proc.pid)
        finally:
            kill_session(proc.pid)
        return run_dir

    def resume(run_dir: Path) -> None:
        code, _out, err = _run(f"resume {run_dir.relative_to(tmp_path)} --quiet", capsys)
        assert code == 0, err

    # 1. driver SIGKILL as the first chain starts
    run_dir = driver_killed("k1", "start", 1)
    resume(run_dir)
    _check_drill(run_dir, reference)

    # 2. driver SIGKILL mid-sweep; the directory is moved and its generation-0 cache damaged
    run_dir = driver_killed("k2", "done", 3)
    moved = tmp_path / "elsewhere" / "drill"
    moved.parent.mkdir()
    run_dir.rename(moved)
    for entry in (moved / "cache").glob("*/chain.pt"):
        entry.write_bytes(os.urandom(2048))
    resume(moved)
    assert not run_dir.exists()  # nothing written to the old place
    _check_drill(moved, reference)

    # 3. driver SIGKILL once every chain is done (before its last writes)
    run_dir = driver_killed("k3", "done", 6)
    resume(run_dir)
    _check_drill(run_dir, reference)

    # 4. a worker SIGKILL mid-trial, with a damaged generation-0 cache from the start
    cfg = load_config(tmp_path / "drill.yaml")
    key = model0_key(trial_config(cfg, {"recursion.regime": "replace", "recursion.real_fraction": 0.0}))
    (tmp_path / "w" / "drill" / "cache" / key).mkdir(parents=True)
    (tmp_path / "w" / "drill" / "cache" / key / "chain.pt").write_bytes(os.urandom(2048))
    run_dir = driver_killed("w", "start", 1, kill_worker=True)
    _check_drill(run_dir, reference)

    # 5. a deleted ledger: refused by analyze, rebuilt by resume
    (run_dir / "ledger.jsonl").unlink()
    code, _out, err = _run(f"analyze {run_dir}", capsys)
    assert code == 2 and "ledger.jsonl: missing" in err
    resume(run_dir)
    _check_drill(run_dir, reference)

    # 6. a corrupt results.parquet: rebuilt from the ledger
    (run_dir / "results.parquet").write_bytes(os.urandom(512))
    assert _answer(run_dir) == reference
    _check_drill(run_dir, reference)


def test_extend_adds_the_trials_asked_for_up_to_the_grid():
    """--extend adds search.trials more; on a grid, no more than its unasked points, and a
    grid whose points were all asked for is refused (no Ray: the config arithmetic only)."""
    from sweep.config import ConfigError
    from sweep.search.driver import extended_config

    def grid(trials: int, **search) -> object:
        return load_config(TINY, {"search.trials": trials, **{f"search.{k}": v for k, v in search.items()}})

    assert extended_config(grid(2), grid(1), "runs/tiny").search["trials"] == 3
    assert extended_config(grid(2), grid(4), "runs/tiny").search["trials"] == 4  # the grid's 4
    with pytest.raises(ConfigError, match="has run all 4 points of its grid already"):
        extended_config(grid(4), grid(2), "runs/tiny")
    assert extended_config(grid(4), grid(3, sampler="random"), "runs/tiny").search["trials"] == 7
