"""The tools researchers already use: the Optuna study as optuna-dashboard reads it, W&B
(offline) and MLflow (local store) fed with the same metrics as TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from test_tune import REGIMES, analytic  # tests/ is on sys.path (no package)

from sweep.config import ConfigError, load_config


def _study(run_dir: Path, name: str) -> optuna.Study:
    from sweep.files.study import load_study

    return load_study(run_dir, name)


def test_study_has_metric_names_user_attrs_and_a_constraint_best_trials_respects(tmp_path):
    from sweep.search.searcher import build_searcher
    from sweep.search.space import validate_search

    space = {"recursion.regime": {"choice": REGIMES},
             "recursion.real_fraction": {"uniform": [0.0, 1.0]}}
    cfg = analytic("study", sampler="random", trials=8, space=space)
    spec = validate_search(cfg)
    searcher = build_searcher(cfg, spec, tmp_path)
    gaps = [0.01, 0.2, 0.03, 0.5, 0.0, 0.04, 0.3, 0.02]  # tolerance 0.05
    flops = [50.0, 1.0, 40.0, 2.0, 90.0, 30.0, 3.0, 60.0]
    for i, (gap, cost) in enumerate(zip(gaps, flops, strict=True)):
        searcher.suggest(f"tune{i}")
        searcher.on_trial_complete(f"tune{i}", {"quality_gap": gap, "total_flops": cost,
                                                 "failed": False, "status": "finished",
                                                 "seed": 3})
    study = _study(tmp_path, "study")
    assert study.metric_names == ["quality_gap", "total_flops"]
    assert "quality_gap - 0.05 <= 0" in study.user_attrs["constraint"]
    for t in study.trials:
        assert t.user_attrs["tune_trial_id"] == f"tune{t.number}"
        assert t.user_attrs["trial_dir"] == f"trials/tune{t.number}"
        assert t.user_attrs["status"] == "finished" and t.user_attrs["seed"] == 3
        assert t.system_attrs["constraints"] == [pytest.approx(gaps[t.number] - 0.05)]
    # best_trials: the Pareto front of the feasible trials only (the collapsed cheap ones out)
    best = {t.number for t in study.best_trials}
    assert best == {5, 2, 0, 4}  # feasible gaps .04/30, .03/40, .01/50, .00/90
    assert all(gaps[n] <= 0.05 for n in best)


def test_a_missing_tracker_is_one_line_naming_the_install(monkeypatch):
    import importlib.util

    from sweep.search.loggers import check_loggers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"loggers: wandb is not installed \(pip install "
                                          r"'collapse-sweep\[wandb\]'\)"):
        check_loggers(load_config({"loggers": ["tensorboard", "wandb"]}))
    with pytest.raises(ConfigError, match="loggers.0"):
        load_config({"loggers": ["neptune"]})
    assert load_config({}).loggers == ["tensorboard"]


def test_sweep_with_wandb_and_mlflow_loggers(ray_session, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from sweep.search.driver import run_sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = {"recursion.regime": {"choice": ["replace", "accumulate"]},
             "curation.strength": {"grid": [0.0, 0.5]}}
    cfg = load_config(analytic("trk", trials=4, generations=5, space=space).model_dump(mode="json")
                      | {"loggers": ["tensorboard", "wandb", "mlflow"]})
    run_dir = run_sweep(cfg, storage=str(tmp_path), progress=False)
    results = pd.read_parquet(run_dir / "results.parquet")
    assert len(results) == 4

    # TensorBoard: the HParams metrics of every trial (written before Tune ends the trial)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for _, row in results.iterrows():
        events = EventAccumulator(str(run_dir / "trials" / row["trial_id"] / "tb"))
        events.Reload()
        final = events.Scalars("final/quality_gap")
        assert final and final[-1].value == pytest.approx(row["quality_gap"], rel=1e-5)

    # MLflow: one run per trial, per-generation metrics (step = generation), final metrics, params
    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name("trk")
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.run_name for r in runs} == set(results["trial_id"])
    for r in runs:
        row = results[results["trial_id"] == r.info.run_name].iloc[0]
        history = client.get_metric_history(r.info.run_id, "quality/real_nll")
        gens = pd.read_parquet(run_dir / "trials" / r.info.run_name / "generations.parquet")
        assert sorted(m.step for m in history) == sorted(gens["generation"])
        assert {m.step: m.value for m in history}[0] == pytest.approx(gens["real_nll"].iloc[0])
        assert r.data.metrics["final/quality_gap"] == pytest.approx(row["quality_gap"])
        assert r.data.metrics["final/total_flops"] == pytest.approx(row["total_flops"])
        assert r.data.params["recursion.regime"] == row["param.recursion.regime"]
        assert float(r.data.params["curation.strength"]) == row["param.curation.strength"]
        assert r.data.tags["trial.trial_dir"] == f"trials/{r.info.run_name}"

    # W&B offline: one run per trial with its config, per-generation history and summary
    offline = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 4
    seen = set()
    for path in offline:
        run, history, summary = wandb_offline_run(path)
        tid = run.display_name
        seen.add(tid)
        assert run.project == "trk" and run.run_group == "trk"
        config = {i.key: json.loads(i.value_json) for i in run.config.update}
        row = results[results["trial_id"] == tid].iloc[0]
        config = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in config.items()}
        assert config["recursion.regime"] == row["param.recursion.regime"]
        assert config["curation.strength"] == row["param.curation.strength"]
        assert config["trial/trial_dir"] == f"trials/{tid}"
        gens = pd.read_parquet(run_dir / "trials" / tid / "generations.parquet")
        assert [h["_step"] for h in history] == list(gens["generation"])
        assert [h["quality/real_nll"] for h in history] == pytest.approx(list(gens["real_nll"]))
        assert summary["final/quality_gap"] == pytest.approx(row["quality_gap"])
        assert summary["final/total_flops"] == pytest.approx(row["total_flops"])
    assert seen == set(results["trial_id"])


def wandb_offline_run(path: Path) -> tuple[object, list[dict], dict]:
    """The run record, history rows and final summary of an offline ``run-*.wandb`` file
    (a LevelDB-style log of protobuf records: 7-byte header, 32 KiB blocks, each record
    with a 7-byte header: checksum, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    run, history, summary = None, [], {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):  # FIRST / MIDDLE (or zero padding): wait for the rest
            continue
        rec = pb.Record()
        rec.ParseFromString(buf)
        buf = b""
        which = rec.WhichOneof("record_type")
        if which == "run":
            run = rec.run
        elif which == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in rec.history.item})
        elif which == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in rec.summary.update})
    return run, history, summary


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_command_serves_names_feasibility_and_trial_ids(tmp_path):
    pytest.importorskip("optuna_dashboard")
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from sweep.config import dump_config
    from sweep.files.atomic import write_text
    from sweep.search.searcher import build_searcher
    from sweep.search.space import validate_search

    cfg = analytic("dash", sampler="random", trials=3,
                   space={"recursion.real_fraction": {"uniform": [0.0, 1.0]}})
    run = tmp_path / "dash"
    write_text(run / "sweep.yaml", dump_config(cfg))
    searcher = build_searcher(cfg, validate_search(cfg), run)
    for i, gap in enumerate([0.01, 0.5, 0.02]):
        searcher.suggest(f"tid{i}")
        searcher.on_trial_complete(f"tid{i}", {"quality_gap": gap, "total_flops": 10.0 - i,
                                               "failed": False, "status": "finished"})
    port = _free_port()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "sweep", "dashboard", str(run), "--port",
                             str(port)], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        detail = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
                sid = next(s["study_id"] for s in studies if s["study_name"] == "dash")
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{sid}",
                                            timeout=5) as r:
                    detail = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.5)
        assert detail is not None, "optuna-dashboard did not answer"
        assert detail["objective_names"] == ["quality_gap", "total_flops"]
        trials = {t["number"]: t for t in detail["trials"]}
        assert [c > 0 for c in trials[1]["constraints"]] == [True]  # collapsed: infeasible
        assert all(c <= 0 for n in (0, 2) for c in trials[n]["constraints"])
        attrs = {a["key"]: a["value"] for a in trials[0]["user_attrs"]}
        assert attrs["tune_trial_id"] == "tid0" and attrs["trial_dir"] == "trials/tid0"
        assert {t["number"] for t in detail["best_trials"]} <= {0, 2}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # it binds the loopback interface only
    from sweep.observe.serve import serve_dashboard

    with pytest.raises(ValueError, match="loopback"):
        serve_dashboard(run, host="0.0.0.0")


def test_dashboard_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    from sweep.cli.main import main
    from sweep.config import dump_config
    from sweep.files.atomic import write_text

    run = tmp_path / "r"
    write_text(run / "sweep.yaml", dump_config(load_config({"name": "r"})))
    (run / "optuna.journal").write_bytes(b"")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "optuna_dashboard" else real(name, *a))
    assert main(["dashboard", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["collapse-sweep: error: dashboard: optuna-dashboard is not installed "
                   "(pip install 'collapse-sweep[dashboard]')"]
