"""A TensorBoard event file written in the caller's thread: what a chain logs every generation.

``torch.utils.tensorboard.SummaryWriter`` hands every event to a writer thread, which frames
it as a TFRecord with a CRC-32C computed in pure Python (TensorBoard's stub, without
TensorFlow): ~0.25 ms for a generation's event, plus the hand-off and the flush's wait for
that thread, which competes with the chain for the interpreter. A chain's trial runs on one
CPU, so the thread saved it nothing: measured on a short analytic chain, a generation's event
cost 0.89 ms through SummaryWriter and 0.26 ms here (``google_crc32c``'s C CRC, the write in
this thread). The file is the same format (TFRecord: length, masked CRC of the length, the
serialised ``Event``, masked CRC of it), named as TensorBoard's writers name theirs, so
TensorBoard and ``EventAccumulator`` read it as before.

``image_summary`` and ``text_summary`` build those summaries without torch (``torch.utils.tensorboard``
imports it: ~1.3 s of CPU), so that the sweep's driver, whose board draws a Pareto image and
a results table, never imports torch; a trial process imports it anyway (checkpoints).
"""

from __future__ import annotations

import io
import itertools
import math
import os
import socket
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8
_uids = itertools.count()  # two files opened in one second by one process get distinct names


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data`` (rotated right by 15 bits, plus a constant)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """``data`` framed as one TFRecord."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


class EventFile:
    """``log_dir/events.out.tfevents.<time>.<host>.<pid>.<n>``, appended event by event.

    ``add_summary`` writes at once into the file's buffer; ``flush`` hands it to the OS (a
    killed process loses only what came after the last flush)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_uids)}")
        self.path = self.log_dir / name
        self._file = open(self.path, "ab")  # noqa: SIM115 - open for the logger's lifetime
        self.add_event(Event(wall_time=time.time(), file_version=FILE_VERSION))
        self.flush()

    def add_event(self, event: Event) -> None:
        self._file.write(tfrecord(event.SerializeToString()))

    def add_summary(self, summary: Any, step: int) -> None:
        """One ``Summary`` proto (its values share the step and time) as one event."""
        self.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed


def scalar_summary(pairs: Iterable[tuple[str, Any]]) -> Summary:
    """The finite numbers among ``(tag, value)`` pairs as scalars of one summary (None, NaN
    and inf are left out: inf would flatten the dashboard's axes)."""
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(value))
                          for tag, value in pairs
                          if isinstance(value, int | float) and math.isfinite(value)])


def image_summary(tag: str, pixels: np.ndarray) -> Summary:
    """An image summary of ``pixels`` (uint8, H x W grey or H x W x 3/4 colour), PNG-encoded,
    as ``torch.utils.tensorboard.summary.image`` writes it."""
    from PIL import Image

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    height, width = pixels.shape[:2]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    return Summary(value=[Summary.Value(tag=tag, image=Summary.Image(
        height=height, width=width, colorspace=channels,
        encoded_image_string=buffer.getvalue()))])


def text_summary(tag: str, markdown: str) -> Summary:
    """A text summary under ``<tag>/text_summary`` (TensorBoard's Text tab renders markdown),
    as ``torch.utils.tensorboard.summary.text`` writes it."""
    from tensorboard.compat.proto.summary_pb2 import SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name="text", content=TextPluginData(version=0).SerializeToString()))
    tensor = TensorProto(dtype="DT_STRING", string_val=[markdown.encode("utf_8")],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=f"{tag}/text_summary", metadata=metadata,
                                        tensor=tensor)])
