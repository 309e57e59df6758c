"""The subtask process: one operator chain, one mailbox loop.

The loop is single-threaded, as Flink's mailbox model: control mail from the
JobManager (cancel), doorbell messages (data, recycled buffers, credit), input
buffers, source polls and the output flush timer are all served from one
``select``. Backpressure is a nested wait inside the loop: when an output
buffer pool is empty, the task serves only doorbell and control messages until
a consumer recycles a buffer.
"""

from __future__ import annotations

import copy
import gc
import os
import select
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle
import pyarrow as pa

from flowrun.network.frames import EventKind, FrameKind
from flowrun.network.network_environment import NetworkDescriptor, NetworkEnvironment

from .checkpoint_barrier_handler import (
    FLAG_STOP,
    FLAG_UNALIGNED,
    Barrier,
    CheckpointBarrierHandler,
)
from .operators import Output, SinkOperator, SourceOperator, StreamOperator, UserCodeError
from .user_code import restore_source_file

__all__ = ["ChainNodeSpec", "ChainSpec", "TaskInfo", "run_subtask", "TaskCancelled"]


_STEP_BYTES = 1 << 20  #: output bytes a source step aims for (see StreamTask._run_source)
_MINI_BATCH_RECORDS = 32768  #: records decoded from queued buffers before the chain runs
#: with checkpoints, the first slice's size, before the chain's rate is known (a slow chain
#: must not spend seconds on a first slice of _MINI_BATCH_RECORDS with a barrier waiting)
_FIRST_SLICE_RECORDS = 256
_PUMP_SECONDS = 0.01  #: time per loop iteration given to writing a pending checkpoint
_MINI_BATCH_SECONDS = 0.05  #: with checkpointing: work per mini-batch between mailbox checks


class TaskCancelled(Exception):
    """The JobManager cancelled the job (or went away)."""


@dataclass
class ChainNodeSpec:
    name: str
    operator: StreamOperator
    operator_id: str
    output_type: Any
    arrow: bool
    max_parallelism: int = 128
    children: list[int] = field(default_factory=list)  #: chained successors (node indices)
    partitions: list[int] = field(default_factory=list)  #: network outputs (partition indices)


@dataclass
class OutEdgeSpec:
    partitioner: Any
    output_type: Any
    arrow: bool
    target_name: str
    edge_index: int = -1


@dataclass
class InEdgeSpec:
    output_type: Any
    arrow: bool
    input_index: int
    edge_index: int = -1
    partitioner: Any = None


@dataclass
class ChainSpec:
    vertex_name: str
    nodes: list[ChainNodeSpec]
    out_edges: list[OutEdgeSpec]
    in_edges: list[InEdgeSpec]
    is_source: bool
    buffer_timeout: int
    source_batch_size: int


@dataclass
class TaskInfo:
    task_id: int
    index: int
    parallelism: int
    max_parallelism: int
    job_id: str
    attempt: int
    peer_ids: list[int]
    network: NetworkDescriptor
    job_parameters: dict
    main_file: str | None = None  #: the job script, to restore user tracebacks
    working_dir: str | None = None  #: the job's private directory (LMDB environments)
    state_backend: Any = None  #: a StateBackend (env.set_state_backend) or state.backend's name
    #: None when checkpointing is off, else {"exactly_once": bool}
    checkpointing: dict | None = None
    #: state to start from: {"location": checkpoint dir, "operators": {operator id: entry}}
    restore: dict | None = None


class OperatorContext:
    """What an operator may know about the subtask it runs in."""

    def __init__(self, task: StreamTask, node: ChainNodeSpec) -> None:
        from ..functions import RuntimeContext

        info = task.info
        self.index = info.index
        self.parallelism = info.parallelism
        self.max_parallelism = node.max_parallelism
        self.job_id = info.job_id
        self.operator_uid = node.operator_id
        from flowrun.state.operator_state import OperatorStateStore

        self.restored = False
        self.checkpointing = task.periodic  #: sinks then make output final at a checkpoint
        self.operator_state_store = OperatorStateStore(node.operator_id)
        self.keyed_backend = None
        self.timer_service = None
        op = node.operator
        if getattr(op, "keyed", False) or getattr(op, "keyed_state", False):
            from flowrun.state.key_groups import KeyGroupRange

            from .timer_service import InternalTimerService

            key_groups = KeyGroupRange.of_operator(
                node.max_parallelism, info.parallelism, info.index
            )
            backend = info.state_backend
            if isinstance(backend, str):
                from flowrun.state.backends import state_backend_from_name

                backend = state_backend_from_name(backend)
            self.keyed_backend = backend.create_keyed_backend(
                node.operator_id,
                key_groups,
                node.max_parallelism,
                None,
                os.path.join(info.working_dir, f"{node.operator_id[:12]}-{info.index}"),
                None,
            )
            self.timer_service = InternalTimerService()
        self.runtime_context = RuntimeContext(
            node.name,
            info.index,
            info.parallelism,
            node.max_parallelism,
            info.attempt,
            info.job_parameters,
            keyed_state_store=self.keyed_backend,
        )
        self._task = task

    def send_to_client(self, records: list) -> None:
        self._task.control.send(("collect", records))


class ChainedOutput(Output):
    __slots__ = ("operator",)

    def __init__(self, operator: StreamOperator) -> None:
        self.operator = operator

    def emit(self, records: Any) -> None:
        self.operator.process(records)


