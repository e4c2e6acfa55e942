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

What goes into the events, ``Summary`` protos, is built without torch too
(``sweep.observe.summaries``): neither the sweep's driver nor a trial of an analytic family
imports torch.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import google_crc32c
from tensorboard.compat.proto.event_pb2 import Event

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
