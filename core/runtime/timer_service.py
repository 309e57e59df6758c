"""Keyed timers: Flink's InternalTimerService for ``KeyedProcessFunction``.

A timer is ``(timestamp, key)`` in one of two time domains; registering the same
timer twice keeps one, as in Flink. Timers live per key group (so a snapshot of
a key-group range contains exactly its timers and restores at any parallelism)
and in a heap per domain for firing in timestamp order. Processing-time timers
fire from the subtask's mailbox loop when the wall clock passes them; event-time
timers fire when the watermark passes them (at the end of a bounded input the
watermark jumps to +inf, as Flink's MAX_WATERMARK does).

Example::

    >>> fired = []
    >>> timers = InternalTimerService(lambda: 1_000)
    >>> timers.register(TimeDomain.PROCESSING_TIME, 1_500, "k", 3)
    >>> timers.register(TimeDomain.PROCESSING_TIME, 1_500, "k", 3)   # same timer: kept once
    >>> timers.next_processing_time()
    1500
    >>> timers.fire_processing_time(2_000, lambda ts, key, kg, d: fired.append((ts, key)))
    >>> fired
    [(1500, 'k')]
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ..functions import TimeDomain

__all__ = ["InternalTimerService", "TimerServiceFacade", "TIMER_STATE_NAMES"]

TIMER_STATE_NAMES = {
    TimeDomain.PROCESSING_TIME: "_timer_state/processing",
    TimeDomain.EVENT_TIME: "_timer_state/event",
}
MAX_WATERMARK = 2**63 - 1
MIN_WATERMARK = -(2**63)


def processing_time_ms() -> int:
    return time.time_ns() // 1_000_000


class InternalTimerService:
    """Timers of one keyed operator in one subtask."""

    def __init__(self, clock: Callable[[], int] = processing_time_ms) -> None:
        self.clock = clock
        self.watermark = MIN_WATERMARK
        # per domain: set of (timestamp, key_group, key) and a heap of the same tuples
        self._timers: dict[TimeDomain, set] = {d: set() for d in TimeDomain}
        self._heaps: dict[TimeDomain, list] = {d: [] for d in TimeDomain}

    # -- registration --------------------------------------------------------------
    def register(self, domain: TimeDomain, timestamp: int, key: Any, key_group: int) -> None:
        entry = (int(timestamp), key_group, key)
        timers = self._timers[domain]
        if entry in timers:
            return
        timers.add(entry)
        heapq.heappush(self._heaps[domain], _HeapEntry(entry))

    def delete(self, domain: TimeDomain, timestamp: int, key: Any, key_group: int) -> None:
        # lazily removed from the heap when it reaches the top
        self._timers[domain].discard((int(timestamp), key_group, key))

    def __len__(self) -> int:
        return sum(len(t) for t in self._timers.values())

    # -- firing ----------------------------------------------------------------------
    def _peek(self, domain: TimeDomain) -> tuple | None:
        heap, timers = self._heaps[domain], self._timers[domain]
        while heap and heap[0].entry not in timers:
            heapq.heappop(heap)
        return heap[0].entry if heap else None

    def next_processing_time(self) -> int | None:
        top = self._peek(TimeDomain.PROCESSING_TIME)
        return None if top is None else top[0]

    def _fire(self, domain: TimeDomain, upto: int, callback: Callable) -> None:
        heap, timers = self._heaps[domain], self._timers[domain]
        while True:
            top = self._peek(domain)
            if top is None or top[0] > upto:
                return
            heapq.heappop(heap)
            timers.discard(top)
            timestamp, key_group, key = top
            callback(timestamp, key, key_group, domain)

    def fire_processing_time(self, now: int, callback: Callable) -> None:
        self._fire(TimeDomain.PROCESSING_TIME, now, callback)

    def advance_watermark(self, watermark: int, callback: Callable) -> None:
        if watermark > self.watermark:
            self.watermark = watermark
        self._fire(TimeDomain.EVENT_TIME, watermark, callback)

    # -- snapshots ---------------------------------------------------------------------
    def snapshot(self, key_serializer: Any) -> list[pa.RecordBatch]:
        """One batch per domain: ``key_group, key, timestamp`` (keys in canonical bytes)."""
        out = []
        for domain, timers in self._timers.items():
            entries = sorted(timers, key=lambda e: (e[1], e[0]))
            out.append(
                pa.record_batch(
                    [
                        pa.array([e[1] for e in entries], pa.int32()),
                        pa.array([key_serializer.serialize(e[2]) for e in entries], pa.binary()),
                        pa.array([e[0] for e in entries], pa.int64()),
                    ],
                    schema=pa.schema(
                        [
                            ("key_group", pa.int32()),
                            ("key", pa.binary()),
                            ("timestamp", pa.int64()),
                        ],
                        metadata={"state": TIMER_STATE_NAMES[domain]},
                    ),
                )
            )
        return out

    def restore(self, batches: list[pa.RecordBatch], key_serializer: Any, key_groups: Any) -> None:
        """Add the timers of ``batches`` whose key group lies in ``key_groups``."""
        names = {v: k for k, v in TIMER_STATE_NAMES.items()}
        for batch in batches:
            domain = names[batch.schema.metadata[b"state"].decode()]
            for kg, key, ts in zip(
                batch.column(0).to_pylist(),
                batch.column(1).to_pylist(),
                batch.column(2).to_pylist(),
                strict=True,
            ):
                if kg in key_groups:
                    self.register(domain, ts, key_serializer.deserialize(key), kg)


class _HeapEntry:
    """Orders heap entries by timestamp only (keys of mixed types need not compare)."""

    __slots__ = ("entry",)

    def __init__(self, entry: tuple) -> None:
        self.entry = entry

    def __lt__(self, other: _HeapEntry) -> bool:
        return self.entry[0] < other.entry[0]


class TimerServiceFacade:
    """The ``TimerService`` user functions see: scoped to the operator's current key."""

    __slots__ = ("_service", "_keyed")

    def __init__(self, service: InternalTimerService, keyed: Any) -> None:
        self._service = service
        self._keyed = keyed  # has .current_key and .current_key_group

    def current_processing_time(self) -> int:
        return self._service.clock()

    def current_watermark(self) -> int:
        return self._service.watermark

    def register_processing_time_timer(self, timestamp: int) -> None:
        k = self._keyed
        self._service.register(
            TimeDomain.PROCESSING_TIME, timestamp, k.current_key, k.current_key_group
        )

    def register_event_time_timer(self, timestamp: int) -> None:
        k = self._keyed
        self._service.register(TimeDomain.EVENT_TIME, timestamp, k.current_key, k.current_key_group)

    def delete_processing_time_timer(self, timestamp: int) -> None:
        k = self._keyed
        self._service.delete(
            TimeDomain.PROCESSING_TIME, timestamp, k.current_key, k.current_key_group
        )

    def delete_event_time_timer(self, timestamp: int) -> None:
        k = self._keyed
        self._service.delete(TimeDomain.EVENT_TIME, timestamp, k.current_key, k.current_key_group)