class ValidatingOutput(Output):
    """Checks declared ``output_type`` on chained edges, where nothing is serialised."""

    def __init__(self, inner: Output, validate: Any, node: ChainNodeSpec, subtask: str) -> None:
        self.inner = inner
        self.validate = validate
        self.node = node
        self.subtask = subtask

    def emit(self, records: Any) -> None:
        if not isinstance(records, pa.RecordBatch):
            try:
                self.validate(records)
            except Exception as exc:
                raise _type_error(self.node.name, self.subtask, exc) from exc
        self.inner.emit(records)


def _type_error(operator: str, subtask: str, exc: BaseException) -> UserCodeError:
    err = UserCodeError(operator, subtask, getattr(exc, "record", None), exc)
    err.args = (
        f"Operator '{operator}' (subtask {subtask}) emitted a record that does not match its "
        f"declared output_type: {exc}",
    )
    return err


class FanOutput(Output):
    def __init__(self, outputs: list[Output]) -> None:
        self.outputs = outputs

    def emit(self, records: Any) -> None:
        for output in self.outputs:
            output.emit(records)


class NullOutput(Output):
    def emit(self, records: Any) -> None:
        pass


class RecordWriterOutput(Output):
    """Partitions a batch and serialises each part into its subpartition's buffers."""

    def __init__(
        self,
        partition: Any,
        partitioner: Any,
        serializer: Any,
        arrow: bool,
        max_bytes: int,
        flush_always: bool,
        operator: str,
        subtask: str,
        target: str = "",
    ) -> None:
        self.target = target
        self.subpartitions = partition.subpartitions
        self.partitioner = partitioner
        self.serializer = serializer
        self.arrow = arrow
        self.max_bytes = max_bytes
        self.flush_always = flush_always
        self.operator = operator
        self.subtask = subtask
        self.records_out = 0
        self.bytes_out = 0
        #: rows of a typed stream to a keyed shuffle: serialised once, the batch split by
        #: channel (``split_encoded``) instead of serialising each channel's list
        self.encoded = (
            not arrow
            and serializer.encodes_rows
            and hasattr(partitioner, "split_encoded")
            and not partitioner.is_broadcast
        )

    def emit(self, records: Any) -> None:
        partitioner = self.partitioner
        try:
            if self.encoded:
                self.records_out += len(records)
                parts = partitioner.split_encoded(records, self._encode)
            elif self.arrow:
                self.records_out += records.num_rows
                parts = (
                    [records] * len(self.subpartitions)
                    if partitioner.is_broadcast
                    else partitioner.split_batch(records)
                )
            else:
                self.records_out += len(records)
                parts = (
                    [records] * len(self.subpartitions)
                    if partitioner.is_broadcast
                    else partitioner.split_rows(records)
                )
        except UserCodeError:
            raise  # a record not matching the stream's type (from _encode), already named
        except Exception as exc:
            from flowrun.state.key_groups import UnhashableKeyError

            cause = getattr(exc, "cause", None) or exc
            raise UserCodeError(
                self.operator,
                self.subtask,
                getattr(exc, "record", None),
                cause,
                with_traceback=not isinstance(cause, UnhashableKeyError),
                label=f"The key selector of key_by() between {self.operator!r} and {self.target!r}"
                if self.partitioner.name == "HASH"
                else f"Partitioner ({self.partitioner.name}) after {self.operator!r}",
            ) from exc
        if self.encoded:
            for sub, part in zip(self.subpartitions, parts, strict=True):
                if part is not None and part.num_rows:
                    for batch in self.serializer.fit(part, self.max_bytes):
                        self.bytes_out += batch.nbytes
                        sub.add_batch(batch)
                    if self.flush_always:
                        sub.flush()
            return
        if self.arrow:
            for sub, part in zip(self.subpartitions, parts, strict=True):
                if part is not None and part.num_rows:
                    self.bytes_out += part.nbytes
                    sub.add_batch(part)
                    if self.flush_always:
                        sub.flush()
            return
        if partitioner.is_broadcast:
            batches = self._serialize(records)
            for sub in self.subpartitions:
                for batch in batches:
                    self.bytes_out += batch.nbytes
                    sub.add_batch(batch)
                if self.flush_always:
                    sub.flush()
            return
        for sub, part in zip(self.subpartitions, parts, strict=True):
            if part:
                for batch in self._serialize(part):
                    self.bytes_out += batch.nbytes
                    sub.add_batch(batch)
                if self.flush_always:
                    sub.flush()

    def _serialize(self, records: list) -> list[pa.RecordBatch]:
        try:
            return self.serializer.to_batches(records, self.max_bytes)
        except Exception as exc:
            raise _type_error(self.operator, self.subtask, exc) from exc

    def _encode(self, records: list) -> tuple[pa.RecordBatch, list[list], bool]:
        try:
            return self.serializer.encode(records)
        except Exception as exc:
            raise _type_error(self.operator, self.subtask, exc) from exc


