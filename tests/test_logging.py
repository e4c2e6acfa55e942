"""TensorBoard logging read back from the event files, as TensorBoard itself reads them."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep.config import load_config
from sweep.engine.chain import run_chain
from sweep.engine.metrics import relative_gaps
from sweep.observe.board import (
    GAP_TAG,
    HIST_BINS,
    HIST_MAX_VALUES,
    HIST_TAG,
    SAMPLES_TAG,
    ChainLogger,
    SweepBoard,
    decode_samples,
    pareto_front,
    tag_for,
)
from sweep.observe.serve import argv, command

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"recursion.regime": "accumulate", "recursion.real_fraction": 0.25}


def read_events(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    guidance = {k: 0 for k in ("scalars", "histograms", "compressedHistograms", "images",
                               "audio", "tensors")}
    acc = EventAccumulator(str(path), size_guidance=guidance)
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def texts(acc, tag: str) -> dict[int, str]:
    return {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(f"{tag}/text_summary")}


def hparams_data(acc):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = acc.PluginTagToContent("hparams")
    return {tag: HParamsPluginData.FromString(blob) for tag, blob in content.items()}


def logged_chain(log_dir: Path, config, params=PARAMS):
    with ChainLogger(log_dir, config=config, params=params) as logger:
        df = run_chain(config, on_generation=logger.log_generation)
        logger.close(df.attrs["summary"])
    return df


@pytest.fixture(scope="module")
def gaussian_trial(tmp_path_factory):
    config = load_config({"model": {"family": "gaussian", "dim": 2},
                          "recursion": {"generations": 4, "regime": "accumulate",
                                        "real_fraction": 0.25}})
    log_dir = tmp_path_factory.mktemp("trial") / "tb"
    return config, logged_chain(log_dir, config), read_events(log_dir)


def test_every_numeric_row_value_is_a_scalar_at_its_generation(gaussian_trial):
    _, df, acc = gaussian_trial
    family = frozenset({"mean", "var"})
    for col in df.columns.drop("generation"):
        values = df[col].to_numpy(float)
        tag = tag_for(col, family)
        if np.isnan(values).all():  # scorer_agreement without a scorer: skipped, not NaN
            assert tag not in acc.Tags()["scalars"]
            continue
        got = scalars(acc, tag)
        want = {int(g): v for g, v in zip(df.generation, values, strict=True) if not np.isnan(v)}
        assert sorted(got) == sorted(want), tag
        for g, v in want.items():  # event files hold float32
            assert got[g] == pytest.approx(v, rel=1e-6, abs=1e-30), (tag, g)


def test_tags_are_grouped(gaussian_trial):
    _, _, acc = gaussian_trial
    tags = set(acc.Tags()["scalars"])
    assert {"quality/real_nll", "tail/tail_nll", "diversity/var", "model/mean", "compute/flops",
            "compute/cumulative_flops", "compute/fit_flops", "data/train_size",
            "curation/candidates", GAP_TAG} <= tags
    assert all("/" in t for t in tags)
    assert not any(t.startswith("other/") for t in tags)
    assert tag_for("something_new") == "other/something_new"
    assert tag_for("distinct_2") == "diversity/distinct_2"


def test_quality_gap_matches_the_summary(gaussian_trial):
    config, df, acc = gaussian_trial
    gaps = relative_gaps(df[config.collapse.metric].to_numpy(float), config.collapse.metric)
    got = scalars(acc, GAP_TAG)
    assert got[0] == 0.0
    assert [got[g] for g in df.generation] == pytest.approx(gaps, rel=1e-5, abs=1e-6)
    assert got[int(df.generation.iloc[-1])] == pytest.approx(df.attrs["summary"]["quality_gap"],
                                                             rel=1e-5, abs=1e-6)


def test_histogram_of_held_out_log_likelihood_per_generation(gaussian_trial):
    config, df, acc = gaussian_trial
    hist = acc.Histograms(HIST_TAG)
    assert [h.step for h in hist] == list(df.generation)
    for h, nll in zip(hist, df.real_nll, strict=True):
        v = h.histogram_value
        assert v.num == config.data.test_size
        assert v.sum / v.num == pytest.approx(-nll, rel=1e-6)  # mean log-lik = -real_nll


def test_hparams_and_final_metrics_in_the_same_run(gaussian_trial):
    from tensorboard.plugins.hparams import api_pb2

    _, df, acc = gaussian_trial
    data = hparams_data(acc)
    assert set(data) == {"_hparams_/experiment", "_hparams_/session_start_info",
                         "_hparams_/session_end_info"}
    start = data["_hparams_/session_start_info"].session_start_info.hparams
    assert start["recursion.regime"].string_value == "accumulate"
    assert start["recursion.real_fraction"].number_value == 0.25
    assert start["model.family"].string_value == "gaussian"
    assert start["model.dim"].number_value == 2  # the family's size axis
    assert {"curation.strength", "curation.scorer"} <= set(start)
    experiment = data["_hparams_/experiment"].experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert metrics == {"final/quality_gap", "final/total_flops", "final/real_nll", "final/collapsed",
                       "final/total_label_cost"}
    assert data["_hparams_/session_end_info"].session_end_info.status == api_pb2.STATUS_SUCCESS
    summary, last = df.attrs["summary"], int(df.generation.iloc[-1])
    assert scalars(acc, "final/quality_gap") == {last: pytest.approx(summary["quality_gap"], rel=1e-6)}
    assert scalars(acc, "final/total_flops")[last] == pytest.approx(summary["total_flops"], rel=1e-6)
    assert scalars(acc, "final/real_nll")[last] == pytest.approx(summary["final_real_nll"], rel=1e-6)
    assert scalars(acc, "final/collapsed")[last] == float(summary["collapsed"])
    assert scalars(acc, "final/total_label_cost")[last] == 0.0  # no labeller in this chain


def test_config_text_table_written_once(gaussian_trial):
    _, _, acc = gaussian_trial
    table = texts(acc, "config/hparams")
    assert list(table) == [0]
    assert "|**recursion.regime**|accumulate|" in table[0]
    assert "|collapse.tolerance|0.1|" in table[0]


def test_events_are_flushed_every_generation(tmp_path):
    config = load_config({"recursion": {"generations": 2}})
    seen = []
    logger = ChainLogger(tmp_path, config=config, params={})

    def callback(row, details):
        logger.log_generation(row, details)
        seen.append(sorted(scalars(read_events(tmp_path), "quality/real_nll")))

    run_chain(config, on_generation=callback)
    logger.close(None)
    assert seen == [[0], [0, 1], [0, 1, 2]]


def test_nan_skipped_unknown_columns_under_other_and_resume_keeps_the_gap(tmp_path):
    # The rows below carry real_nll only: the gap is on real_nll (the default is now excess).
    config = load_config({"recursion": {"generations": 3}, "collapse": {"metric": "real_nll"}})
    lp = np.array([-1.0, -2.0, -np.inf])
    with ChainLogger(tmp_path, config=config, params={}) as logger:
        logger.log_generation({"generation": 0, "real_nll": 2.0, "kl": float("nan"),
                               "weird": 3, "label": "x", "flag": True}, {"test_log_prob": lp})
    # A resumed trial: a new logger (new event file) in the same directory.
    with ChainLogger(tmp_path, config=config, params={}) as logger:
        logger.log_generation({"generation": 1, "real_nll": 3.0}, {})
        logger.close({"quality_gap": math.inf, "total_flops": 5.0, "final_real_nll": 3.0,
                      "collapsed": True, "status": "diverged"})
    acc = read_events(tmp_path)
    tags = acc.Tags()["scalars"]
    assert "quality/kl" not in tags and "other/label" not in tags
    assert scalars(acc, "other/weird") == {0: 3.0} and scalars(acc, "other/flag") == {0: 1.0}
    assert scalars(acc, GAP_TAG) == {0: 0.0, 1: 0.5}
    assert "final/quality_gap" not in tags  # inf: left out of the dashboard's axes
    assert acc.Histograms(HIST_TAG)[0].histogram_value.num == 2  # -inf dropped
    assert list(texts(acc, "config/hparams")) == [0]  # hyperparameters once, not per resume
    assert len(acc.Tensors("config/hparams/text_summary")) == 1


def test_histogram_of_a_large_test_set_is_an_even_subsample(tmp_path):
    config = load_config({"recursion": {"generations": 1}})
    lp = -np.linspace(0.0, 10.0, 10 * HIST_MAX_VALUES + 7)  # mean -5, evenly spread
    with ChainLogger(tmp_path, config=config, params={}) as logger:
        logger.log_generation({"generation": 0, "real_nll": 5.0}, {"test_log_prob": lp})
    v = read_events(tmp_path).Histograms(HIST_TAG)[0].histogram_value
    assert HIST_MAX_VALUES // 2 < v.num <= HIST_MAX_VALUES
    assert v.max == 0.0 and -10.0 <= v.min < -9.99  # both ends of the range are kept
    assert v.sum / v.num == pytest.approx(-5.0, abs=1e-3)
    # equal-width buckets (+ the empty one TensorBoard puts first), not TensorFlow's ~1,500 edges
    assert len(v.bucket) == HIST_BINS + 1 and v.bucket[0] == 0
    assert sum(v.bucket) == v.num


def test_lm_samples_as_text(tmp_path):
    text_cfg = load_config({"model": {"family": "gpt"}, "data": {"source": "text"}})
    lm_cfg = load_config({"model": {"family": "gpt"}})
    hello = np.array([list(b"hello") + [0, 7, 7], list("né\n".encode()) + [0xFF, 0, 0, 0]])
    with ChainLogger(tmp_path / "text", config=text_cfg, params={}) as logger:
        logger.log_generation({"generation": 0, "distinct_2": 0.5}, {"samples": hello})
        logger.log_generation({"generation": 1, "distinct_2": 0.25}, {"samples": hello[:1]})
    with ChainLogger(tmp_path / "lm", config=lm_cfg, params={}) as logger:
        logger.log_generation({"generation": 0}, {"samples": np.array([[3, 1, 4, 0, 5], [2, 2, 2, 2, 2]])})
    got = texts(read_events(tmp_path / "text"), SAMPLES_TAG)
    assert got == {0: "```\nhello\nné\u21b5\ufffd\n```", 1: "```\nhello\n```"}
    assert scalars(read_events(tmp_path / "text"), "diversity/distinct_2") == {0: 0.5, 1: 0.25}
    assert texts(read_events(tmp_path / "lm"), SAMPLES_TAG) == {0: "```\n3 1 4\n2 2 2 2 2\n```"}
    assert decode_samples(np.zeros((10, 3), np.int64), byte_level=False).count("\n") == 5


# --------------------------------------------------------------------------- sweep board
def results_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"], "number": range(5),
        "status": ["finished", "finished", "stopped_collapsed", "failed", "running"],
        "quality_gap": [0.05, 0.02, 0.9, np.nan, np.nan],
        "total_flops": [1e6, 1e8, 1e5, np.nan, np.nan],
        "collapsed": [False, False, True, True, False],
        "feasible": [True, True, False, False, False],
        "param.recursion.regime": ["replace", "accumulate", "replace", "accumulate", "replace"],
    })


def test_sweep_board_scatter_and_table(tmp_path):
    (tmp_path / "sweep.yaml").write_text("collapse:\n  tolerance: 0.2\n")
    with SweepBoard(tmp_path) as board:
        assert board.tolerance == 0.2
        board.update(results_frame().iloc[:2])
        board.update(results_frame())
    acc = read_events(tmp_path / "tb")
    images = acc.Images("sweep/pareto")
    assert [i.step for i in images] == [2, 4]  # finished trials (failed counts, running not)
    assert images[-1].width > 300 and images[-1].encoded_image_string[:4] == b"\x89PNG"
    table = texts(acc, "sweep/results")[4]
    header = table.splitlines()[0]
    assert header.startswith("|number|trial_id|status|quality_gap|") and "param.recursion.regime" in header
    assert table.splitlines()[2].startswith("|1|b|finished|0.02|")  # best gap first


def test_sweep_board_survives_empty_and_odd_frames(tmp_path):
    with SweepBoard(tmp_path) as board:
        assert board.tolerance is None
        board.update(pd.DataFrame({"trial_id": [], "status": []}))
        board.update(results_frame().drop(columns=["param.recursion.regime", "feasible"]))
    assert len(read_events(tmp_path / "tb").Images("sweep/pareto")) == 2


def test_pareto_front_is_the_non_dominated_set():
    flops = np.array([1.0, 2.0, 3.0, 4.0, 2.0])
    gap = np.array([0.5, 0.3, 0.4, 0.1, 0.6])
    assert pareto_front(flops, gap).tolist() == [0, 1, 3]


# --------------------------------------------------------------------------- serving
def test_command_and_argv_are_loopback_only():
    assert command(Path("runs/quick")) == "tensorboard --logdir runs/quick --host 127.0.0.1"
    assert command("my runs", port=7007) == "tensorboard --logdir 'my runs' --host 127.0.0.1 --port 7007"
    assert argv("x", port=1234)[-4:] == ["--host", "127.0.0.1", "--port", "1234"]
    for host in ("0.0.0.0", "::", "192.168.1.2", ""):
        with pytest.raises(ValueError, match="loopback"):
            argv("x", host=host)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from the kernel's socket tables)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                found.append(addr)
    return found


def test_serve_listens_on_loopback_only_and_shows_hparams(tmp_path, gaussian_trial):
    for i, regime in enumerate(("replace", "accumulate")):
        config = load_config({"recursion": {"generations": 1, "regime": regime}})
        with ChainLogger(tmp_path / "trials" / f"t{i}" / "tb", config=config,
                         params={"recursion.regime": regime}) as logger:
            df = run_chain(config, on_generation=logger.log_generation)
            logger.close(df.attrs["summary"])
    port = free_port()
    code = (f"from sweep.observe.serve import serve; serve({str(tmp_path)!r}, port={port})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "TensorBoard did not start in 60 s"
                time.sleep(0.2)
        addrs = listening(port)
        assert addrs and all(a == "0100007F" for a in addrs), addrs  # 127.0.0.1, no 0.0.0.0 / ::
        # The HParams dashboard's own API sees both trials with their searched values.
        body = json.dumps({"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS"],
                           "colParams": [], "startIndex": 0, "sliceSize": 10}).encode()
        deadline = time.monotonic() + 30
        while True:  # the first load of the event files runs in the background
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups", data=body,
                headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
            groups = json.loads(urllib.request.urlopen(req, timeout=10).read())
            if len(groups.get("sessionGroups", [])) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        regimes = sorted(g["hparams"]["recursion.regime"] for g in groups["sessionGroups"])
        assert regimes == ["accumulate", "replace"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- a real LM chain
@pytest.mark.slow
def test_tiny_gpt_chain_logs_samples_and_diversity(tmp_path):
    config = load_config({
        "model": {"family": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8,
                  "train": {"epochs": 1}, "device": "cpu"},
        "data": {"source": "truth-lm", "vocab_size": 8, "max_len": 6, "test_size": 20},
        "recursion": {"generations": 1, "samples_per_generation": 40},
    })
    df = logged_chain(tmp_path, config, params={})
    acc = read_events(tmp_path)
    tags = set(acc.Tags()["scalars"])
    assert {"diversity/distinct_2", "diversity/unigram_entropy", "tail/minority_share",
            "quality/kl", "model/n_params"} <= tags
    assert list(texts(acc, SAMPLES_TAG)) == [0, 1]
    assert len(acc.Histograms(HIST_TAG)) == len(df)


def test_trial_summary_band_is_the_mean_and_standard_error_over_seeds(tmp_path):
    from sweep.observe.intervals import GAP_BAND, log_trial_summary

    # real_nll per generation for two seeds: relative gaps (x - x0) / x0
    frame = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "generation": [0, 1, 2, 0, 1, 2],
                          "real_nll": [2.0, 2.2, 2.4, 4.0, 4.0, 5.0]})
    gaps = {1: [0.1, 0.0], 2: [0.2, 0.25]}
    record = {"generations_run": 2, "quality_gap": 0.225, "quality_gap_ucb": 0.3, "n_seeds": 2}
    log_trial_summary(tmp_path / "two", record, frame, metric="real_nll")
    acc = read_events(tmp_path / "two")
    mean, lower, upper = (scalars(acc, tag) for tag in GAP_BAND)
    for g, values in gaps.items():
        se = np.std(values, ddof=1) / np.sqrt(2)
        assert mean[g] == pytest.approx(np.mean(values), abs=1e-6)
        assert (upper[g] - mean[g], mean[g] - lower[g]) == pytest.approx((se, se), abs=1e-6)
    assert mean[0] == 0.0
    assert scalars(acc, "trial/quality_gap_ucb") == {2: pytest.approx(0.3)}

    # one seed: no interval to draw (the chain's own gap curve is there), the finals are
    log_trial_summary(tmp_path / "one", record, frame[frame["seed"] == 0], metric="real_nll")
    acc = read_events(tmp_path / "one")
    assert not set(GAP_BAND) & set(acc.Tags()["scalars"])
    assert scalars(acc, "trial/quality_gap_mean") == {2: pytest.approx(0.225)}
