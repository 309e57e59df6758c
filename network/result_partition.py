"""The sending side: a ResultPartition with one ResultSubpartition per consumer channel.

A subpartition fills buffers of its own LocalBufferPool with frames, queues
full (or flushed) buffers, and hands them to the consumer only against credit,
announcing its backlog each time. When its pool is empty the producing
operator blocks in :meth:`ResultSubpartition._request_buffer` -- that is
backpressure -- while the task keeps serving doorbell and control messages
through the ``wait`` callback, so recycled buffers and cancellation still get
through.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import pyarrow as pa

from .buffer_pool import LocalBufferPool, NetworkBufferPool
from .doorbell import DoorbellWriter, Kind
from .frames import FIRST, BufferBuilder, ipc_stream_size, serialize_stream

__all__ = ["ResultSubpartition", "ResultPartition", "BackpressureStats"]


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
    ) -> None:
        self._pool = pool
        self.local_pool = local_pool
        self._peer = peer
        self._peer_channel = peer_channel
        self.credit = initial_credit
        self._wait = wait
        self._stats = stats
        self._queue: deque[tuple[int, int]] = deque()
        self._current: BufferBuilder | None = None
        self._current_index = -1
        self.buffers_sent = 0
        self.bytes_sent = 0

    # -- producing ------------------------------------------------------------
    def _request_buffer(self) -> None:
        index = self.local_pool.request()
        if index is None:
            start = time.perf_counter_ns()
            self._stats.waits += 1
            while index is None:
                self._wait()
                index = self.local_pool.request()
            self._stats.blocked_ns += time.perf_counter_ns() - start
        self._current = BufferBuilder(self._pool.buffer(index))
        self._current_index = index

    def _finish_current(self) -> None:
        if self._current is not None and not self._current.is_empty():
            self._queue.append((self._current_index, self._current.offset))
            self._current = None
            self._current_index = -1

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Serialise ``batch`` into this channel's buffers (slicing what does not fit)."""
        size = ipc_stream_size(batch)
        if self._current is None:
            self._request_buffer()
        if self._current.write_batch(batch, size):
            self._on_written()
            return
        if not self._current.is_empty():
            self._finish_current()
            self._send_queued()
            self._request_buffer()
            if self._current.write_batch(batch, size):
                self._on_written()
                return
        # Too big for an empty buffer: split by rows, or fragment a single row.
        if batch.num_rows > 1:
            half = batch.num_rows // 2
            self.add_batch(batch.slice(0, half))
            self.add_batch(batch.slice(half))
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
        if self._current.remaining_payload < 512:
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

    def has_pending(self) -> bool:
        return self._current is not None and not self._current.is_empty()

    # -- credit ---------------------------------------------------------------
    def _send_queued(self) -> None:
        queue = self._queue
        while queue and self.credit > 0:
            index, length = queue.popleft()
            self.credit -= 1
            self.buffers_sent += 1
            self.bytes_sent += length
            self._peer.send(Kind.DATA, self._peer_channel, index, length, len(queue))

    def on_recycle(self, index: int, credit: int) -> None:
        self.local_pool.recycle(index)
        if credit:
            self.credit += credit
            self._send_queued()

    def on_credit(self, credit: int) -> None:
        self.credit += credit
        self._send_queued()

    @property
    def backlog(self) -> int:
        return len(self._queue)

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
