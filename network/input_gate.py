"""The receiving side: an InputGate with one InputChannel per producer subtask.

Buffers announced by DATA doorbell messages queue per channel; the task takes
them round-robin across channels (so one busy producer cannot starve the
others), reads their frames zero-copy, and recycles each buffer once the
operator chain is done with it. Recycling returns the credit decided by the
gate's :class:`~flowrun.network.credit.CreditLedger`, one decision per segment:
a buffer longer than a segment spans the segments after its own, took one
credit per segment, and its RECYCLE message says how many it frees.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import pyarrow as pa

from .buffer_pool import NetworkBufferPool
from .credit import CreditLedger
from .doorbell import DoorbellWriter, Kind
from .frames import FIRST, HEADER, LAST, BatchReader, FrameKind, read_batch

__all__ = ["ChannelReadState", "InputChannel", "InputGate", "read_frames"]

_BATCH = FrameKind.BATCH
_BATCH_BODY = FrameKind.BATCH_BODY
_EVENT = FrameKind.EVENT
_FRAGMENT = FrameKind.FRAGMENT


class InputChannel:
    """The consumer's view of one producer subpartition."""

    __slots__ = (
        "index",
        "peer",
        "peer_subpartition",
        "queue",
        "ended",
        "data_ended",
        "fragments",
        "in_ready",
        "batches",
        "blocked",
    )

    def __init__(self, index: int, peer: DoorbellWriter, peer_subpartition: int) -> None:
        self.index = index
        self.peer = peer
        self.peer_subpartition = peer_subpartition
        self.queue: deque[tuple[int, int]] = deque()
        self.ended = False
        #: END_OF_DATA received: only barriers and the end of partition follow
        self.data_ended = False
        self.fragments: list[bytes] | None = None
        self.in_ready = False
        self.batches = BatchReader()  #: the channel's schema, parsed once
        #: held back by checkpoint barrier alignment: its buffers queue but are not polled
        self.blocked = False


class InputGate:
    """All channels of one input of a task."""

    def __init__(
        self,
        pool: NetworkBufferPool,
        channels: list[InputChannel],
        exclusive_credits: int,
        floating_credits: int,
    ) -> None:
        self._pool = pool
        self.channels = channels
        self.ledger = CreditLedger(len(channels), exclusive_credits, floating_credits)
        self._ready: deque[InputChannel] = deque()
        self.buffers_received = 0
        self.bytes_received = 0
        #: unaligned checkpoint barriers that arrived ahead of data:
        #: (channel, checkpoint id, buffers of the channel queued before the barrier)
        self.priority_barriers: list[tuple[int, int, int]] = []
        #: the distinct doorbell writers of the channels' producers
        self._peers: list[DoorbellWriter] = list({id(ch.peer): ch.peer for ch in channels}.values())
        #: segments of the buffers handed out by :meth:`poll` that span more than one
        self._spans: dict[int, int] = {}

    # -- doorbell -------------------------------------------------------------
    def on_data(self, channel: int, buffer: int, length: int, backlog: int) -> None:
        self._on_data(channel, buffer, length, backlog)
        self._flush_peers()

    def _on_data(self, channel: int, buffer: int, length: int, backlog: int) -> None:
        """:meth:`on_data` leaving CREDIT messages pending (the caller flushes)."""
        ch = self.channels[channel]
        ch.queue.append((buffer, length))
        if not ch.in_ready and not ch.blocked:
            ch.in_ready = True
            self._ready.append(ch)
        self._on_backlog(channel, backlog)

    def _on_backlog(self, channel: int, backlog: int) -> None:
        """A backlog announced by ``channel``'s producer: post the floating credits it wins."""
        for target, n in self.ledger.on_backlog(channel, backlog):
            peer = self.channels[target]
            peer.peer.post(Kind.CREDIT, peer.peer_subpartition, 0, 0, n)

    def _flush_peers(self) -> None:
        for peer in self._peers:
            peer.flush()

    # -- barrier alignment ------------------------------------------------------
    def block(self, channel: int) -> None:
        """Stop handing out ``channel``'s buffers (it delivered the barrier being aligned).

        Its queued buffers keep their credit, so the producer is backpressured on this
        channel alone -- exactly Flink's aligned checkpoint.
        """
        ch = self.channels[channel]
        ch.blocked = True
        if ch.in_ready:
            ch.in_ready = False
            self._ready = deque(c for c in self._ready if c is not ch)

    def unblock(self, channel: int) -> None:
        ch = self.channels[channel]
        if ch.blocked:
            ch.blocked = False
            if ch.queue and not ch.in_ready:
                ch.in_ready = True
                self._ready.append(ch)

    def unblock_all(self) -> None:
        for ch in self.channels:
            self.unblock(ch.index)

    def queued_bytes(self, channel: int, count: int) -> list[bytes]:
        """Copies of the first ``count`` buffers queued on ``channel`` (in-flight data)."""
        pool = self._pool
        queue = self.channels[channel].queue
        return [bytes(pool.region(*queue[i])) for i in range(count)]

    # -- consuming ------------------------------------------------------------
    def has_data(self) -> bool:
        return bool(self._ready)

    def poll(self) -> tuple[int, int, memoryview] | None:
        """The next buffer ``(channel, buffer index, memory)``, or None if none is queued."""
        if not self._ready:
            return None
        ch = self._ready.popleft()
        buffer, length = ch.queue.popleft()
        if ch.queue:
            self._ready.append(ch)
        else:
            ch.in_ready = False
        self.buffers_received += 1
        self.bytes_received += length
        pool = self._pool
        if length > pool.segment_size:
            self._spans[buffer] = pool.segments(length)
        return ch.index, buffer, pool.region(buffer, length)

    def recycle(self, channel: int, buffer: int) -> None:
        """Give ``buffer`` back to its producer with the credit the ledger decides."""
        ch = self.channels[channel]
        ledger = self.ledger
        segments = self._spans.pop(buffer, 1) if self._spans else 1
        if segments == 1:
            ch.peer.post(Kind.RECYCLE, ch.peer_subpartition, buffer, 0, ledger.on_recycle(channel))
        else:
            credit = sum(ledger.on_recycle(channel) for _ in range(segments))
            ch.peer.post(Kind.RECYCLE, ch.peer_subpartition, buffer, segments, credit)
        grants = ledger.redistribute()
        if not grants:
            ch.peer.flush()
            return
        for target, n in grants:
            peer = self.channels[target]
            peer.peer.post(Kind.CREDIT, peer.peer_subpartition, 0, 0, n)
        self._flush_peers()

    def read(
        self, channel: int, memory: memoryview, copy: bool = False
    ) -> Iterator[tuple[int, pa.RecordBatch | None, int, memoryview | None]]:
        """Decode the frames of a buffer of ``channel`` (see :func:`read_frames`)."""
        return read_frames(self.channels[channel], memory, copy)

    def all_ended(self) -> bool:
        return all(ch.ended for ch in self.channels)

    def all_data_ended(self) -> bool:
        """No channel will deliver records any more (end of data or of partition)."""
        return all(ch.data_ended or ch.ended for ch in self.channels)


