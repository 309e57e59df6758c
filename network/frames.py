"""The layout of one network buffer: a sequence of frames.

A frame is an 8-byte header ``(payload length u32, kind u8, flags u8, event u16)``
followed by the payload, padded to 8 bytes so that Arrow buffers inside stay
aligned and can be read zero-copy. Kinds:

* ``BATCH``: the start of an Arrow IPC stream -- the schema message and one
  record batch message (and possibly the end-of-stream marker) -- written
  straight into shared memory by Arrow's own writer.
* ``BATCH_BODY``: one more record batch message of the stream that the last
  ``BATCH`` frame of the same channel started, without a schema. A channel's
  buffers are read in order, so the receiver decodes it with the schema it
  parsed from that frame, which may be in an earlier buffer. A producer thus
  writes the schema once per channel (see :class:`ChannelStream`) and again
  only when it changes, and the receiver parses it once.
* ``FRAGMENT``: a piece of an IPC stream too large for one buffer (a single row
  larger than a buffer); ``FIRST``/``LAST`` flags delimit it and the receiver
  reassembles the pieces (the only place where data is copied on receipt).
* ``EVENT``: an in-band event (end of partition now; checkpoint barriers and
  watermarks later) that travels in order with the data of its channel.

Schemas with dictionary-encoded fields travel as complete one-batch streams in
``BATCH`` frames (the dictionaries are part of the stream).

Example::

    >>> import pyarrow as pa
    >>> mem = memoryview(bytearray(4096))
    >>> builder = BufferBuilder(mem)
    >>> builder.write_batch(pa.record_batch([pa.array([1, 2])], names=["x"]))
    True
    >>> builder.write_batch(pa.record_batch([pa.array([3])], names=["x"]))
    True
    >>> builder.write_event(EventKind.END_OF_PARTITION)
    True
    >>> [kind for kind, _flags, _event, _payload in iter_frames(mem, builder.offset)]
    [1, 4, 3]
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
    "ChannelStream",
    "BatchReader",
    "iter_frames",
    "ipc_stream_size",
    "record_batch_size",
    "rows_that_fit",
    "fit_rows",
    "schema_info",
    "SchemaInfo",
    "read_batch",
    "serialize_stream",
    "HEADER",
    "FIRST",
    "LAST",
]

HEADER = struct.Struct("<IBBH")
FIRST = 1
LAST = 2

_CONTINUATION = b"\xff\xff\xff\xff"
_EOS_SIZE = 8
_OPTIONS = pa.ipc.IpcWriteOptions()  # explicit: pyarrow reads os.environ for the default
#: ``record_batch_size(batch)``: exact size of the record batch message of ``batch``
#: (the payload of a BATCH_BODY frame)
record_batch_size = _record_batch_size = pa.ipc.get_record_batch_size


class FrameKind(IntEnum):
    BATCH = 1
    FRAGMENT = 2
    EVENT = 3
    BATCH_BODY = 4


class EventKind(IntEnum):
    END_OF_PARTITION = 1
    CHECKPOINT_BARRIER = 2  #: reserved for checkpoints
    WATERMARK = 3  #: reserved for event time
    CANCEL_CHECKPOINT = 4  #: reserved for checkpoints
    #: the producer's input ended (Flink's EndOfData): no more records, but barriers still
    #: follow until the final checkpoint, then END_OF_PARTITION
    END_OF_DATA = 5


def _pad8(n: int) -> int:
    return (n + 7) & ~7


# -- schemas ------------------------------------------------------------------------
class SchemaInfo:
    """What the writer needs to know about a schema, computed once per schema.

    ``message_size`` is the size of its IPC schema message, ``has_dictionaries``
    whether a field is dictionary-encoded, :meth:`empty_size` the size of a
    record batch message without rows (the part that does not grow with rows).
    """

    __slots__ = ("schema", "message_size", "has_dictionaries", "_empty_size")

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.message_size = schema.serialize().size
        self.has_dictionaries = any(_has_dictionary(field.type) for field in schema)
        self._empty_size = -1

    def empty_size(self) -> int:
        if self._empty_size < 0:
            try:
                empty = pa.RecordBatch.from_pylist([], schema=self.schema)
                self._empty_size = _record_batch_size(empty)
            except (pa.ArrowException, TypeError, ValueError):  # pragma: no cover
                self._empty_size = 0  # a lower bound is all that is needed
        return self._empty_size


def _has_dictionary(type_: pa.DataType) -> bool:
    if pa.types.is_dictionary(type_):
        return True
    if isinstance(type_, pa.BaseExtensionType):
        return _has_dictionary(type_.storage_type)
    return any(_has_dictionary(type_.field(i).type) for i in range(type_.num_fields))


#: most recently used schemas, looked up with ``Schema.equals`` (a C++ comparison,
#: ~50 ns) rather than by hash: ``hash(pa.Schema)`` costs microseconds on every call.
_SCHEMAS: list[SchemaInfo] = []
_MAX_SCHEMAS = 16


def schema_info(schema: pa.Schema) -> SchemaInfo:
    """The cached :class:`SchemaInfo` of ``schema`` (metadata included in the comparison)."""
    schemas = _SCHEMAS
    for i, info in enumerate(schemas):
        if info.schema.equals(schema, check_metadata=True):
            if i:
                schemas.insert(0, schemas.pop(i))
            return info
    info = SchemaInfo(schema)
    schemas.insert(0, info)
    del schemas[_MAX_SCHEMAS:]
    return info


# -- sizes ----------------------------------------------------------------------------
def ipc_stream_size(batch: pa.RecordBatch) -> int:
    """Exact size of ``batch`` written as a one-batch IPC stream (without dictionaries)."""
    return schema_info(batch.schema).message_size + _record_batch_size(batch) + _EOS_SIZE


def rows_that_fit(batch: pa.RecordBatch, size: int, space: int) -> int:
    """How many leading rows of ``batch`` make a record batch message of at most ``space``.

    ``size`` is the message size of the whole batch.
    """
    return fit_rows(batch, size, space, schema_info(batch.schema))[0]


def fit_rows(batch: pa.RecordBatch, size: int, space: int, info: SchemaInfo) -> tuple[int, int]:
    """:func:`rows_that_fit` and the message size of those rows, ``(0, 0)`` if none fit.

    The first guess assumes that every row takes the same number of bytes; it
    is verified, and lowered in proportion to the overshoot until it fits.
    """
    rows = batch.num_rows
    if size <= space:
        return rows, size
    fixed = info.empty_size()
    if space <= fixed or rows <= 1:
        return 0, 0
    k = min(rows - 1, (space - fixed) * rows // max(1, size - fixed))
    while k > 0:
        got = _record_batch_size(batch.slice(0, k))
        if got <= space:
            return k, got
        k = min(k - 1, k * (space - fixed) // max(1, got - fixed))
    return 0, 0


def serialize_stream(batch: pa.RecordBatch) -> pa.Buffer:
    """``batch`` as a one-batch IPC stream in ordinary memory (for fragmenting)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=_OPTIONS) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def read_batch(payload: memoryview | pa.Buffer) -> pa.RecordBatch:
    """Read the batch of a BATCH frame; zero-copy when ``payload`` is shared memory."""
    buf = payload if isinstance(payload, pa.Buffer) else pa.py_buffer(payload)
    return pa.ipc.open_stream(buf).read_next_batch()


