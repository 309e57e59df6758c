"""The sending side: a ResultPartition with one ResultSubpartition per consumer channel.

A subpartition fills buffers of its own LocalBufferPool with frames, queues
full (or flushed) buffers, and hands them to the consumer only against credit,
announcing its backlog each time. When its pool is empty the producing
operator blocks in :meth:`ResultSubpartition._request_buffer` -- that is
backpressure -- while the task keeps serving doorbell and control messages
through the ``wait`` callback, so recycled buffers and cancellation still get
through.

Buffers are kept full: a batch that does not fit the free space of the current
buffer is cut by rows, the first part filling the buffer. A batch too large for
one segment is instead written whole into a buffer that spans contiguous
segments of the subpartition (see :meth:`ResultSubpartition._add_spanning`):
one Arrow write, one DATA message, one frame to decode, and it costs one credit
per segment it spans; the producer takes such a buffer when its segments are free
and never waits for a run of them. The batches of a channel form one Arrow IPC
stream (:class:`~flowrun.network.frames.ChannelStream`), so the schema is written
once per channel. DATA messages are only posted while
a call works and written together when it returns (or before it waits).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import pyarrow as pa

from .buffer_pool import LocalBufferPool, NetworkBufferPool
from .doorbell import DoorbellWriter, Kind
from .frames import (
    FIRST,
    HEADER,
    BufferBuilder,
    ChannelStream,
    SchemaInfo,
    fit_rows,
    record_batch_size,
    schema_info,
    serialize_stream,
)

__all__ = ["ResultSubpartition", "ResultPartition", "BackpressureStats"]

#: a batch is sliced into the free space of a partly filled buffer only if that
#: space is at least 1/16 of the buffer; below, the buffer is handed over as is
_MIN_SLICE_SHIFT = 4
#: a buffer with less free space than this is handed over at once
_FINISH_BELOW = 512 + 8


class BackpressureStats:
    """Time a task spent blocked waiting for a free output buffer."""

    __slots__ = ("blocked_ns", "waits")

    def __init__(self) -> None:
        self.blocked_ns = 0
        self.waits = 0


class ResultSubpartition:
    """One producer -> consumer channel on the producer's side."""

    def __init__(
        self,
        pool: NetworkBufferPool,
        local_pool: LocalBufferPool,
        peer: DoorbellWriter,
        peer_channel: int,
        initial_credit: int,
        wait: Callable[[], None],
        stats: BackpressureStats,
        stream: ChannelStream | None = None,
        poll: Callable[[], object] | None = None,
    ) -> None:
        self._pool = pool
        self._stream = stream
        self._poll = poll
        self.local_pool = local_pool
        self._peer = peer
        self._peer_channel = peer_channel
        self.credit = initial_credit
        self._wait = wait
        self._stats = stats
        self._queue: deque[tuple[int, int]] = deque()
        #: segments of the buffers in ``_queue`` (the backlog announced to the consumer)
        self._queued_segments = 0
        #: the backlog the consumer was last told of
        self._announced = 0
        #: buffers spanning several segments handed over and not yet recycled
        self._spans_out = 0
        self._segment = pool.segment_size
        #: most segments one buffer may span: a buffer of k segments needs k credits at
        #: once, and only the exclusive credits are sure to come back; its segments must
        #: be consecutive buffers of this subpartition
        self._max_span = min(initial_credit, local_pool.longest_run())
        self._current: BufferBuilder | None = None
        self._current_index = -1
        self.buffers_sent = 0
        self.bytes_sent = 0

    # -- producing ------------------------------------------------------------
    def _request_buffer(self, segments: int = 1) -> bool:
        """Start a new current buffer of ``segments`` contiguous segments (see
        :meth:`_take_run`); False, and nothing taken, when no run of them is free."""
        index = self._take_run(segments)
        if index is None:
            return False
        segment = self._segment
        self._current = BufferBuilder(
            self._pool.region(index, segments * segment), self._stream, index * segment
        )
        self._current_index = index
        return True

    def _take_run(self, segments: int) -> int | None:
        """Take ``segments`` contiguous free segments from the local pool: their first index.

        Waits, as backpressure, while no buffer at all is free. A run of several
        segments is not waited for -- a consumer may keep some buffers for long (an
        operator holding zero-copy batches), so the free ones need not ever form a
        run -- None then, and nothing is taken.
        """
        if self._queue and self._poll is not None:
            # buffers wait for credit: take in the recycles and credits that arrived
            # meanwhile, so that they go out now rather than after this batch
            self._poll()
        local_pool = self.local_pool
        index = local_pool.request_run(segments)
        if index is None:
            if not local_pool.num_available:
                self._announce_backlog()
                self._peer.flush()  # the consumer must learn of every queued buffer first
                start = time.perf_counter_ns()
                self._stats.waits += 1
                while not local_pool.num_available:
                    self._wait()
                self._stats.blocked_ns += time.perf_counter_ns() - start
            index = local_pool.request_run(segments)
        return index

    def _finish_current(self) -> None:
        current = self._current
        if current is not None and not current.is_empty():
            current.close()
            length = current.offset
            self._queue.append((self._current_index, length))
            self._queued_segments += 1 if length <= self._segment else -(-length // self._segment)
            self._current = None
            self._current_index = -1

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Serialise ``batch`` into this channel's buffers, keeping them full.

        A batch that does not fit the free space of the current buffer is
        sliced: the rows that fit fill the buffer, the rest go on in the next
        one. A single row larger than a buffer travels as fragments.
        """
        self._add_batch(batch)
        self._peer.flush()

    def _add_batch(self, batch: pa.RecordBatch) -> None:
        info = schema_info(batch.schema)
        if info.has_dictionaries:
            self._add_stream_batch(batch)
            return
        size = record_batch_size(batch)
        current = self._current
        if current is not None and size <= current.space_for(info):
            current.append_batch(batch, info, size)
            if current.capacity - current.offset < _FINISH_BELOW:
                self._finish_current()
                self._send_queued()
            return
        if self._max_span > 1:
            if self._add_spanning(batch, info, size):
                return
            current = self._current  # it may have handed the current buffer over
        while True:
            if current is None:
                self._request_buffer()
                current = self._current
            space = current.space_for(info)
            if size <= space:
                current.append_batch(batch, info, size)
                if current.capacity - current.offset < _FINISH_BELOW:
                    self._finish_current()
                    self._send_queued()
                return
            empty = current.offset == 0
            if empty or space >= current.capacity >> _MIN_SLICE_SHIFT:
                rows, head_size = fit_rows(batch, size, space, info)
                if rows:
                    current.append_batch(batch.slice(0, rows), info, head_size)
                    batch = batch.slice(rows)
                    size = record_batch_size(batch)
                elif empty:  # a single row larger than a buffer
                    if batch.num_rows <= 1:
                        self._add_fragmented(batch)
                        return
                    self._add_fragmented(batch.slice(0, 1))
                    batch = batch.slice(1)
                    size = record_batch_size(batch)
                    current = self._current
                    continue
            self._finish_current()
            self._send_queued()
            current = None

    def _add_spanning(self, batch: pa.RecordBatch, info: SchemaInfo, size: int) -> bool:
        """Write a batch too large for one segment whole into a buffer spanning contiguous
        segments, and hand it over at once; False (the batch is not written) if it fits
        one segment, needs more segments than a buffer may span, or no run of free
        segments is left.

        Why: cutting it by rows instead costs a size search, slices and a second Arrow
        write on this side and a second frame on the consumer's, per batch. The free
        tail of the last segment is given up -- the next batch of such a size would not
        fit it -- and the current buffer is handed over first, as it is when full.
        """
        stream = self._stream
        need = HEADER.size + size
        if stream is None or not stream.matches(info):
            need += info.message_size
        segment = self._segment
        if need <= segment:
            return False
        segments = -(-need // segment)
        current = self._current
        if segments > self._max_span or (current is not None and current.is_empty()):
            return False  # an empty current buffer is filled by cutting, as before
        if current is not None:
            self._finish_current()
            self._send_queued()
        if stream is not None:
            index = self._take_run(segments)
            if index is None:
                return False  # free buffers, but no run of them: cut the batch as usual
            # the span is written and queued directly, without a BufferBuilder: it takes
            # this one frame and is handed over at once
            self._write_span(index, segments, stream, batch, info, size)
            return True
        if not self._request_buffer(segments):
            return False  # free buffers, but no run of them: cut the batch as usual
        current = self._current
        current.append_batch(batch, info, size)
        self._finish_current()
        self._send_queued()
        return True

    def _write_span(
        self,
        index: int,
        segments: int,
        stream: ChannelStream,
        batch: pa.RecordBatch,
        info: SchemaInfo,
        size: int,
    ) -> None:
        """Write ``batch`` as the one frame of the span of ``segments`` from ``index``
        (taken from the local pool), queue the span and send what credit allows."""
        start = index * self._segment
        try:
            length = stream.write_frame(self._pool.memory, start, 0, batch, info, size) - start
        except BaseException:
            self.local_pool.recycle_run(index, segments)
            raise
        self._queue.append((index, length))
        self._queued_segments += segments
        self._send_queued()
        if self._queue:
            # no credit for it: ask for floating credit now (Flink's backlog announcement
            # at zero credit), or the span waits for the last one's round trip
            self._announce_backlog()

    def _add_stream_batch(self, batch: pa.RecordBatch) -> None:
        """Batches with dictionaries: one complete stream per frame, halved when too big."""
        if self._current is None:
            self._request_buffer()
        if self._current.write_batch(batch):
            self._on_written()
            return
        if not self._current.is_empty():
            self._finish_current()
            self._send_queued()
            self._request_buffer()
            if self._current.write_batch(batch):
                self._on_written()
                return
        if batch.num_rows > 1:
            half = batch.num_rows // 2
            self._add_stream_batch(batch.slice(0, half))
            self._add_stream_batch(batch.slice(half))
        else:
            self._add_fragmented(batch)

    def _add_fragmented(self, batch: pa.RecordBatch) -> None:
        data = memoryview(serialize_stream(batch)).cast("B")
        flags = FIRST
        while len(data):
            if self._current is None:
                self._request_buffer()
            written = self._current.write_fragment(data, flags)
            data = data[written:]
            flags = 0
            self._finish_current()
            self._send_queued()

    def _on_written(self) -> None:
        if self._current.capacity - self._current.offset < _FINISH_BELOW:
            self._finish_current()
            self._send_queued()

    def add_event(self, event: int, payload: bytes = b"") -> None:
        """Append an event in order with the data and flush it out."""
        if self._current is None:
            self._request_buffer()
        if not self._current.write_event(event, payload):
            self._finish_current()
            self._request_buffer()
            self._current.write_event(event, payload)
        self.flush()

    def flush(self) -> None:
        """Hand over the partly filled buffer (buffer timeout, latency mode, events)."""
        self._finish_current()
        self._send_queued()
        self._announce_backlog()
        self._peer.flush()

    def snapshot_in_flight(self) -> list[bytes]:
        """Copies of every buffer not yet handed to the consumer (an unaligned checkpoint's
        output channel state); they stay queued and go out after the priority barrier."""
        self._finish_current()
        pool = self._pool
        return [bytes(pool.region(index, length)) for index, length in self._queue]

    def post_priority_barrier(self, checkpoint_id: int) -> None:
        """Tell the consumer about barrier ``checkpoint_id`` ahead of the queued buffers."""
        self._peer.post(
            Kind.PRIORITY_BARRIER,
            self._peer_channel,
            checkpoint_id & 0xFFFFFFFF,
            checkpoint_id >> 32,
            0,
        )
        self._peer.flush()

    def has_pending(self) -> bool:
        return self._current is not None and not self._current.is_empty()

    # -- credit ---------------------------------------------------------------
    def _send_queued(self) -> None:
        """Hand over queued buffers while credit lasts: one credit per segment, and the
        backlog announced is the segments still queued."""
        queue = self._queue
        segment = self._segment
        while queue:
            index, length = queue[0]
            segments = 1 if length <= segment else -(-length // segment)
            if self.credit < segments:
                return
            queue.popleft()
            self.credit -= segments
            self._queued_segments -= segments
            if segments > 1:
                self._spans_out += 1
            self.buffers_sent += 1
            self.bytes_sent += length
            self._peer.post(Kind.DATA, self._peer_channel, index, length, self._queued_segments)
            self._announced = self._queued_segments

    def _announce_backlog(self) -> None:
        """Tell the consumer of buffers queued for lack of credit that no DATA announced.

        Why: the backlog normally travels with DATA messages, and floating credits are
        granted against it. A channel whose credits are all held by its consumer sends
        no DATA, so it would wait for good: an operator keeping zero-copy batches keeps
        their buffers, and while one single-segment buffer leaves the second exclusive
        credit free for the next buffer, a kept spanning buffer can hold them all, and
        a queued spanning buffer needs more than the one left. So this is only sent
        while spanning buffers are out or queued, and only where the producer is about
        to wait (no free buffer, or a flush that left buffers queued): the hot path
        sends none, and channels of single-segment buffers behave as before (an
        announcement per wait cost 2-15% at 64 KiB segments with 1 MiB batches,
        where the producer waits within every batch).
        """
        queue = self._queue
        if not queue or self._queued_segments <= self._announced:
            return
        if self._spans_out or queue[0][1] > self._segment:
            self._announced = self._queued_segments
            self._peer.post(Kind.BACKLOG, self._peer_channel, 0, 0, self._queued_segments)

    def on_recycle(self, index: int, credit: int, segments: int = 1) -> None:
        self._on_recycle(index, credit, segments)
        self._peer.flush()

    def _on_recycle(self, index: int, credit: int, segments: int = 1) -> None:
        """:meth:`on_recycle` leaving DATA messages pending (the caller flushes the peer).

        ``segments``: how many segments buffer ``index`` spans (from ``index`` on).
        """
        if segments > 1:
            self._spans_out -= 1
        self.local_pool.recycle_run(index, segments)
        if credit:
            self.credit += credit
            self._send_queued()

    def on_credit(self, credit: int) -> None:
        self._on_credit(credit)
        self._peer.flush()

    def _on_credit(self, credit: int) -> None:
        self.credit += credit
        self._send_queued()

    @property
    def backlog(self) -> int:
        """Segments of the buffers queued for credit."""
        return self._queued_segments

    def close(self) -> None:
        """Drop the Arrow writers (they reference shared memory)."""
        if self._current is not None:
            self._current.close()
        if self._stream is not None:
            self._stream.reset()

    def all_buffers_returned(self) -> bool:
        return self.local_pool.num_available == self.local_pool.size


class ResultPartition:
    """The output of one edge of a task: one subpartition per consumer subtask."""

    def __init__(self, subpartitions: list[ResultSubpartition]) -> None:
        self.subpartitions = subpartitions

    def broadcast_event(self, event: int, payload: bytes = b"") -> None:
        for sub in self.subpartitions:
            sub.add_event(event, payload)

    def flush_all(self) -> None:
        for sub in self.subpartitions:
            if sub.has_pending():
                sub.flush()
