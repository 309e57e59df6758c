"""The subtask side of checkpoints: snapshot the chain, write it, acknowledge; and restore.

When a barrier is aligned (or a source is told to checkpoint), the task calls
:meth:`SubtaskCheckpointCoordinator.checkpoint` between two input batches. The *synchronous*
part runs at once: the barrier goes downstream first (so the next tasks can start aligning),
then every operator of the chain copies its working variables into managed state
(``prepare_snapshot``), its operator state is serialized, its keyed backend fixes the
snapshot's content (an LMDB read transaction, or a serialization of the heap backend) and
its timers are taken. The *asynchronous* part -- producing the Arrow streams of the keyed
state and writing every file to checkpoint storage -- is pumped one file at a time from the
task's mailbox loop, between input batches, so processing goes on while a large state is
written. When the last file is written the task acknowledges the checkpoint to the
JobManager with the file handles; the JobManager writes ``_metadata`` when every subtask has.

Restoring is the reverse, before ``open()``: operator state of all old subtasks is read and
redistributed by its mode (even split, union, broadcast), keyed state is read from every old
subtask whose key-group range overlaps this one's (rows of other key groups are dropped), and
timers likewise. The files and the metadata are the backend-neutral snapshot format of
:mod:`flowrun.state.snapshot`, so any parallelism and either backend can restore them.
"""

from __future__ import annotations

import copy
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol

import pyarrow as pa

from flowrun.network.channel_state import (
    PRODUCER,
    ChannelStateEntry,
    decode_entries,
    encode_entries,
    replay_batches,
)
from flowrun.network.frames import EventKind
from flowrun.state.backends.background import BackgroundCall
from flowrun.state.backends.lmdb import NativeCopy

from .checkpoint_barrier_handler import FLAG_FINAL, FLAG_SAVEPOINT, Barrier
from .checkpoint_storage import (
    StateHandle,
    read_state_file,
    read_state_files,
    write_state_file,
    write_state_file_from,
)

__all__ = [
    "ChannelStateCollector",
    "SubtaskCheckpointCoordinator",
    "replay_channel_state",
    "restore_operator_state",
]


class ChannelStateCollector:
    """The in-flight data of one unaligned checkpoint in one subtask.

    Created at the task's snapshot (its first barrier, or a source's trigger). Input
    channels are *recorded* from then on until their own barrier arrives: every buffer
    polled from them is copied, and at the barrier the buffers still queued are copied
    too. The producer side adds the buffers that were waiting for credit. ``done`` once
    every input channel delivered the barrier (or ended).
    """

    def __init__(self, checkpoint_id: int) -> None:
        self.checkpoint_id = checkpoint_id
        self.recording: set[tuple[int, int]] = set()
        self.inputs: dict[tuple[int, int], ChannelStateEntry] = {}
        self.outputs: list[ChannelStateEntry] = []
        #: rows decoded but not processed at the snapshot (``PENDING`` entries)
        self.pending: list[ChannelStateEntry] = []

    @property
    def done(self) -> bool:
        return not self.recording

    def start_input(self, key: tuple[int, int], entry: ChannelStateEntry) -> None:
        self.inputs[key] = entry
        self.recording.add(key)

    def record(self, key: tuple[int, int], data: bytes) -> None:
        self.inputs[key].buffers.append(data)

    def barrier(self, key: tuple[int, int], queued: list[bytes]) -> None:
        if key in self.recording:
            self.inputs[key].buffers.extend(queued)
            self.recording.discard(key)

    def ended(self, key: tuple[int, int]) -> None:
        self.recording.discard(key)

    def entries(self) -> list[ChannelStateEntry]:
        """Entries worth storing: channels with data in flight, and the decoding state of
        every input channel (the producer's buffers of the channel may need its schema)."""
        inputs = [e for e in self.inputs.values() if e.buffers or e.schema or e.fragments]
        return self.pending + inputs + [e for e in self.outputs if e.buffers]


class _Blocker(Protocol):
    """Work of a snapshot running on a thread (a :class:`NativeCopy`, a :class:`_FileWrite`)."""

    on_done: Callable[[], None] | None

    @property
    def done(self) -> bool: ...

    def join(self) -> None: ...