# -- writing ------------------------------------------------------------------------------
class _Stream:
    """What both kinds of stream share: the schema their writer was opened with."""

    __slots__ = ("writer", "schema")

    def __init__(self) -> None:
        self.writer: pa.RecordBatchStreamWriter | None = None
        self.schema: SchemaInfo | None = None

    def reset(self) -> None:
        """Start a new stream (and write the schema again) with the next batch."""
        self.writer = None
        self.schema = None

    def matches(self, info: SchemaInfo) -> bool:
        """Whether a batch of schema ``info`` continues the open stream."""
        current = self.schema
        if info is current:
            return True
        if current is not None and current.schema.equals(info.schema, check_metadata=True):
            self.schema = info  # the same schema, re-entered into the cache since
            return True
        return False


class ChannelStream(_Stream):
    """The Arrow IPC stream of one channel, written piecewise into the channel's buffers.

    ``file`` is a seekable, writable view of the whole buffer pool (a memory map
    of the pool's memfd): before every batch the stream seeks to the frame's
    payload in whichever buffer the channel is filling. One Arrow writer thus
    serves every buffer of the channel, and the schema message is written only
    with the first batch of the channel and after a schema change -- every
    other batch is a BATCH_BODY frame.
    """

    __slots__ = ("file",)

    def __init__(self, file: pa.NativeFile) -> None:
        super().__init__()
        self.file = file

    @staticmethod
    def open_pool(fd: int) -> pa.NativeFile | None:
        """A writable memory map of the pool behind ``fd``, or None where it cannot be had."""
        try:
            return pa.memory_map(f"/proc/self/fd/{fd}", "r+")
        except (OSError, pa.ArrowException):  # pragma: no cover - no /proc (not Linux)
            return None

    @staticmethod
    def address(file: pa.NativeFile) -> int:
        """The address at which :meth:`open_pool` mapped the pool in this process."""
        position = file.tell()
        try:
            file.seek(0)
            return file.read_buffer(1).address
        finally:
            file.seek(position)

    def append(self, builder: BufferBuilder, batch: pa.RecordBatch, info: SchemaInfo, size: int):
        builder.offset = self.write_frame(
            builder.memory, builder.offset, builder.position, batch, info, size
        )

    def write_frame(
        self,
        memory: memoryview,
        offset: int,
        base: int,
        batch: pa.RecordBatch,
        info: SchemaInfo,
        size: int,
    ) -> int:
        """Write ``batch`` as one frame at ``offset`` of ``memory``, which starts at
        ``base`` in the file; returns the offset just past the frame.

        ``size`` is the batch's record batch message size; the caller checked that
        the frame fits.
        """
        start = offset + HEADER.size
        position = base + start
        file = self.file
        try:
            file.seek(position)
            if self.matches(info):
                kind, length = FrameKind.BATCH_BODY, size
            else:
                self.writer = pa.ipc.RecordBatchStreamWriter(file, info.schema, options=_OPTIONS)
                self.schema = info
                kind, length = FrameKind.BATCH, info.message_size + size
            self.writer.write_batch(batch)
            if file.tell() != position + length:  # pragma: no cover - the sizes are exact
                raise RuntimeError(f"IPC message of {file.tell() - position} B, expected {length}")
        except BaseException:
            self.reset()
            raise
        HEADER.pack_into(memory, offset, length, kind, 0, 0)
        return start + length