def read_frames(
    ch: InputChannel | ChannelReadState, memory: memoryview, copy: bool = False
) -> Iterator[tuple[int, pa.RecordBatch | None, int, memoryview | None]]:
    """Decode the frames of a buffer into ``(kind, batch, event, payload)`` items.

    A batch is read zero-copy from the shared buffer and its ``payload`` is the
    memoryview its Arrow buffers were exported from: as long as any Arrow object
    still references the batch, ``payload.release()`` raises BufferError, so the
    task can tell whether the buffer may be recycled. With ``copy`` the frame is
    copied to ordinary memory first (payload None). Fragments are reassembled in
    ordinary memory. Events reference the shared buffer until it is recycled.
    ``ch`` carries the channel's decoding state (schema, partial fragments).
    """
    batches = ch.batches
    unpack = HEADER.unpack_from
    length = len(memory)
    offset = 0
    while offset + 8 <= length:
        size, kind, flags, event = unpack(memory, offset)
        start = offset + 8
        offset = (start + size + 7) & ~7
        if kind == _BATCH_BODY or kind == _BATCH:
            if copy:
                frame = memoryview(bytes(memory[start : start + size]))
                yield _BATCH, batches.read(kind, frame), 0, None
            else:
                batch = batches.read(kind, memory[start : start + size])
                yield _BATCH, batch, 0, batches.exported
        elif kind == _EVENT:
            yield _EVENT, None, event, memory[start : start + size]
        elif kind == _FRAGMENT:
            if flags & FIRST:
                ch.fragments = []
            ch.fragments.append(bytes(memory[start : start + size]))
            if flags & LAST:
                data = pa.py_buffer(b"".join(ch.fragments))
                ch.fragments = None
                yield _BATCH, read_batch(data), 0, None
        else:
            raise RuntimeError(f"unknown frame kind {kind}")


class ChannelReadState:
    """Decoding state of a channel outside a gate (replay of checkpointed channel state)."""

    __slots__ = ("batches", "fragments")

    def __init__(self, schema_bytes: bytes = b"", fragments: list[bytes] | None = None) -> None:
        self.batches = BatchReader()
        if schema_bytes:
            self.batches.prime(schema_bytes)
        self.fragments = fragments
