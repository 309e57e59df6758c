"""Barrier alignment on the input side of a task (Flink's CheckpointBarrierHandler).

A checkpoint is consistent when every operator snapshots its state after all records that
precede the barrier on *each* input channel, and before any record that follows it. In
exactly-once mode a channel that delivered barrier *n* is blocked (its buffers stay queued and
keep their credit, so only that producer is backpressured) until barrier *n* arrived on every
other channel; then the task snapshots and the channels are released. In at-least-once mode
nothing is blocked: the task snapshots when the last barrier arrives, so records that
overtook it on faster channels are in the snapshot *and* replayed after a failure.

A channel that reached its end of partition counts as having delivered every later barrier:
its producer finished and will send nothing more.

Example::

    >>> aligned = []
    >>> h = CheckpointBarrierHandler([2], exactly_once=True, on_aligned=aligned.append)
    >>> h.on_barrier(0, 0, Barrier(1, 0, 0))
    >>> h.blocked
    {(0, 0)}
    >>> h.on_barrier(0, 1, Barrier(1, 0, 0))
    >>> [b.checkpoint_id for b in aligned], h.blocked
    ([1], set())
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "Barrier",
    "CheckpointBarrierHandler",
    "FLAG_FINAL",
    "FLAG_SAVEPOINT",
    "FLAG_STOP",
    "FLAG_UNALIGNED",
]

_BARRIER = struct.Struct("<qqI")
FLAG_SAVEPOINT = 1  #: the barrier belongs to a savepoint
FLAG_UNALIGNED = 2  #: reserved for unaligned checkpoints
FLAG_STOP = 4  #: stop-with-savepoint: sources emit nothing after this barrier
FLAG_FINAL = 8  #: the final checkpoint of a bounded job (see SubtaskCheckpointCoordinator)


class Barrier(NamedTuple):
    """A checkpoint barrier; it carries where the checkpoint's files go."""

    checkpoint_id: int
    timestamp: int
    flags: int
    location: str = ""

    def encode(self) -> bytes:
        header = _BARRIER.pack(self.checkpoint_id, self.timestamp, self.flags)
        return header + self.location.encode()

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> Barrier:
        cid, ts, flags = _BARRIER.unpack_from(payload, 0)
        return cls(cid, ts, flags, bytes(payload[_BARRIER.size :]).decode())


class CheckpointBarrierHandler:
    """Tracks barriers over all channels of all input gates of one task.

    ``channels_per_gate`` gives the number of channels of each gate; channels are named
    ``(gate index, channel index)``. The task blocks and unblocks the gates' channels as
    :attr:`blocked` says (see :meth:`take_unblocked`).
    """

    def __init__(
        self,
        channels_per_gate: list[int],
        exactly_once: bool,
        on_aligned: Callable[[Barrier], None],
    ) -> None:
        self.all_channels = {(g, c) for g, n in enumerate(channels_per_gate) for c in range(n)}
        self.exactly_once = exactly_once
        self.on_aligned = on_aligned
        self.ended: set[tuple[int, int]] = set()
        self.current: Barrier | None = None
        self.received: set[tuple[int, int]] = set()
        self.blocked: set[tuple[int, int]] = set()
        self._released: set[tuple[int, int]] = set()
        self.last_done = 0  #: newest checkpoint id aligned or given up

    def on_barrier(self, gate: int, channel: int, barrier: Barrier) -> None:
        cid = barrier.checkpoint_id
        if cid <= self.last_done:
            return  # an aborted or already handled checkpoint: ignore late barriers
        if self.current is None or cid > self.current.checkpoint_id:
            if self.current is not None:
                # A newer barrier overtook an unfinished alignment: that checkpoint cannot
                # complete any more (Flink aborts it the same way).
                self._release_all()
            self.current = barrier
            self.received = set()
        self.received.add((gate, channel))
        if self.exactly_once:
            self.blocked.add((gate, channel))
        self._check_complete()

    def on_end_of_partition(self, gate: int, channel: int) -> None:
        self.ended.add((gate, channel))
        if self.current is not None:
            self._check_complete()

    def abort(self, checkpoint_id: int) -> bool:
        """Give up aligning ``checkpoint_id`` (the JobManager aborted it); True if it was on."""
        self.last_done = max(self.last_done, checkpoint_id)
        if self.current is not None and self.current.checkpoint_id <= checkpoint_id:
            self._release_all()
            self.current = None
            return True
        return False

    def take_unblocked(self) -> set[tuple[int, int]]:
        """Channels released since the last call (the task unblocks them in its gates)."""
        released, self._released = self._released, set()
        return released

    @property
    def aligning(self) -> bool:
        return self.current is not None

    def _check_complete(self) -> None:
        if self.all_channels <= (self.received | self.ended):
            barrier = self.current
            assert barrier is not None
            self._release_all()
            self.current = None
            self.last_done = barrier.checkpoint_id
            self.on_aligned(barrier)

    def _release_all(self) -> None:
        self._released |= self.blocked
        self.blocked = set()
        self.received = set()