class _BufferStream(_Stream):
    """The stream of a builder without a :class:`ChannelStream`: one per buffer.

    Its sink covers the buffer from the first batch frame on; the BATCH_BODY
    frames that follow are appended through the same sink. Any other frame
    ends it (the next batch starts a new one, with its schema).
    """

    __slots__ = ("sink", "base")

    def __init__(self) -> None:
        super().__init__()
        self.sink: pa.FixedSizeBufferWriter | None = None
        self.base = 0  #: where the sink starts in the buffer

    def reset(self) -> None:
        super().reset()
        self.sink = None

    def append(self, builder: BufferBuilder, batch: pa.RecordBatch, info: SchemaInfo, size: int):
        start = builder.offset + HEADER.size
        if self.sink is not None and self.matches(info):
            self.sink.write(HEADER.pack(size, FrameKind.BATCH_BODY, 0, 0))
            self.writer.write_batch(batch)
            if self.sink.tell() != start + size - self.base:  # pragma: no cover - exact sizes
                self.reset()
                raise RuntimeError("record batch message size differs from its computed size")
            builder.offset = start + size
            return
        length = info.message_size + size
        sink = pa.FixedSizeBufferWriter(pa.py_buffer(builder.memory[start:]))
        writer = pa.ipc.RecordBatchStreamWriter(sink, info.schema, options=_OPTIONS)
        writer.write_batch(batch)
        if sink.tell() != length:  # pragma: no cover - the sizes are exact
            raise RuntimeError(f"IPC stream of {sink.tell()} bytes, expected {length}")
        HEADER.pack_into(builder.memory, builder.offset, length, FrameKind.BATCH, 0, 0)
        builder.offset = start + length
        self.sink, self.writer, self.schema, self.base = sink, writer, info, start


