"""In-flight data of channels, captured by unaligned checkpoints and replayed on restore.

An unaligned checkpoint lets the barrier overtake the buffers queued in a channel; those
buffers are then part of the checkpoint instead of being waited for. Two sides hold them:
the consumer (buffers already handed over but not yet processed, and everything that arrives
on a channel between the task's snapshot and that channel's barrier) and the producer
(buffers still waiting for credit). Each side stores, per channel, the raw buffer bytes in
channel order plus -- on the consumer side -- the channel's decoding state at the snapshot
(schema in effect, a row split into fragments half received). Concatenating the consumer's
and then the producer's buffers of a channel and decoding them from that state yields the
record batches in flight, in order.

A third kind of entry, ``PENDING``, holds rows the consumer had already decoded from
recycled buffers but not yet processed when the barrier overtook them (a buffer of small
records can take its slow operator seconds to work through; Flink likewise persists the
unconsumed part of its deserializer's current buffer). Its single "buffer" is a complete
Arrow IPC stream; it is replayed before every channel of its consumer.

The file format is a plain length-prefixed binary layout (nothing is unpickled)::

    b"FRCS" u32 version  u32 entries
    per entry: u32 edge  u32 consumer subtask  u32 channel  u8 side (0 consumer, 1 producer)
               bytes schema  u32 n_fragments  bytes*  u32 n_buffers  bytes*
    where bytes = u32 length + data

Example::

    >>> entry = ChannelStateEntry(edge=0, consumer=1, channel=2, side=PRODUCER, buffers=[b"x"])
    >>> decode_entries(encode_entries([entry])) == [entry]
    True
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pyarrow as pa

from .frames import FrameKind
from .input_gate import ChannelReadState, read_frames

__all__ = [
    "CONSUMER",
    "PENDING",
    "PRODUCER",
    "ChannelStateEntry",
    "ChannelStateError",
    "decode_entries",
    "encode_entries",
    "replay_batches",
]

CONSUMER = 0
PRODUCER = 1
PENDING = 2
_MAGIC = b"FRCS"
_VERSION = 1
_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<IIIB")


class ChannelStateError(ValueError):
    """A channel-state file is damaged or of an unknown version."""


@dataclass
class ChannelStateEntry:
    edge: int  #: JobEdge index
    consumer: int  #: consumer subtask index (in the job that wrote the checkpoint)
    channel: int  #: the consumer's channel number of this producer
    side: int  #: CONSUMER, PRODUCER or PENDING
    schema: bytes = b""  #: consumer side: schema message in effect at the snapshot
    fragments: list[bytes] | None = None  #: consumer side: a row's fragments received so far
    buffers: list[bytes] = field(default_factory=list)


def _put_bytes(out: list[bytes], data: bytes) -> None:
    out.append(_U32.pack(len(data)))
    out.append(data)


def encode_entries(entries: list[ChannelStateEntry]) -> bytes:
    out = [_MAGIC, _U32.pack(_VERSION), _U32.pack(len(entries))]
    for e in entries:
        out.append(_HEAD.pack(e.edge, e.consumer, e.channel, e.side))
        _put_bytes(out, e.schema)
        fragments = e.fragments
        out.append(_U32.pack(0xFFFFFFFF if fragments is None else len(fragments)))
        for fragment in fragments or ():
            _put_bytes(out, fragment)
        out.append(_U32.pack(len(e.buffers)))
        for buffer in e.buffers:
            _put_bytes(out, buffer)
    return b"".join(out)


def decode_entries(data: bytes | memoryview | pa.Buffer) -> list[ChannelStateEntry]:
    view = memoryview(data)
    if bytes(view[:4]) != _MAGIC:
        raise ChannelStateError("not a flowrun channel-state file")
    offset = 4

    def u32() -> int:
        nonlocal offset
        (value,) = _U32.unpack_from(view, offset)
        offset += 4
        return value

    def blob() -> bytes:
        nonlocal offset
        n = u32()
        if offset + n > len(view):
            raise ChannelStateError("channel-state file is truncated")
        out = bytes(view[offset : offset + n])
        offset += n
        return out

    try:
        version = u32()
        if version != _VERSION:
            raise ChannelStateError(f"channel-state format version {version} is not supported")
        entries = []
        for _ in range(u32()):
            edge, consumer, channel, side = _HEAD.unpack_from(view, offset)
            offset += _HEAD.size
            schema = blob()
            n_fragments = u32()
            fragments = None if n_fragments == 0xFFFFFFFF else [blob() for _ in range(n_fragments)]
            buffers = [blob() for _ in range(u32())]
            entries.append(
                ChannelStateEntry(edge, consumer, channel, side, schema, fragments, buffers)
            )
    except struct.error as exc:
        raise ChannelStateError(f"channel-state file is truncated: {exc}") from None
    return entries


def replay_batches(entries: list[ChannelStateEntry]) -> list[tuple[int, list[pa.RecordBatch]]]:
    """Per old (consumer, channel): the record batches in flight, in channel order.

    Returns ``[(old consumer subtask, batches), ...]``; events in the buffers (end of
    partition, barriers) are skipped -- they are re-created by the restored job.
    """
    by_channel: dict[tuple[int, int], list[ChannelStateEntry]] = {}
    result = []
    for entry in entries:
        if entry.side == PENDING:  # decoded before the barrier: precedes every channel
            batches = [b for data in entry.buffers for b in pa.ipc.open_stream(data)]
            result.append((entry.consumer, batches))
        else:
            by_channel.setdefault((entry.consumer, entry.channel), []).append(entry)
    for (consumer, _channel), parts in sorted(by_channel.items()):
        parts.sort(key=lambda e: e.side)  # consumer-side buffers were sent first
        head = parts[0]
        state = ChannelReadState(
            head.schema if head.side == CONSUMER else b"",
            head.fragments if head.side == CONSUMER else None,
        )
        batches = []
        for part in parts:
            for buffer in part.buffers:
                for kind, batch, _event, _payload in read_frames(state, memoryview(buffer), True):
                    if kind == FrameKind.BATCH:
                        batches.append(batch)
        result.append((consumer, batches))
    return result