class _FileWrite(BackgroundCall):
    """One state file written to checkpoint storage by a thread.

    Writing a file ends with fsync of the file and of its directory, which can take
    milliseconds to tens of milliseconds while other files are being synced; on the
    mailbox thread that stalls record processing (an unaligned checkpoint's in-flight data,
    a source's operator state). The snapshot waits for it as for an LMDB copy.
    """

    def __init__(self, location: str, name: str, data: Any) -> None:
        super().__init__(lambda: write_state_file(location, name, data), "checkpoint-write")
        self.start()


def _write_in_thread(location: str, name: str, data: Any) -> Generator[Any, None, StateHandle]:
    """Write one state file on a thread, yielding it while it runs; returns its handle.

    Closed early (the checkpoint was aborted), it still waits for the thread, so that
    nothing writes into the checkpoint's directory once the snapshot is dropped.
    """
    job = _FileWrite(location, name, data)
    try:
        while not job.done:
            yield job
    finally:
        job.join()
    return job.result()


class _PendingSnapshot:
    __slots__ = ("checkpoint_id", "steps", "started", "sync_ms", "channels", "blocker")

    def __init__(
        self,
        checkpoint_id: int,
        steps: Iterator[Any],
        started: float,
        sync_ms: float,
        channels: ChannelStateCollector | None,
    ):
        self.checkpoint_id = checkpoint_id
        self.steps = steps
        self.started = started
        self.sync_ms = sync_ms
        self.channels = channels
        self.blocker: _Blocker | None = None  #: a copy or file write running on a thread

    @property
    def ready(self) -> bool:
        return (self.channels is None or self.channels.done) and (
            self.blocker is None or self.blocker.done
        )