class BufferBuilder:
    """Appends frames to one buffer until it is full.

    Batches go into an Arrow IPC stream: a batch that starts a stream is a
    ``BATCH`` frame (schema + batch), the following ones of the same schema are
    ``BATCH_BODY`` frames. With a :class:`ChannelStream` (``position`` is the
    buffer's offset in its file) the stream runs across all buffers of a
    channel; without one, each buffer starts its own.
    """

    __slots__ = ("memory", "capacity", "offset", "position", "_stream", "_own_stream")

    def __init__(
        self, memory: memoryview, stream: ChannelStream | None = None, position: int = 0
    ) -> None:
        self.memory = memory
        self.capacity = len(memory)
        self.offset = 0
        self.position = position
        self._own_stream = stream is None
        self._stream: ChannelStream | _BufferStream = _BufferStream() if stream is None else stream

    @property
    def remaining_payload(self) -> int:
        """Largest payload that still fits."""
        return max(0, self.capacity - self.offset - HEADER.size)

    def is_empty(self) -> bool:
        return self.offset == 0

    def space_for(self, info: SchemaInfo) -> int:
        """Largest record batch message of schema ``info`` that still fits."""
        space = self.capacity - self.offset - HEADER.size
        return space if self._stream.matches(info) else space - info.message_size

    def close(self) -> None:
        """Drop a per-buffer Arrow writer (it references the buffer's memory)."""
        if self._own_stream:
            self._stream.reset()

    def _put(self, kind: int, flags: int, event: int, payload) -> None:
        """Append one frame whose payload is copied from ``payload`` (bytes-like)."""
        if self._own_stream:
            self._stream.reset()
        length = len(payload)
        start = self.offset + HEADER.size
        HEADER.pack_into(self.memory, self.offset, length, kind, flags, event)
        self.memory[start : start + length] = payload
        self.offset = min(self.capacity, _pad8(start + length))

    def write_batch(self, batch: pa.RecordBatch, size: int | None = None) -> bool:
        """Write ``batch`` as one frame; False (nothing written) if it does not fit.

        ``size`` is :func:`record_batch_size` of ``batch`` if the caller knows it.
        """
        info = schema_info(batch.schema)
        if info.has_dictionaries:
            return self._write_stream(batch)
        if size is None:
            size = _record_batch_size(batch)
        if size > self.space_for(info):
            return False
        self._stream.append(self, batch, info, size)
        return True

    def append_batch(self, batch: pa.RecordBatch, info: SchemaInfo, size: int) -> None:
        """Write ``batch`` of schema ``info`` and message size ``size`` (the caller
        checked :meth:`space_for`)."""
        self._stream.append(self, batch, info, size)

    def _write_stream(self, batch: pa.RecordBatch) -> bool:
        """A complete one-batch stream in a BATCH frame (schemas with dictionaries)."""
        data = serialize_stream(batch)
        if data.size > self.remaining_payload:
            return False
        # this frame's schema replaces the stream's at the receiver: the next batch
        # without dictionaries starts a new stream
        self._stream.reset()
        self._put(FrameKind.BATCH, 0, 0, memoryview(data).cast("B"))
        return True

    def write_fragment(self, data: memoryview, flags: int) -> int:
        """Write as much of ``data`` as fits; returns the number of bytes written."""
        n = min(len(data), self.remaining_payload)
        if n <= 0:
            return 0
        if n == len(data):
            flags |= LAST
        self._put(FrameKind.FRAGMENT, flags, 0, data[:n])
        return n

    def write_event(self, event: int, payload: bytes = b"") -> bool:
        if len(payload) > self.remaining_payload or self.capacity - self.offset < HEADER.size:
            return False
        self._put(FrameKind.EVENT, 0, event, payload)
        return True


# -- reading --------------------------------------------------------------------------------
class BatchReader:
    """Decodes the BATCH and BATCH_BODY frames of one channel, in order, zero-copy.

    The schema of a BATCH frame is parsed only when its bytes differ from the
    last one's, and decodes the BATCH_BODY frames that follow.
    """

    __slots__ = ("schema", "_schema_bytes", "_has_dictionaries", "exported")

    def __init__(self) -> None:
        self.schema: pa.Schema | None = None
        self._schema_bytes = b""
        self._has_dictionaries = False
        #: the memoryview the last batch's buffers were exported from: while an Arrow
        #: object still references the batch, ``exported.release()`` raises BufferError
        self.exported: memoryview | None = None

    @property
    def schema_bytes(self) -> bytes:
        """The encapsulated schema message in effect (what :meth:`prime` takes back)."""
        return self._schema_bytes

    def prime(self, schema_bytes: bytes) -> None:
        """Start decoding as if a BATCH frame with this schema had been read."""
        self.schema = pa.ipc.read_schema(pa.py_buffer(schema_bytes))
        self._schema_bytes = schema_bytes
        self._has_dictionaries = any(_has_dictionary(field.type) for field in self.schema)

    def read(self, kind: int, payload: memoryview) -> pa.RecordBatch:
        if kind == FrameKind.BATCH_BODY:
            if self.schema is None:
                raise RuntimeError("a BATCH_BODY frame arrived before any schema")
            self.exported = payload
            message = pa.ipc.read_message(pa.py_buffer(payload))
            return pa.ipc.read_record_batch(message, self.schema)
        if payload[:4] != _CONTINUATION:
            self.exported = payload
            return read_batch(payload)  # pragma: no cover - pre-1.0 IPC format
        end = 8 + int.from_bytes(payload[4:8], "little")
        schema_bytes = bytes(payload[:end])
        if schema_bytes != self._schema_bytes:
            self.schema = pa.ipc.read_schema(pa.py_buffer(schema_bytes))
            self._schema_bytes = schema_bytes
            self._has_dictionaries = any(_has_dictionary(field.type) for field in self.schema)
        if self._has_dictionaries:
            self.exported = payload
            return read_batch(payload)
        body = self.exported = payload[end:]
        message = pa.ipc.read_message(pa.py_buffer(body))
        return pa.ipc.read_record_batch(message, self.schema)


def iter_frames(memory: memoryview, length: int) -> Iterator[tuple[int, int, int, memoryview]]:
    """Yield ``(kind, flags, event, payload)`` for every frame in ``memory[:length]``."""
    offset = 0
    while offset + HEADER.size <= length:
        size, kind, flags, event = HEADER.unpack_from(memory, offset)
        start = offset + HEADER.size
        yield kind, flags, event, memory[start : start + size]
        offset = _pad8(start + size)
