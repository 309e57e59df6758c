"""One task's network stack, built from its deployment descriptor.

The JobManager decides the wiring (who talks to whom, which buffers each
subpartition owns); this module turns that plain data into result partitions,
input gates and doorbells inside the subtask process, and dispatches doorbell
messages to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .buffer_pool import LocalBufferPool, NetworkBufferPool, populate_for_writing
from .doorbell import DoorbellReader, DoorbellWriter, Kind
from .frames import ChannelStream
from .idle_wait import IdleWait
from .input_gate import InputChannel, InputGate
from .result_partition import BackpressureStats, ResultPartition, ResultSubpartition

_DATA = int(Kind.DATA)
_RECYCLE = int(Kind.RECYCLE)
_CREDIT = int(Kind.CREDIT)
_PRIORITY_BARRIER = int(Kind.PRIORITY_BARRIER)
_BACKLOG = int(Kind.BACKLOG)

__all__ = [
    "SubpartitionDescriptor",
    "ResultPartitionDescriptor",
    "ChannelDescriptor",
    "InputGateDescriptor",
    "NetworkDescriptor",
    "NetworkEnvironment",
]


@dataclass
class SubpartitionDescriptor:
    peer_task: int  #: global id of the consuming subtask
    peer_channel: int  #: index of the channel in the consumer's numbering
    buffers: list[int]  #: buffer indices of this subpartition's LocalBufferPool


@dataclass
class ResultPartitionDescriptor:
    edge: int
    subpartitions: list[SubpartitionDescriptor]


@dataclass
class ChannelDescriptor:
    peer_task: int  #: global id of the producing subtask
    peer_subpartition: int  #: index of the subpartition in the producer's numbering


@dataclass
class InputGateDescriptor:
    edge: int
    input_index: int  #: which input of the operator (0, or 1 for two-input operators)
    channels: list[ChannelDescriptor]


@dataclass
class NetworkDescriptor:
    num_buffers: int
    segment_size: int
    exclusive_credits: int
    floating_credits: int
    partitions: list[ResultPartitionDescriptor] = field(default_factory=list)
    gates: list[InputGateDescriptor] = field(default_factory=list)


class NetworkEnvironment:
    """Partitions, gates and the doorbell of one subtask process."""

    def __init__(
        self,
        descriptor: NetworkDescriptor,
        pool_fd: int,
        doorbell_fd: int,
        peer_fds: dict[int, int],
        wait: Callable[[], None],
    ) -> None:
        self.pool = NetworkBufferPool.attach(
            pool_fd, descriptor.num_buffers, descriptor.segment_size
        )
        self.doorbell = DoorbellReader(doorbell_fd)
        self._idle = IdleWait(doorbell_fd)
        self._writers = {task: DoorbellWriter(fd) for task, fd in peer_fds.items()}
        self._writer_list = list(self._writers.values())
        self.stats = BackpressureStats()
        # one seekable view of the pool for the Arrow writers of all output channels
        self._pool_file = ChannelStream.open_pool(pool_fd) if descriptor.partitions else None
        self.subpartitions: list[ResultSubpartition] = []
        self.partitions: list[ResultPartition] = []
        for part in descriptor.partitions:
            subs = []
            for sub in part.subpartitions:
                rs = ResultSubpartition(
                    self.pool,
                    LocalBufferPool(sub.buffers),
                    self._writers[sub.peer_task],
                    sub.peer_channel,
                    descriptor.exclusive_credits,
                    wait,
                    self.stats,
                    None if self._pool_file is None else ChannelStream(self._pool_file),
                    self.process_doorbell,
                )
                subs.append(rs)
            self.subpartitions.extend(subs)
            self.partitions.append(ResultPartition(subs))
        if self._pool_file is not None:
            # Allocate this task's output buffers now, as Flink allocates its network memory
            # up front: their first writes would otherwise take a page fault per 4 KiB page.
            # They are written through this mapping, so it is the one populated.
            segment = descriptor.segment_size
            populate_for_writing(
                ChannelStream.address(self._pool_file),
                [
                    (index * segment, segment)
                    for part in descriptor.partitions
                    for sub in part.subpartitions
                    for index in sub.buffers
                ],
            )
        self.gates: list[InputGate] = []
        self._channel_route: list[tuple[InputGate, int]] = []
        for gate_desc in descriptor.gates:
            channels = []
            for local, ch in enumerate(gate_desc.channels):
                channels.append(
                    InputChannel(local, self._writers[ch.peer_task], ch.peer_subpartition)
                )
            gate = InputGate(
                self.pool, channels, descriptor.exclusive_credits, descriptor.floating_credits
            )
            self.gates.append(gate)
            self._channel_route.extend((gate, local) for local in range(len(channels)))

    def fileno(self) -> int:
        return self.doorbell.fileno()

    def wait(self, fds: list[int], timeout: float | None) -> list[int]:
        """Wait until one of ``fds`` (the doorbell among them) is ready; returns the ready ones.

        Use this, not ``select``, wherever the task idles: while doorbell messages
        stream in it naps instead of blocking on the doorbell, so that peers do not
        pay for waking it (see :mod:`flowrun.network.idle_wait`).
        """
        return self._idle.select(fds, timeout)

    def process_doorbell(self) -> int:
        """Dispatch every pending doorbell message; returns how many there were."""
        messages = self.doorbell.drain()
        if not messages:
            return 0
        self._idle.on_messages()
        route = self._channel_route
        subs = self.subpartitions
        # the replies (DATA after RECYCLE/CREDIT, CREDIT after DATA) are only posted
        # here, and written below with one write per peer
        try:
            for kind, target, buffer, length, value in messages:
                if kind == _DATA:
                    gate, local = route[target]
                    gate._on_data(local, buffer, length, value)
                elif kind == _RECYCLE:  # length: segments of a spanning buffer (0: one)
                    subs[target]._on_recycle(buffer, value, length or 1)
                elif kind == _CREDIT:
                    subs[target]._on_credit(value)
                elif kind == _BACKLOG:
                    gate, local = route[target]
                    gate._on_backlog(local, value)
                elif kind == _PRIORITY_BARRIER:
                    gate, local = route[target]
                    # the buffers queued now were sent before the barrier: remember how many
                    queued = len(gate.channels[local].queue)
                    gate.priority_barriers.append((local, buffer | (length << 32), queued))

                else:
                    raise RuntimeError(f"unknown doorbell message kind {kind}")
        finally:
            for writer in self._writer_list:
                writer.flush()
        return len(messages)

    def flush_all(self) -> None:
        for partition in self.partitions:
            partition.flush_all()

    def output_available(self) -> bool:
        """True when every output subpartition has a free buffer (Flink's availability)."""
        return all(sub.local_pool.num_available for sub in self.subpartitions)

    def free_output_bytes(self) -> int:
        """Bytes the emptiest output subpartition can take without waiting for credit."""
        if not self.subpartitions:
            return 1 << 30
        segment = self.pool.segment_size
        return min(sub.local_pool.num_available for sub in self.subpartitions) * segment

    def has_input(self) -> bool:
        return any(gate.has_data() for gate in self.gates)

    def outputs_drained(self) -> bool:
        """True when every buffer this task produced was consumed and recycled."""
        return all(sub.all_buffers_returned() for sub in self.subpartitions)

    def close(self) -> None:
        for sub in self.subpartitions:
            sub.close()
        if self._pool_file is not None:
            self._pool_file.close()
            self._pool_file = None
        self._idle.close()
        self.pool.close()
