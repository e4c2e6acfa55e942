"""sweep.observe.events: TensorBoard's record format, written in the caller's thread."""

from __future__ import annotations

import io
import re

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import summary as tb

from sweep.observe.events import EventFile, tfrecord


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
