"""The layout of one network buffer: a sequence of frames.

A frame is an 8-byte header ``(payload length u32, kind u8, flags u8, event u16)``
followed by the payload, padded to 8 bytes so that Arrow buffers inside stay
aligned and can be read zero-copy. Kinds:

* ``BATCH``: one Arrow IPC stream (schema, one record batch, end marker) written
  straight into shared memory by Arrow's own writer.
* ``FRAGMENT``: a piece of an IPC stream too large for one buffer (a single row
  larger than a buffer); ``FIRST``/``LAST`` flags delimit it and the receiver
  reassembles the pieces (the only place where data is copied on receipt).
* ``EVENT``: an in-band event (end of partition now; checkpoint barriers and
  watermarks later) that travels in order with the data of its channel.

Example::

    >>> import pyarrow as pa
    >>> mem = memoryview(bytearray(4096))
    >>> builder = BufferBuilder(mem)
    >>> builder.write_batch(pa.record_batch([pa.array([1, 2])], names=["x"]))
    True
    >>> builder.write_event(EventKind.END_OF_PARTITION)
    True
    >>> [kind for kind, _flags, _event, _payload in iter_frames(mem, builder.offset)]
    [1, 3]
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from enum import IntEnum

import pyarrow as pa

__all__ = [
    "FrameKind",
    "EventKind",
    "BufferBuilder",
    "iter_frames",
    "ipc_stream_size",
    "read_batch",
    "serialize_stream",
    "HEADER",
    "FIRST",
    "LAST",
]

HEADER = struct.Struct("<IBBH")
FIRST = 1
LAST = 2


class FrameKind(IntEnum):
    BATCH = 1
    FRAGMENT = 2
    EVENT = 3


class EventKind(IntEnum):
    END_OF_PARTITION = 1
    CHECKPOINT_BARRIER = 2  #: reserved for checkpoints
    WATERMARK = 3  #: reserved for event time
    CANCEL_CHECKPOINT = 4  #: reserved for checkpoints


def _pad8(n: int) -> int:
    return (n + 7) & ~7


_SCHEMA_STREAM_SIZE: dict[pa.Schema, int] = {}


def ipc_stream_size(batch: pa.RecordBatch) -> int:
    """Exact size of ``batch`` written as a one-batch IPC stream (without dictionaries)."""
    schema = batch.schema
    base = _SCHEMA_STREAM_SIZE.get(schema)
    if base is None:
        sink = pa.BufferOutputStream()
        pa.ipc.new_stream(sink, schema).close()
        base = sink.tell()
        _SCHEMA_STREAM_SIZE[schema] = base
    return base + pa.ipc.get_record_batch_size(batch)


def serialize_stream(batch: pa.RecordBatch) -> pa.Buffer:
    """``batch`` as a one-batch IPC stream in ordinary memory (for fragmenting)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def read_batch(payload: memoryview | pa.Buffer) -> pa.RecordBatch:
    """Read the batch of a BATCH frame; zero-copy when ``payload`` is shared memory."""
    buf = payload if isinstance(payload, pa.Buffer) else pa.py_buffer(payload)
    return pa.ipc.open_stream(buf).read_next_batch()


class BufferBuilder:
    """Appends frames to one buffer until it is full."""

    __slots__ = ("memory", "capacity", "offset")

    def __init__(self, memory: memoryview) -> None:
        self.memory = memory
        self.capacity = len(memory)
        self.offset = 0

    @property
    def remaining_payload(self) -> int:
        """Largest payload that still fits."""
        return max(0, self.capacity - self.offset - HEADER.size)

    def is_empty(self) -> bool:
        return self.offset == 0

    def _header(self, length: int, kind: int, flags: int = 0, event: int = 0) -> None:
        HEADER.pack_into(self.memory, self.offset, length, kind, flags, event)
        self.offset = min(self.capacity, _pad8(self.offset + HEADER.size + length))

    def write_batch(self, batch: pa.RecordBatch, size: int | None = None) -> bool:
        """Write ``batch`` as one IPC stream; False (nothing written) if it does not fit."""
        if size is None:
            size = ipc_stream_size(batch)
        if size > self.remaining_payload:
            return False
        start = self.offset + HEADER.size
        sink = pa.FixedSizeBufferWriter(pa.py_buffer(self.memory[start : start + size]))
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        self._header(sink.tell(), FrameKind.BATCH)
        return True

    def write_fragment(self, data: memoryview, flags: int) -> int:
        """Write as much of ``data`` as fits; returns the number of bytes written."""
        n = min(len(data), self.remaining_payload)
        if n <= 0:
            return 0
        start = self.offset + HEADER.size
        self.memory[start : start + n] = data[:n]
        if n == len(data):
            flags |= LAST
        self._header(n, FrameKind.FRAGMENT, flags)
        return n

    def write_event(self, event: int, payload: bytes = b"") -> bool:
        if len(payload) > self.remaining_payload or self.capacity - self.offset < HEADER.size:
            return False
        start = self.offset + HEADER.size
        self.memory[start : start + len(payload)] = payload
        self._header(len(payload), FrameKind.EVENT, 0, event)
        return True


def iter_frames(memory: memoryview, length: int) -> Iterator[tuple[int, int, int, memoryview]]:
    """Yield ``(kind, flags, event, payload)`` for every frame in ``memory[:length]``."""
    offset = 0
    while offset + HEADER.size <= length:
        size, kind, flags, event = HEADER.unpack_from(memory, offset)
        start = offset + HEADER.size
        yield kind, flags, event, memory[start : start + size]
        offset = _pad8(start + size)