class StreamTask:
    """Runs one subtask: build the chain, run the mailbox loop, report to the JobManager."""

    def __init__(self, control: Connection, spec: ChainSpec, info: TaskInfo) -> None:
        self.control = control
        self.spec = spec
        self.info = info
        self.subtask = f"{info.index + 1}/{info.parallelism}"
        self.net: NetworkEnvironment | None = None
        self.operators: list[StreamOperator] = []
        #: JobManager messages served at the loop's safe points (between batches)
        self._mail: deque = deque()
        self._ended = False  #: end of data sent downstream (END_OF_DATA, periodic only)
        #: records processed in the keyed backends' open write batch (periodic only; see
        #: _process_in_slices), or None when no batch is open
        self._batch_records: int | None = None
        self._finish_requested = False
        self._source_stopped = False
        self.checkpointer = None
        self.barriers: CheckpointBarrierHandler | None = None
        #: periodic checkpoints: sinks make output final with a last checkpoint, and the
        #: loops serve checkpoint work between bounded slices of records
        self.periodic = bool(info.checkpointing and info.checkpointing["periodic"])
        #: unaligned checkpoints: barrier details by id (sent ahead by the JobManager),
        #: the collector of the checkpoint whose channels are being recorded, the last id
        self._barrier_info: dict[int, Barrier] = {}
        self._unaligned = None
        self._last_unaligned = 0
        #: buffers whose zero-copy data an operator still references: (gate, ch, buf, views)
        self._held: list = []

    # -- waiting ------------------------------------------------------------------
    def _handle_control(self) -> None:
        while self.control.poll():
            try:
                message = self.control.recv()
            except (EOFError, OSError):
                raise TaskCancelled("the JobManager went away") from None
            if message[0] == "cancel":
                raise TaskCancelled("cancelled by the JobManager")
            if message[0] == "checkpoint_location":
                barrier = Barrier(*message[1])
                self._barrier_info[barrier.checkpoint_id] = barrier
                continue
            self._mail.append(message)

    def _process_mail(self) -> None:
        """Serve checkpoint messages; called only where no batch is half processed."""
        while self._mail:
            message = self._mail.popleft()
            kind = message[0]
            if kind == "trigger_checkpoint":
                barrier = Barrier(*message[1])
                if barrier.flags & FLAG_STOP and self.spec.is_source:
                    self._source_stopped = True  # stop-with-savepoint: nothing after it
                # Only sources are triggered: they start the barrier, also after their
                # end of data (it follows END_OF_DATA downstream, see _end_of_data).
                channels = None
                if barrier.flags & FLAG_UNALIGNED:
                    from .subtask_checkpoint_coordinator import ChannelStateCollector

                    channels = ChannelStateCollector(barrier.checkpoint_id)
                self.checkpointer.checkpoint(barrier, barrier.location, True, channels)
            elif kind == "abort_checkpoint":
                cid = message[1]
                if self._unaligned is not None and self._unaligned.checkpoint_id <= cid:
                    self._unaligned.recording.clear()
                    self._unaligned = None
                self._last_unaligned = max(self._last_unaligned, cid)
                self._barrier_info.pop(cid, None)
                if self.barriers is not None and self.barriers.abort(cid):
                    self._unblock_released()
                self.checkpointer.abort(cid)
                for operator in self.operators:
                    operator.notify_checkpoint_aborted(cid)
            elif kind == "notify_complete":
                for operator in self.operators:
                    operator.notify_checkpoint_complete(message[1])
            elif kind == "finish":
                self._finish_requested = True

    def wait_io(self, timeout: float | None, extra: list[int] | None = None) -> None:
        fds = [self.control.fileno(), self.net.fileno()]
        checkpointer = self.checkpointer
        if checkpointer is not None:
            fds.append(checkpointer.wake_fd)  # a snapshot's copy thread finished
        if extra:
            fds.extend(extra)
        try:
            ready = self.net.wait(fds, timeout)  # naps while doorbell messages stream in
        except InterruptedError:
            return
        if self.control.fileno() in ready:
            self._handle_control()
        if checkpointer is not None and checkpointer.wake_fd in ready:
            checkpointer.woken()
        self.net.process_doorbell()

    def _backpressure_wait(self) -> None:
        self.wait_io(1.0)

    # -- checkpoints ----------------------------------------------------------------
    def _on_aligned(self, barrier: Barrier) -> None:
        self._unblock_released()
        self.checkpointer.checkpoint(barrier, barrier.location, True)

    def _on_priority_barriers(self, remainder: tuple[int, list] | None = None) -> None:
        """Unaligned barriers that overtook queued data: snapshot at the first one.

        ``remainder``: (gate index, rows) decoded but not processed yet, when the barrier
        arrived while the chain worked through a mini-batch; they are in flight too.
        """
        for gate_index, gate in enumerate(self.net.gates):
            arrived, gate.priority_barriers = gate.priority_barriers, []
            for channel, cid, before in arrived:
                if cid <= self._last_unaligned and (
                    self._unaligned is None or self._unaligned.checkpoint_id != cid
                ):
                    continue  # a barrier of an aborted or older checkpoint
                key = (gate_index, channel)
                if self._unaligned is None or cid > self._unaligned.checkpoint_id:
                    self._start_unaligned(cid, remainder)
                self._unaligned.barrier(key, gate.queued_bytes(channel, before))
                if self._unaligned.done:
                    self._unaligned = None

    def _start_unaligned(self, cid: int, remainder: tuple[int, list] | None = None) -> None:
        from flowrun.network.channel_state import CONSUMER, PENDING, ChannelStateEntry

        from .subtask_checkpoint_coordinator import ChannelStateCollector

        while cid not in self._barrier_info:  # the JobManager sent it before the trigger
            ready, _, _ = select.select([self.control.fileno()], [], [], 1.0)
            if ready:
                self._handle_control()
        barrier = self._barrier_info.pop(cid)
        for old in [c for c in self._barrier_info if c < cid]:
            del self._barrier_info[old]
        collector = ChannelStateCollector(cid)
        index = self.info.index
        first = 0
        for gate_index, gate in enumerate(self.net.gates):
            edge = self.spec.in_edges[gate_index].edge_index
            for ch in gate.channels:
                if not ch.ended:
                    fragments = list(ch.fragments) if ch.fragments is not None else None
                    entry = ChannelStateEntry(
                        edge,
                        index,
                        first + ch.index,
                        CONSUMER,
                        ch.batches.schema_bytes,
                        fragments,
                    )
                    collector.start_input((gate_index, ch.index), entry)
            first += len(gate.channels)
        if remainder is not None and remainder[1]:
            gate_index, rows = remainder
            serializer = self.in_serializers[gate_index]
            sink = pa.BufferOutputStream()
            batches = serializer.to_batches(rows, 1 << 62)
            with pa.ipc.new_stream(sink, batches[0].schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
            edge = self.spec.in_edges[gate_index].edge_index
            collector.pending.append(
                ChannelStateEntry(edge, index, 0, PENDING, buffers=[sink.getvalue().to_pybytes()])
            )
        self._unaligned = collector
        self._last_unaligned = cid
        self.checkpointer.checkpoint(barrier, barrier.location, True, collector)

    def _unblock_released(self) -> None:
        gates = self.net.gates
        for gate_index, channel in self.barriers.take_unblocked():
            gates[gate_index].unblock(channel)

    # -- set-up -------------------------------------------------------------------
    def setup(self, pool_fd: int, doorbell_fd: int, peer_fds: dict[int, int]) -> None:
        from ..records import serializer_for, validator_for

        self.net = NetworkEnvironment(
            self.info.network, pool_fd, doorbell_fd, peer_fds, self._backpressure_wait
        )
        self.control.send(("attached",))
        spec = self.spec
        self.flush_always = spec.buffer_timeout == 0
        max_bytes = self.info.network.segment_size - 64
        self.operators = [node.operator for node in spec.nodes]
        self.in_serializers = [
            None if e.arrow else serializer_for(e.output_type) for e in spec.in_edges
        ]
        self.record_writers: list[RecordWriterOutput] = []
        for node_index in reversed(range(len(spec.nodes))):
            node = spec.nodes[node_index]
            outputs: list[Output] = [ChainedOutput(self.operators[c]) for c in node.children]
            validate = validator_for(node.output_type) if not node.arrow else None
            if node.children and validate is not None:
                outputs = [
                    ValidatingOutput(
                        FanOutput(outputs) if len(outputs) > 1 else outputs[0],
                        validate,
                        node,
                        self.subtask,
                    )
                ]
            for p in node.partitions:
                edge = spec.out_edges[p]
                partition = self.net.partitions[p]
                partitioner = copy.copy(edge.partitioner)
                partitioner.setup(len(partition.subpartitions), self.info.index)
                writer = RecordWriterOutput(
                    partition,
                    partitioner,
                    None if edge.arrow else serializer_for(edge.output_type),
                    edge.arrow,
                    max_bytes,
                    self.flush_always,
                    node.name,
                    self.subtask,
                    edge.target_name,
                )
                self.record_writers.append(writer)
                outputs.append(writer)
            if not outputs:
                output: Output = NullOutput()
            elif len(outputs) == 1:
                output = outputs[0]
            else:
                output = FanOutput(outputs)
            operator = self.operators[node_index]
            operator.setup(OperatorContext(self, node), output)
        if self.info.checkpointing is not None:
            from .subtask_checkpoint_coordinator import SubtaskCheckpointCoordinator

            self.checkpointer = SubtaskCheckpointCoordinator(self)
            if not spec.is_source:
                self.barriers = CheckpointBarrierHandler(
                    [len(g.channels) for g in self.net.gates],
                    self.info.checkpointing["exactly_once"],
                    self._on_aligned,
                )
        restore = self.info.restore
        if restore is not None:
            from .subtask_checkpoint_coordinator import restore_operator_state

            for node, operator in zip(spec.nodes, self.operators, strict=True):
                entry = restore["operators"].get(node.operator_id)
                if entry is not None:
                    try:
                        restore_operator_state(
                            operator.ctx, restore["location"], entry, self.info.working_dir
                        )
                    except UserCodeError:
                        raise
                    except Exception as exc:
                        raise RuntimeError(
                            f"cannot restore the state of operator '{node.name}' from "
                            f"{restore['location']}: {exc}"
                        ) from exc
        for operator in self.operators:
            operator.open()
        # Sinks flush on the same timer as network buffers (time-based rolling, collect).
        self.flushables = [op for op in self.operators if callable(getattr(op, "flush", None))]
        self.keyed_operators = [op for op in self.operators if getattr(op, "keyed", False)]
        #: keyed backends of the chain, bracketed by _process_in_slices
        self._batch_backends = [
            op.ctx.keyed_backend for op in self.operators if op.ctx.keyed_backend is not None
        ]
        self.control.send(("running",))

    # -- running ------------------------------------------------------------------
    def run(self) -> None:
        if self.spec.is_source:
            self._run_source()
        else:
            self._run_inputs()
        self._finish()

    def _flush_deadline(self) -> float | None:
        timeout = self.spec.buffer_timeout
        if timeout <= 0:
            return None
        return time.monotonic() + timeout / 1000.0

    def _run_source(self) -> None:
        source_op = self.operators[0]
        assert isinstance(source_op, SourceOperator)
        reader = source_op.reader
        emit = source_op.output.emit
        net = self.net
        # Adaptive step size: a step should produce about STEP_BYTES of output, so that a
        # source whose records grow downstream (10 KB strings, fan-out flat_maps) cannot
        # hold thousands of big records in memory while its buffers are full.
        max_batch = self.spec.source_batch_size
        batch_size = min(max_batch, 64)
        bytes_per_record = 0.0
        writers = self.record_writers
        next_flush = self._flush_deadline()
        timeout_s = self.spec.buffer_timeout / 1000.0
        control = self.control
        checkpointer = self.checkpointer
        periodic = self.periodic
        while True:
            if control.poll():
                self._handle_control()
            if self._mail:
                self._process_mail()
            if checkpointer is not None and checkpointer.busy:
                checkpointer.pump_for(_PUMP_SECONDS)
            if self._source_stopped:
                self.wait_io(0.0 if checkpointer.busy else (0.05 if checkpointer.waiting else None))
                continue
            net.process_doorbell()
            if periodic and not net.output_available():
                # Backpressured: wait for a free buffer here, where a checkpoint trigger can
                # be served at once, instead of blocking in the middle of emitting a step.
                self.wait_io(0.0 if checkpointer.busy else 0.05)
                now = time.monotonic()
                if next_flush is not None and now >= next_flush:
                    self._flush_timer()
                    next_flush = now + timeout_s
                continue
            try:
                step = batch_size
                if periodic and bytes_per_record:
                    # With checkpoints, a step fits the free output buffers, so that the
                    # source rarely blocks mid-step and serves a trigger at once.
                    free = net.free_output_bytes()
                    step = max(1, min(batch_size, int(free / bytes_per_record)))
                records = reader.poll(step)
            except Exception as exc:
                raise source_op.fail(None, exc) from exc
            if records is None:
                break
            n = records.num_rows if isinstance(records, pa.RecordBatch) else len(records)
            now = time.monotonic()
            if self.keyed_operators:
                self._fire_timers()
            if n:
                before = sum(w.bytes_out for w in writers)
                resume_gc = _pause_collector()
                try:
                    emit(records)
                finally:
                    if resume_gc:
                        gc.enable()
                produced = sum(w.bytes_out for w in writers) - before
                bytes_per_record = produced / n
                if produced > _STEP_BYTES:
                    batch_size = max(1, batch_size * _STEP_BYTES // produced)
                elif produced < _STEP_BYTES // 2 and n >= batch_size:
                    batch_size = min(max_batch, batch_size * 2)
            else:
                waits = [
                    t
                    for t in (next_flush, reader.next_wakeup(), self._timer_deadline())
                    if t is not None
                ]
                timeout = max(0.0, min(waits) - now) if waits else None
                if checkpointer is not None and checkpointer.busy:
                    timeout = 0.0
                elif checkpointer is not None and checkpointer.waiting:
                    timeout = min(timeout if timeout is not None else 0.05, 0.05)
                fd = reader.fileno()
                self.wait_io(timeout, [fd] if fd is not None else None)
                now = time.monotonic()
            if next_flush is not None and now >= next_flush:
                self._flush_timer()
                next_flush = now + timeout_s

    def _recycle_released(self) -> None:
        """Recycle held buffers whose zero-copy data nobody references any more."""
        still = []
        for gate, channel, buffer, views in self._held:
            if _released(views):
                gate.recycle(channel, buffer)
            else:
                still.append((gate, channel, buffer, views))
        self._held = still

    def _warn_copy(self, gate_index: int) -> None:
        sys.stderr.write(
            f"flowrun: '{self.spec.vertex_name}' ({self.subtask}) keeps references to input "
            f"batches after processing them; input {gate_index} is copied out of shared memory "
            "from now on (copy what you keep, e.g. with pyarrow.concat_batches, to stay "
            "zero-copy)\n"
        )

    def _timer_deadline(self) -> float | None:
        """``time.monotonic()`` at which the next processing-time timer is due."""
        due = [t for t in (op.next_timer() for op in self.keyed_operators) if t is not None]
        if not due:
            return None
        return time.monotonic() + (min(due) - time.time_ns() // 1_000_000) / 1000.0

    def _fire_timers(self) -> None:
        now_ms = time.time_ns() // 1_000_000
        for op in self.keyed_operators:
            due = op.next_timer()
            if due is not None and due <= now_ms:
                op.fire_processing_timers(now_ms)

    def _flush_timer(self) -> None:
        self.net.flush_all()
        for operator in self.flushables:
            operator.flush()

    def _run_inputs(self) -> None:
        net = self.net
        gates = net.gates
        process = self.operators[0].process
        copy_input = [False] * len(gates)
        in_edges = self.spec.in_edges
        serializers = self.in_serializers
        flush_always = self.flush_always
        next_flush = self._flush_deadline()
        timeout_s = self.spec.buffer_timeout / 1000.0
        control = self.control
        barriers = self.barriers
        checkpointer = self.checkpointer
        periodic = self.periodic
        if self.info.restore is not None and self.info.restore.get("channel_state"):
            from .subtask_checkpoint_coordinator import replay_channel_state

            replay_channel_state(self, self.info.restore)
        mini_batch = _FIRST_SLICE_RECORDS if periodic else _MINI_BATCH_RECORDS
        while not all(g.all_ended() for g in gates):
            net.process_doorbell()
            if checkpointer is not None and any(g.priority_barriers for g in gates):
                self._on_priority_barriers()
                if checkpointer.busy:
                    checkpointer.pump_for(_PUMP_SECONDS)
            progressed = False
            for gate_index, gate in enumerate(gates):
                if not gate.has_data():
                    continue
                if checkpointer is not None and any(g.priority_barriers for g in gates):
                    # An unaligned barrier arrived (while the chain ran): take the snapshot
                    # before reading past it on any channel.
                    progressed = True
                    break
                progressed = True
                input_index = in_edges[gate_index].input_index
                serializer = serializers[gate_index]
                # Rows: decode every buffer already queued (up to a bound) into one list, so
                # the chain runs once per mini-batch; decoded records are copies, so each
                # buffer is recycled at once. Arrow batches are zero-copy views of the
                # buffer: they are processed before their buffer is recycled.
                # The mini-batch runs with the collector paused (see _pause_collector); an
                # exception from it ends the subtask, so the resume needs no finally.
                resume_gc = _pause_collector()
                pending: list = []
                events: list = []
                copy = copy_input[gate_index]
                while len(pending) < mini_batch and not events:
                    polled = gate.poll()
                    if polled is None:
                        break
                    channel, buffer, memory = polled
                    recording = self._unaligned
                    if recording is not None and (gate_index, channel) in recording.recording:
                        recording.record((gate_index, channel), bytes(memory))
                    views = []
                    for kind, batch, event, payload in gate.read(channel, memory, copy):
                        if kind == FrameKind.BATCH:
                            if serializer is None:
                                process(batch, input_index)
                            else:
                                pending.extend(serializer.from_batch(batch))
                            batch = None  # noqa: PLW2901 - drop our reference before the check
                            if payload is not None:
                                views.append(payload)
                        elif event == EventKind.END_OF_PARTITION:
                            gate.channels[channel].ended = True
                            events.append((channel, None))
                            if self._unaligned is not None:
                                self._unaligned.ended((gate_index, channel))
                                if self._unaligned.done:
                                    self._unaligned = None
                        elif event == EventKind.END_OF_DATA:
                            gate.channels[channel].data_ended = True
                        elif event == EventKind.CHECKPOINT_BARRIER:
                            barrier = Barrier.decode(payload)
                            if barriers is not None and barriers.exactly_once:
                                gate.block(channel)  # nothing after the barrier is read yet
                            events.append((channel, barrier))
                    del memory
                    if views and not _released(views):
                        # An operator kept zero-copy data of this buffer: recycle it only
                        # when those references are gone, and copy this gate's input from
                        # now on so that its channels keep their credit.
                        self._held.append((gate, channel, buffer, views))
                        if not copy:
                            copy = copy_input[gate_index] = True
                            self._warn_copy(gate_index)
                    else:
                        gate.recycle(channel, buffer)
                if pending:
                    if not periodic:
                        process(pending, input_index)
                    else:
                        mini_batch = self._process_in_slices(
                            pending, gate_index, input_index, mini_batch
                        )
                del pending
                if resume_gc:
                    gc.enable()
                if events and barriers is not None:
                    # Records before the barrier are processed: now it may complete.
                    for channel, barrier in events:
                        if barrier is None:
                            barriers.on_end_of_partition(gate_index, channel)
                        else:
                            barriers.on_barrier(gate_index, channel, barrier)
                            if (gate_index, channel) not in barriers.blocked:
                                gate.unblock(channel)
                    self._unblock_released()
                if flush_always:
                    net.flush_all()
            if self._held:
                self._recycle_released()
            if control.poll():
                self._handle_control()
            if self._mail:
                self._process_mail()
            if checkpointer is not None and checkpointer.busy:
                checkpointer.pump_for(_PUMP_SECONDS)
                progressed = True
            if periodic:
                # After the end of data, the loop goes on for the barriers that follow it,
                # until the JobManager lets the task finish (after the final checkpoint).
                if not self._ended and all(g.all_data_ended() for g in gates):
                    self._end_of_data()
                if self._finish_requested:
                    break
            if self.keyed_operators:
                self._fire_timers()
            now = time.monotonic()
            if next_flush is not None and now >= next_flush:
                self._flush_timer()
                next_flush = now + timeout_s
            if not progressed:
                self._end_open_batch()  # idle: commit what the batch holds
                waits = [t for t in (next_flush, self._timer_deadline()) if t is not None]
                timeout = max(0.0, min(waits) - now) if waits else None
                if checkpointer is not None and checkpointer.waiting:
                    timeout = min(timeout if timeout is not None else 0.05, 0.05)
                self.wait_io(timeout)

    def _process_in_slices(
        self, pending: list, gate_index: int, input_index: int, mini_batch: int
    ) -> int:
        """With checkpoints: run the chain on slices of ~_MINI_BATCH_SECONDS of work.

        A buffer can hold tens of thousands of small records; between slices checkpoint
        mail (completion notices, aborts) is served and pending snapshots are written, so
        they never wait behind a slow operator's whole buffer. In-band (aligned) barriers
        are handled after the last slice: the records of these buffers were read before
        them. An unaligned barrier is taken between slices, the rest of the rows becoming
        in-flight data.

        The keyed backends' write batch spans slices *and* mini-batches, up to
        _MINI_BATCH_RECORDS records as without checkpointing (:meth:`_end_open_batch`
        ends it earlier when the task goes idle or its input ends). Mini-batches are only
        one slice long here (a barrier queued behind them must not wait for more), and an
        LMDB transaction copies every page it touches: random keys touch nearly every leaf
        page whatever the transaction's size, so a transaction per ~20k-record mini-batch
        instead of per 32k cost ~5% of a keyed subtask's CPU with checkpointing on but no
        checkpoint taken. A snapshot commits the open transaction itself; the batch goes
        on in a new one.
        """
        process = self.operators[0].process
        checkpointer = self.checkpointer
        control = self.control
        total = len(pending)
        start = 0
        if self._batch_records is None:
            for backend in self._batch_backends:
                backend.begin_batch()
            self._batch_records = 0
        try:
            while start < total:
                end = min(total, start + mini_batch)
                began = time.perf_counter()
                records = pending if start == 0 and end == total else pending[start:end]
                process(records, input_index)
                spent = time.perf_counter() - began
                if spent > 0:
                    rate = (end - start) / spent
                    mini_batch = int(min(_MINI_BATCH_RECORDS, max(64, rate * _MINI_BATCH_SECONDS)))
                self._batch_records += end - start
                start = end
                if start < total:
                    if control.poll():
                        self._handle_control()
                    if self._mail:
                        self._process_mail()
                    if checkpointer.busy:
                        checkpointer.pump_for(_PUMP_SECONDS)
                    self.net.process_doorbell()  # a priority barrier is announced there
                    if any(g.priority_barriers for g in self.net.gates):
                        # An unaligned barrier overtook the queued buffers: snapshot now (it
                        # commits the open write batch), with the rest of this mini-batch as
                        # in-flight data, then go on with it.
                        self._on_priority_barriers((gate_index, pending[start:]))
        except BaseException:
            self._end_open_batch()
            raise
        if self._batch_records >= _MINI_BATCH_RECORDS:
            self._end_open_batch()
        return mini_batch

    def _end_open_batch(self) -> None:
        """End the keyed backends' write batch that _process_in_slices keeps open (LMDB
        commits it), if one is open."""
        if self._batch_records is None:
            return
        self._batch_records = None
        for backend in self._batch_backends:
            backend.end_batch()

    def _finish(self) -> None:
        if self.periodic:
            self._finish_with_final_checkpoint()
            return
        for operator in self.operators:
            operator.end_input()
        for operator in self.flushables:
            operator.flush()
        for operator in self.operators:
            operator.close()
        # Every producer has sent its end of partition, so none writes again: buffers
        # still held for zero-copy data kept by an operator can go back now.
        for gate, channel, buffer, _views in self._held:
            gate.recycle(channel, buffer)
        self._held = []
        self._close_backends()
        for partition in self.net.partitions:
            partition.broadcast_event(EventKind.END_OF_PARTITION)
        while not self.net.outputs_drained():
            self.wait_io(1.0)

    def _end_of_data(self) -> None:
        """The input ended (with periodic checkpoints): tell downstream and the JobManager.

        As Flink's EndOfData (FLIP-147): the task ends its operators' input and sends
        END_OF_DATA, but stays up. Checkpoints go on through it -- a source still injects
        barriers when triggered, the others receive them behind END_OF_DATA -- so that a
        slow downstream task that is still working through its input keeps completing
        checkpoints after the sources ended.
        """
        self._end_open_batch()
        for operator in self.operators:
            operator.end_input()
        for operator in self.flushables:
            operator.flush()
        for partition in self.net.partitions:
            partition.broadcast_event(EventKind.END_OF_DATA)
        self._ended = True
        self.control.send(("end_reached",))

    def _finish_with_final_checkpoint(self) -> None:
        """End of input with checkpointing: output becomes final with a last checkpoint.

        Flink's final checkpoint (FLIP-147): the task sends END_OF_DATA, tells the JobManager
        it reached its end and keeps serving checkpoints; when every task has, the
        JobManager takes a checkpoint of all of them (its barriers follow END_OF_DATA, so
        nothing is in flight behind them), notifies its completion -- exactly-once sinks
        commit here -- and then lets the tasks finish: END_OF_PARTITION goes out and the
        task waits for its own inputs' ends. A failure before that restarts from a
        checkpoint that does not contain the uncommitted output, so nothing is written twice.
        """
        if not self._ended:
            self._end_of_data()
        checkpointer = self.checkpointer
        while not self._finish_requested:
            if self._mail:
                self._process_mail()
                continue
            if checkpointer.busy:
                checkpointer.pump_for(_PUMP_SECONDS)
                self.wait_io(0.0)
                continue
            self.wait_io(0.05 if checkpointer.waiting else 1.0)
        checkpointer.complete_all()  # a snapshot of this task still being written
        for operator in self.operators:
            final_commit = getattr(operator, "final_commit", None)
            if final_commit is not None:
                final_commit()
        for operator in self.flushables:
            operator.flush()
        for operator in self.operators:
            operator.close()
        for gate, channel, buffer, _views in self._held:
            gate.recycle(channel, buffer)
        self._held = []
        self._close_backends()
        for partition in self.net.partitions:
            partition.broadcast_event(EventKind.END_OF_PARTITION)
        self._drain_inputs()
        while not self.net.outputs_drained():
            self.wait_io(1.0)

    def _drain_inputs(self) -> None:
        """Read the input channels up to their end of partition, after the final checkpoint.

        Only events are left in them (a producer sends nothing after END_OF_DATA but
        barriers); reading them returns the producers' buffers, which they wait for.
        """
        gates = self.net.gates
        for gate in gates:
            gate.unblock_all()
        while not all(g.all_ended() for g in gates):
            self.net.process_doorbell()
            progressed = False
            for gate in gates:
                while (polled := gate.poll()) is not None:
                    progressed = True
                    channel, buffer, memory = polled
                    for kind, _batch, event, _payload in gate.read(channel, memory, True):
                        if kind == FrameKind.BATCH:
                            raise RuntimeError(
                                f"{self.spec.vertex_name} ({self.subtask}) received records "
                                "after the end of data of its input"
                            )
                        if event == EventKind.END_OF_PARTITION:
                            gate.channels[channel].ended = True
                    del memory
                    gate.recycle(channel, buffer)
            if not progressed:
                self.wait_io(1.0)

    def metrics(self) -> dict:
        stats = self.net.stats
        return {
            "records_out": sum(w.records_out for w in self.record_writers),
            "buffers_sent": sum(s.buffers_sent for s in self.net.subpartitions),
            "bytes_sent": sum(s.bytes_sent for s in self.net.subpartitions),
            "buffers_received": sum(g.buffers_received for g in self.net.gates),
            "backpressured_ms": stats.blocked_ns / 1e6,
            "backpressure_waits": stats.waits,
        }

    def _close_backends(self) -> None:
        self._end_open_batch()
        for operator in self.operators:
            backend = getattr(getattr(operator, "ctx", None), "keyed_backend", None)
            if backend is not None:
                backend.close()
                backend.dispose()
                operator.ctx.keyed_backend = None

    def abort(self) -> None:
        for operator in self.operators:
            if isinstance(operator, SinkOperator):
                try:
                    operator.abort()
                except Exception:
                    pass
        try:
            self._close_backends()
        except Exception:
            pass


def run_subtask(fds: list[int], spec_bytes: bytes, info: TaskInfo) -> int:
    """Entry point of a subtask process (called by the fork server)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _interrupt)
    control = Connection(fds[0])
    doorbell_fd, pool_fd = fds[1], fds[2]
    peer_fds = dict(zip(info.peer_ids, fds[3:], strict=True))
    task: StreamTask | None = None
    try:
        spec = cloudpickle.loads(spec_bytes)
        restore_source_file([n.operator for n in spec.nodes], info.main_file)
        task = StreamTask(control, spec, info)
        task.setup(pool_fd, doorbell_fd, peer_fds)
        profile_dir = os.environ.get("FLOWRUN_PROFILE_DIR")
        if profile_dir:  # developer aid: one cProfile dump per subtask
            import cProfile

            profiler = cProfile.Profile()
            profiler.runcall(task.run)
            profiler.dump_stats(os.path.join(profile_dir, f"task-{info.task_id}.prof"))
        else:
            task.run()
        # A cancel that arrives after this point must not raise: the work is done.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        control.send(("finished", task.metrics()))
        return 0
    except TaskCancelled:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if task is not None:
            task.abort()
        try:
            control.send(("canceled",))
        except OSError:
            pass
        return 0
    except UserCodeError as exc:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if task is not None:
            task.abort()
        _report_failure(control, str(exc))
        return 1
    except BaseException as exc:  # engine bug or unexpected error: report it whole
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if task is not None:
            task.abort()
        name = task.spec.vertex_name if task is not None else "subtask"
        subtask = task.subtask if task is not None else f"{info.index + 1}/{info.parallelism}"
        text = "".join(traceback.format_exception(exc)).rstrip()
        _report_failure(control, f"Subtask '{name}' ({subtask}) failed: {exc}\n{text}")
        return 1
    finally:
        try:
            sys.stdout.flush()
        except Exception:
            pass


def _pause_collector() -> bool:
    """Pause the cyclic GC for one step of the task; True if it ran (the caller resumes it).

    Why: a step (a source poll, or an input mini-batch) allocates containers per record --
    decoded tuples, the user's results, lists -- and most die before the step ends. With the
    collector running, every 700 allocations start a young collection that walks all live
    young objects; paused, the objects that died are never visited and the survivors once,
    at the first collection after the step (tuples of atomic values are untracked there).
    Measured on the word-count reducer: ~20% of its CPU. Steps are bounded (32k input
    records, ~1 MiB of source output), so cyclic garbage waits for one step at most.
    """
    if gc.isenabled():
        gc.disable()
        return True
    return False


def _released(views: list) -> bool:
    """Release the memoryviews batches were read from; False if Arrow still uses one."""
    ok = True
    for view in views:
        try:
            view.release()
        except BufferError:
            ok = False
    if not ok:
        views[:] = [v for v in views if _still_exported(v)]
    return ok


def _still_exported(view: memoryview) -> bool:
    try:
        view.nbytes  # noqa: B018 - a released view raises ValueError here
    except ValueError:
        return False
    return True


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGUSR1 from the JobManager: cancel now, even inside a long user function."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    raise TaskCancelled("cancelled by the JobManager")


def _report_failure(control: Connection, message: str) -> None:
    try:
        control.send(("failed", message))
    except OSError:
        pass