class SubtaskCheckpointCoordinator:
    """Takes, writes and acknowledges the checkpoints of one subtask."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self._pending: deque[_PendingSnapshot] = deque()
        self.last_taken = 0  #: newest checkpoint id snapshotted here
        self.collects = any(hasattr(op, "send_records") for op in task.operators)
        #: LMDB checkpoints as native environment copies (flowrun.state.lmdb.native-checkpoints)
        self.native = bool(task.info.checkpointing.get("native_lmdb", True))
        #: a copy thread that finished writes a byte here: the task's wait includes the read
        #: end, so an idle task acknowledges at once instead of at its next poll
        self.wake_fd, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def _wake(self) -> None:  # on a copy thread
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # already signalled (or closing)

    def woken(self) -> None:
        """The wake-up descriptor was ready: empty it."""
        try:
            while os.read(self.wake_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    @property
    def waiting(self) -> bool:
        """A snapshot is pending (perhaps on a thread): the task must not sleep for long."""
        return bool(self._pending)

    @property
    def busy(self) -> bool:
        """True when :meth:`pump` has work (not when snapshots only wait for barriers or for
        a copy thread)."""
        return any(p.ready for p in self._pending)

    def _next_ready(self) -> _PendingSnapshot | None:
        """The oldest snapshot that can make progress now.

        Usually the oldest one. But a snapshot waiting for its LMDB copy thread (or for
        in-flight data) does not hold up a later one that is ready: above all the final
        checkpoint of a bounded job, which carries no keyed state, acknowledges at once
        instead of after the upload of the periodic checkpoint before it; completing it
        subsumes that one, whose copy is then cancelled. The JobManager takes
        acknowledgements of different checkpoints in any order.
        """
        for pending in self._pending:
            if pending.ready:
                return pending
        return None

    def checkpoint(
        self,
        barrier: Barrier,
        location: str,
        emit_barrier: bool,
        channels: ChannelStateCollector | None = None,
    ) -> None:
        """Synchronous part; the asynchronous part is queued for :meth:`pump`.

        With ``channels`` (an unaligned checkpoint) the barrier overtakes the output
        buffers still waiting for credit: they are copied into ``channels`` and the
        consumers are told of the barrier ahead of them.
        """
        task = self.task
        started = time.perf_counter()
        cid = barrier.checkpoint_id
        if cid <= self.last_taken:
            return  # already taken (a direct trigger that crossed its barrier)
        self.last_taken = cid
        if emit_barrier and channels is not None:
            task_index = task.info.checkpointing["task_index"]
            for p, partition in enumerate(task.net.partitions):
                edge = task.spec.out_edges[p].edge_index
                descriptors = task.info.network.partitions[p].subpartitions
                for sub, desc in zip(partition.subpartitions, descriptors, strict=True):
                    in_flight = sub.snapshot_in_flight()
                    channels.outputs.append(
                        ChannelStateEntry(
                            edge,
                            task_index[desc.peer_task],
                            desc.peer_channel,
                            PRODUCER,
                            buffers=in_flight,
                        )
                    )
                    sub.post_priority_barrier(cid)
        elif emit_barrier:
            payload = barrier.encode()
            for partition in task.net.partitions:
                partition.broadcast_event(EventKind.CHECKPOINT_BARRIER, payload)
        try:
            parts = []
            for node, op in zip(task.spec.nodes, task.operators, strict=True):
                op.prepare_snapshot(cid, barrier.timestamp)
                ctx = op.ctx
                backend = ctx.keyed_backend
                timers = []
                # The final checkpoint of a bounded job comes after every input ended and
                # every timer fired: a restore from it replays nothing, so keyed state is not
                # needed -- only what commits output (sink and source operator state).
                final = bool(barrier.flags & FLAG_FINAL)
                if final:
                    backend = None
                if ctx.timer_service is not None and backend is not None and len(ctx.timer_service):
                    timers = [
                        _ipc(batch) for batch in ctx.timer_service.snapshot(backend.key_serializer)
                    ]
                parts.append(
                    (
                        node.operator_id,
                        ctx.operator_state_store.snapshot(),
                        self._keyed_snapshot(backend, barrier, node.operator_id),
                        timers,
                        backend.key_group_range if backend is not None else None,
                    )
                )
        except Exception as exc:
            self._decline(cid, exc)
            return
        sync_ms = (time.perf_counter() - started) * 1000.0
        if self.collects:
            # in order with the collected records: those before belong to this checkpoint
            task.control.send(("snapshot_taken", cid))
        steps = self._write(cid, location, parts, started, sync_ms, channels)
        self._pending.append(_PendingSnapshot(cid, steps, started, sync_ms, channels))

    def _keyed_snapshot(self, backend: Any, barrier: Barrier, operator_id: str) -> Any:
        """A native LMDB copy for checkpoints (cheap, on a thread), the backend-neutral
        Arrow rows for savepoints (portable, as Flink's canonical savepoint format)."""
        if backend is None:
            return None
        native = getattr(backend, "native_checkpoint", None)
        if native is not None and not barrier.flags & FLAG_SAVEPOINT and self.native:
            name = f"{operator_id[:16]}-{self.task.info.index}-state.mdb"
            location = barrier.location

            def write(copy: Callable[[int], None]) -> StateHandle:  # on the copy's thread
                return write_state_file_from(location, name, copy)

            return native(write)
        return backend.snapshot_async()

    def pump(self) -> None:
        """Write one more file of the oldest ready snapshot (acknowledge it when done)."""
        pending = self._next_ready()
        if pending is None:
            return
        try:
            step = next(pending.steps)
            pending.blocker = step  # None, or work running on a thread
            if pending.blocker is not None:
                pending.blocker.on_done = self._wake  # before anyone checks ``done``
        except StopIteration:
            self._pending.remove(pending)
        except Exception as exc:
            self._pending.remove(pending)
            self._decline(pending.checkpoint_id, exc)

    def pump_for(self, seconds: float) -> None:
        """Pump for up to ``seconds`` (at least one step): small snapshots finish at once,
        a large one shares the task's time with record processing."""
        deadline = time.perf_counter() + seconds
        self.pump()
        while self.busy and time.perf_counter() < deadline:
            self.pump()

    def complete_all(self) -> None:
        """Finish every pending snapshot now (after the final checkpoint, before closing)."""
        while self._pending:
            if self.busy:
                self.pump()
                continue
            copying = [p.blocker for p in self._pending if p.blocker is not None]
            if not copying:
                return  # in-flight data still to come: it cannot
            copying[0].join()  # wait for the copy thread

    def abort(self, checkpoint_id: int) -> None:
        """Drop pending snapshots up to ``checkpoint_id`` (the JobManager gave up on them)."""
        keep: deque[_PendingSnapshot] = deque()
        for pending in self._pending:
            if pending.checkpoint_id <= checkpoint_id:
                pending.steps.close()
            else:
                keep.append(pending)
        self._pending = keep

    def _write(
        self,
        cid: int,
        location: str,
        parts: list,
        started: float,
        sync_ms: float,
        channels: ChannelStateCollector | None,
    ) -> Iterator[Any]:
        """The asynchronous part, one step per ``next``: yields work running on a thread
        (an LMDB copy, a file write) until it is done, and acknowledges at the end."""
        task = self.task
        index = task.info.index
        written = 0
        operators: dict[str, dict] = {}
        try:
            for operator_id, op_streams, keyed, timers, key_groups in parts:
                prefix = f"{operator_id[:16]}-{index}"
                entry: dict[str, list] = {"operator": [], "keyed": [], "timers": []}
                for i, stream in enumerate(op_streams):
                    handle = yield from _write_in_thread(location, f"{prefix}-op{i}.arrow", stream)
                    written += handle.size
                    entry["operator"].append(handle.to_json())
                if isinstance(keyed, NativeCopy):
                    while not keyed.done:
                        yield keyed  # copied and uploaded on a thread meanwhile
                    handle = keyed.result()
                    written += handle.size
                    entry["keyed"].append(_ranged(handle, key_groups, format="lmdb"))
                    yield
                elif keyed is not None:
                    for i, stream in enumerate(keyed.streams()):  # each made here, in turn
                        name = f"{prefix}-kg{i}.arrow"
                        handle = yield from _write_in_thread(location, name, stream)
                        written += handle.size
                        entry["keyed"].append(_ranged(handle, key_groups))
                for i, stream in enumerate(timers):
                    name = f"{prefix}-timers{i}.arrow"
                    handle = yield from _write_in_thread(location, name, stream)
                    written += handle.size
                    entry["timers"].append(_ranged(handle, key_groups))
                operators[operator_id] = entry
            channel_files = []
            if channels is not None:
                entries = channels.entries()
                if entries:
                    name = f"channels-{task.info.task_id}.bin"
                    handle = yield from _write_in_thread(location, name, encode_entries(entries))
                    written += handle.size
                    edges = sorted({e.edge for e in entries})
                    channel_files.append({"handle": handle.to_json(), "edges": edges})
        finally:
            for _, _, keyed, _, _ in parts:
                if isinstance(keyed, NativeCopy):
                    keyed.cancel()
                elif keyed is not None and keyed.pending:
                    keyed.cancel()
        task.control.send(
            (
                "ack",
                cid,
                {
                    "subtask": index,
                    "operators": operators,
                    "channels": channel_files,
                    "bytes": written,
                    "sync_ms": sync_ms,
                    "total_ms": (time.perf_counter() - started) * 1000.0,
                },
            )
        )

    def _decline(self, cid: int, exc: BaseException) -> None:
        task = self.task
        reason = f"{task.spec.vertex_name} ({task.subtask}): {exc}"
        if not hasattr(exc, "operator"):
            reason += "\n" + "".join(traceback.format_exception(exc)).rstrip()
        task.control.send(("decline", cid, reason))


def _ranged(handle: StateHandle, key_groups: Any, **extra: str) -> dict:
    """A metadata entry for a file holding the rows of a key-group range."""
    return {"handle": handle.to_json(), "key_groups": [key_groups.start, key_groups.end], **extra}


def _ipc(batch: pa.RecordBatch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def _native_rows(data: pa.Buffer, own: Any, working_dir: str | None) -> list[pa.Buffer]:
    """Rows of ``own`` key groups from a native LMDB checkpoint file."""
    import tempfile

    from flowrun.state.backends.lmdb_native import native_streams

    fd, path = tempfile.mkstemp(suffix=".mdb", dir=working_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(memoryview(data))
        return native_streams(path, own)
    finally:
        os.unlink(path)


def _overlaps(key_groups: list[int], own: Any) -> bool:
    return key_groups[0] <= own.end and own.start <= key_groups[1]


def restore_operator_state(
    ctx: Any, location: str, snapshot: dict, working_dir: str | None = None
) -> None:
    """Load one operator's state of a completed checkpoint into ``ctx`` (before ``open``).

    ``snapshot`` is the operator's entry of the checkpoint metadata: ``subtasks`` lists, per
    old subtask, the handles of its operator state, keyed state and timers.
    """
    from flowrun.state.operator_state import redistribute

    subtasks = snapshot["subtasks"]
    ctx.restored = True
    per_old = [
        [read_state_file(location, StateHandle.from_json(h)) for h in sub.get("operator", [])]
        for sub in subtasks
    ]
    if any(per_old):
        mine = redistribute(per_old, ctx.parallelism)[ctx.index]
        ctx.operator_state_store.restore(mine)
    keyed = [e for sub in subtasks for e in sub.get("keyed", [])]
    timers = [e for sub in subtasks for e in sub.get("timers", [])]
    backend = ctx.keyed_backend
    if backend is None:
        if keyed or timers:
            raise RuntimeError(
                f"operator {ctx.operator_uid!r} has keyed state in the checkpoint but is not "
                "keyed in this job (was key_by() removed?)"
            )
        return
    own = backend.key_group_range
    keyed = [e for e in keyed if _overlaps(e["key_groups"], own)]
    files = read_state_files(location, [StateHandle.from_json(e["handle"]) for e in keyed])
    streams = []
    for e, data in zip(keyed, files, strict=True):
        if e.get("format") == "lmdb":
            streams.extend(_native_rows(data, own, working_dir))
        else:
            streams.append(data)
    if streams:
        backend.restore(streams)
    for e in timers:
        if _overlaps(e["key_groups"], own):
            data = read_state_file(location, StateHandle.from_json(e["handle"]))
            batches = list(pa.ipc.open_stream(data))
            ctx.timer_service.restore(batches, backend.key_serializer, own)


def replay_channel_state(task: Any, restore: dict) -> None:
    """Process the in-flight records of an unaligned checkpoint before any new input.

    Records of a hash-partitioned edge go to the subtask that owns their key group now
    (the edge's partitioner decides, at the new parallelism); other edges give the data of
    old consumer ``j`` to new subtask ``j % parallelism``.
    """
    info = task.info
    spec = task.spec
    wanted = {e.edge_index: i for i, e in enumerate(spec.in_edges)}
    entries = []
    for item in restore.get("channel_state", []):
        if not wanted.keys() & set(item["edges"]):
            continue
        data = read_state_file(restore["location"], StateHandle.from_json(item["handle"]))
        entries.extend(e for e in decode_entries(data) if e.edge in wanted)
    if not entries:
        return
    process = task.operators[0].process
    for edge_index, gate_index in wanted.items():
        edge = spec.in_edges[gate_index]
        mine = [e for e in entries if e.edge == edge_index]
        if not mine:
            continue
        serializer = task.in_serializers[gate_index]
        partitioner = None
        if edge.partitioner is not None and edge.partitioner.name == "HASH":
            partitioner = copy.copy(edge.partitioner)
            partitioner.setup(info.parallelism, info.index)
        for old_consumer, batches in replay_batches(mine):
            if partitioner is None and old_consumer % info.parallelism != info.index:
                continue
            for batch in batches:
                records: Any = batch if serializer is None else serializer.from_batch(batch)
                if partitioner is not None:
                    parts = (
                        partitioner.split_batch(records)
                        if serializer is None
                        else partitioner.split_rows(records)
                    )
                    records = parts[info.index]
                    if records is None:
                        continue
                if (serializer is None and records.num_rows) or (
                    serializer is not None and records
                ):
                    process(records, edge.input_index)
