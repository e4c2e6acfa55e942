"""sweep.observe.events and .summaries: TensorBoard's record format, written in the caller's
thread, and its summaries built without torch (compared here with torch's own)."""

from __future__ import annotations

import io
import re

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import summary as tb

from sweep.observe.events import EventFile, tfrecord
from sweep.observe.summaries import (
    histogram_summary,
    hparams_summaries,
    image_summary,
    margin_chart_summary,
    session_end_summary,
    text_summary,
)


def test_records_are_byte_for_byte_tensorboards_own():
    # TensorBoard's RecordWriter frames with its pure-Python CRC-32C; ours with the C one.
    rng = np.random.default_rng(0)
    payloads = [b"", b"x", bytes(rng.integers(0, 256, 4099, dtype=np.uint8)),
                tb.histogram("h", rng.normal(size=1000), bins=64).SerializeToString()]
    for data in payloads:
        theirs = io.BytesIO()
        RecordWriter(theirs).write(data)
        assert tfrecord(data) == theirs.getvalue()


def test_events_read_back_live_and_after_close(tmp_path):
    events = EventFile(tmp_path)
    assert re.fullmatch(r"events\.out\.tfevents\.\d{10}\..+\.\d+\.\d+", events.path.name)
    events.add_summary(Summary(value=[Summary.Value(tag="a/x", simple_value=1.5),
                                      Summary.Value(tag="a/y", simple_value=-2.0)]), 3)
    events.add_summary(tb.histogram("h", np.arange(10.0), bins=4), 3)
    events.flush()
    live = EventAccumulator(str(tmp_path))  # the file is still open: a running chain
    live.Reload()
    assert [(e.step, e.value) for e in live.Scalars("a/x")] == [(3, 1.5)]
    assert live.Histograms("h")[0].histogram_value.num == 10
    events.add_summary(Summary(value=[Summary.Value(tag="a/x", simple_value=2.5)]), 4)
    events.close()
    assert events.closed
    done = EventAccumulator(str(tmp_path))
    done.Reload()
    assert [(e.step, e.value) for e in done.Scalars("a/x")] == [(3, 1.5), (4, 2.5)]
    assert [e.value for e in done.Scalars("a/y")] == [-2.0]


def test_two_files_opened_at_once_in_one_directory_are_distinct(tmp_path):
    # a resumed chain opens a second file beside its first, possibly within the same second
    a, b = EventFile(tmp_path), EventFile(tmp_path)
    assert a.path != b.path
    a.close()
    b.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2


def test_text_and_image_summaries_are_torchs_own():
    # built without torch (the driver's board), read where torch's summaries were read
    assert text_summary("config/hparams", "| a | b |\n|-|-|") == tb.text("config/hparams",
                                                                          "| a | b |\n|-|-|")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert image_summary("sweep/pareto", rgb) == tb.image("sweep/pareto", rgb,
                                                          dataformats="HWC")
    # grey stays one channel (torch repeats it into three): the same pixels, a third the size
    grey = rng.integers(0, 256, (12, 9), dtype=np.uint8)
    ours = image_summary("samples/images", grey).value[0].image
    theirs = tb.image("samples/images", grey, dataformats="HW").value[0].image
    assert (ours.height, ours.width, ours.colorspace) == (12, 9, 1)
    assert (_pixels(ours) == grey).all()
    assert (_pixels(theirs) == grey[..., None]).all()


def test_histogram_summary_is_torchs_own():
    rng = np.random.default_rng(2)
    cases = [rng.normal(size=4096),  # a chain's held-out log-likelihoods
             np.concatenate([rng.normal(size=500), [40.0]]),  # empty bins between
             np.full(7, 3.0),  # one value: numpy's unit-wide range
             np.array([1.0]), np.arange(10.0)]
    for values in cases:
        for bins in (4, 64):
            assert histogram_summary("test/log_prob", values, bins=bins) == tb.histogram(
                "test/log_prob", values, bins=bins)


def test_hparams_and_session_end_are_torchs_own():
    hparams = {"recursion.regime": "replace", "recursion.generations": 20, "seed": 3,
               "model.lr": 1e-3, "search.flag": True, "skipped": None}
    metrics = ["final/quality_gap", "final/total_flops"]
    exp, start, end = tb.hparams(hparams, dict.fromkeys(metrics, 0.0))
    assert hparams_summaries(hparams, metrics) == (exp, start)
    assert session_end_summary(ok=True) == end
    failed = session_end_summary(ok=False)
    assert failed != end and failed.value[0].tag == end.value[0].tag


def test_margin_chart_is_torchs_custom_scalars():
    tags = ("interval/gap_mean", "interval/gap_lower", "interval/gap_upper")
    assert margin_chart_summary("interval", "quality gap", tags) == tb.custom_scalars(
        {"interval": {"quality gap": ["Margin", list(tags)]}})


def _pixels(image) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))


DRIVER_BOARD = """
import importlib, sys
import pandas as pd
from sweep.search.rayinit import DRIVER_MODULE, WARM_IMPORTS
for name in (DRIVER_MODULE, *WARM_IMPORTS):
    importlib.import_module(name)
from sweep.observe.board import SweepBoard
with SweepBoard(sys.argv[1], tolerance=0.1) as board:
    board.update(pd.DataFrame({"total_flops": [1e6, 2e6], "quality_gap": [0.2, 0.01],
                               "status": ["finished"] * 2, "feasible": [False, True],
                               "param.recursion.regime": ["replace", "accumulate"]}))
"""


def test_the_drivers_imports_and_board_need_no_torch(tmp_path):
    # torch costs the driver ~1.3 s of CPU while Ray and the first trial processes start
    from tests.processes import loads_torch

    assert not loads_torch(DRIVER_BOARD, str(tmp_path))
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert acc.Tags()["images"] == ["sweep/pareto"]
    assert "sweep/results/text_summary" in acc.Tags()["tensors"]
