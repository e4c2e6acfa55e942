"""Faults and bad input (issue 14): one-line errors, one driver, nothing unpickled, self-healing.

Every bad input a user can type is one row of ``ADVERSARIAL``: exit 2, one line naming the
field and what is allowed, nothing written. The sweep tests use a 4-trial Gaussian grid.
"""

from __future__ import annotations

import io
import json
import os
import shlex
from pathlib import Path

import optuna
import pandas as pd
import pytest
from rich.console import Console

from sweep.cli import main
from sweep.config import dump_config, load_config
from sweep.files.atomic import write_text
from sweep.rundir.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny", "seed": 1, "model": {"family": "gaussian"},
    "recursion": {"generations": 3, "samples_per_generation": 20},
    "collapse": {"metric": "real_nll", "tolerance": 0.1},
    "search": {"sampler": "grid", "trials": 4, "concurrency": 2,
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


@pytest.fixture
def tiny_run(ray_session, tmp_path, monkeypatch, capsys):
    """A finished 4-trial sweep in ./runs/tiny (cwd = tmp_path, relative paths as typed)."""
    monkeypatch.chdir(tmp_path)
    _tiny_yaml(tmp_path / "tiny.yaml")
    code, out, err = _run("run tiny.yaml --storage runs --quiet", capsys)
    assert code == 0, err
    return Path("runs/tiny")


def _answer(run_dir: Path) -> dict:
    """What `analyze` answers, without trial ids (they differ between runs)."""
    from sweep.analysis.core import load_sweep, summarize

    s = summarize(load_sweep(run_dir))
    strip = lambda t: None if t is None else {k: t[k] for k in ("params", "quality_gap", "total_flops")}  # noqa: E731
    return {"counts": s["counts"], "cheapest": strip(s.get("cheapest_feasible")),
            "front": sorted(json.dumps(strip(t), sort_keys=True) for t in s["pareto_front"])}


def _study(run_dir: Path) -> optuna.Study:
    name = load_config(run_dir / "sweep.yaml").name
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'optuna.db'}")



def test_ledger_is_the_source_of_truth(tiny_run, capsys):
    """Item 5: a corrupt parquet is rebuilt from the ledger; a lost ledger is refused, never
    under-counted (`resume` rebuilds it: test_resume_rebuilds_a_lost_ledger)."""
    answer = _answer(tiny_run)
    csv_before = pd.read_csv(tiny_run / "results.csv")
    (tiny_run / "results.parquet").write_bytes(b"PAR1 not really")
    assert _answer(tiny_run) == answer
    (tiny_run / "results.csv").write_text("trial_id,status\nx,running\n")
    code, out, err = _run(f"report {tiny_run}", capsys)
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(tiny_run / "results.csv"), csv_before)
    assert len(pd.read_parquet(tiny_run / "results.parquet")) == 4

    lines = (tiny_run / "ledger.jsonl").read_text().splitlines(keepends=True)
    (tiny_run / "ledger.jsonl").write_text("".join(lines[: len(lines) // 2]))
    code, out, err = _run(f"analyze {tiny_run}", capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "ledger.jsonl" in err and f"collapse-sweep resume {tiny_run}" in err
    (tiny_run / "ledger.jsonl").unlink()
    code, out, err = _run(f"analyze {tiny_run}", capsys)
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


