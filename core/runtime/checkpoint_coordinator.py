"""The JobManager side of checkpoints (Flink's CheckpointCoordinator).

It decides when a checkpoint starts (interval, min pause, max concurrent), tells the source
subtasks to inject barrier *n* (also sources whose input ended: the barrier follows their
END_OF_DATA, so tasks downstream still complete checkpoints), collects one acknowledgement per subtask
with the handles of the files it wrote, and completes the checkpoint by writing
``_metadata`` -- last and atomically, so a checkpoint without it does not exist -- and
notifying every subtask. Timeouts and declines abort a checkpoint; more consecutive failures
than ``tolerable-failed-checkpoints`` fail the job. Only the newest
``state.checkpoints.num-retained`` completed checkpoints are kept.

The coordinator does no I/O on the network stack and holds no thread: the JobManager's
supervision loop calls :meth:`poll` when :meth:`next_deadline` passes and forwards the
subtasks' messages.

The completed checkpoint's metadata maps operator ids to the files of each old subtask::

    {"job_id": ..., "checkpoint_id": 7, "timestamp": ..., "kind": "checkpoint",
     "operators": {"<operator id>": {"name": ..., "uid": ..., "parallelism": 2,
                                     "max_parallelism": 128,
                                     "subtasks": [{"operator": [...], "keyed": [...],
                                                   "timers": [...]}, ...]}}}
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import config as cfg
from .checkpoint_barrier_handler import FLAG_FINAL, FLAG_SAVEPOINT, FLAG_STOP, FLAG_UNALIGNED
from .checkpoint_storage import (
    CheckpointStorage,
    StateHandle,
    discard_location,
    retain_checkpoints,
    write_metadata,
)

__all__ = ["CheckpointCoordinator", "CheckpointFailure", "CompletedCheckpoint", "TaskRef"]


class CheckpointFailure(RuntimeError):
    """Too many checkpoints failed in a row (``tolerable-failed-checkpoints`` exceeded)."""


@dataclass
class TaskRef:
    """What the coordinator needs to know of a subtask."""

    task_id: int
    index: int
    parallelism: int
    is_source: bool
    operators: list[tuple[str, str, str | None, int]]  #: (operator id, name, uid, max par.)


@dataclass
class CompletedCheckpoint:
    checkpoint_id: int
    location: str
    is_savepoint: bool
    timestamp: int
    duration_ms: float
    size: int
    sync_ms: float = 0.0  #: longest synchronous part over the subtasks
    async_ms: float = 0.0  #: longest asynchronous part (files written) over the subtasks


@dataclass
class _Pending:
    checkpoint_id: int
    timestamp: int
    location: str
    is_savepoint: bool
    started: float
    waiting: set[int]
    acks: dict[int, dict] = field(default_factory=dict)
    final: bool = False
    on_done: list[Callable[[CompletedCheckpoint | None, str | None], None]] = field(
        default_factory=list
    )
    #: an aligned attempt of an unaligned-enabled checkpoint (aligned-checkpoint-timeout)
    aligned_first: bool = False


class CheckpointCoordinator:
    """Triggers, tracks and completes the checkpoints and savepoints of one job."""

    def __init__(
        self,
        config: Any,
        job_id: str,
        tasks: list[TaskRef],
        send: Callable[[int, tuple], None],
        checkpoint_dir: str,
        first_checkpoint_id: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_complete: Callable[[int], None] | None = None,
    ) -> None:
        self.job_id = job_id
        self.on_complete = on_complete
        self.tasks = {t.task_id: t for t in tasks}
        self.send = send
        self.clock = clock
        self.interval_s = max(0, config.get(cfg.CHECKPOINTING_INTERVAL)) / 1000.0
        self.periodic = config.get(cfg.CHECKPOINTING_INTERVAL) > 0
        self.timeout_s = config.get(cfg.CHECKPOINTING_TIMEOUT) / 1000.0
        self.min_pause_s = config.get(cfg.MIN_PAUSE_BETWEEN_CHECKPOINTS) / 1000.0
        self.max_concurrent = config.get(cfg.MAX_CONCURRENT_CHECKPOINTS)
        self.tolerable = config.get(cfg.TOLERABLE_FAILED_CHECKPOINTS)
        self.unaligned = bool(config.get(cfg.ENABLE_UNALIGNED)) and (
            config.get(cfg.CHECKPOINTING_MODE) == "EXACTLY_ONCE"
        )
        self.aligned_timeout_s = config.get(cfg.ALIGNED_CHECKPOINT_TIMEOUT) / 1000.0
        self.num_retained = config.get(cfg.MAX_RETAINED_CHECKPOINTS)
        self.storage = CheckpointStorage(checkpoint_dir, job_id)
        self.checkpoint_dir = checkpoint_dir
        self.next_id = first_checkpoint_id
        self.pending: dict[int, _Pending] = {}
        self.completed: list[CompletedCheckpoint] = []
        self.history: list[CompletedCheckpoint] = []  #: every completed one, savepoints too
        self.ended: set[int] = set()  #: subtasks that reached their end (final checkpoint)
        self.failed_in_a_row = 0
        self.stats = {"completed": 0, "failed": 0}
        self._last_done = clock()
        self._next_trigger = clock() + self.interval_s if self.periodic else None
        self.final_done = False

    # -- timing --------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        deadlines = [p.started + self.timeout_s for p in self.pending.values()]
        deadlines += [
            p.started + self.aligned_timeout_s for p in self.pending.values() if p.aligned_first
        ]
        if self._next_trigger is not None:
            deadlines.append(self._next_trigger)
        return min(deadlines) if deadlines else None

    def poll(self) -> None:
        """Trigger a due checkpoint; expire the ones past their timeout."""
        now = self.clock()
        for pending in list(self.pending.values()):
            if now - pending.started >= self.timeout_s:
                self._fail(pending, f"expired after {self.timeout_s * 1000:.0f} ms", count=True)
            elif pending.aligned_first and now - pending.started >= self.aligned_timeout_s:
                # Alignment takes too long (backpressure): give the aligned attempt up and
                # take the checkpoint unaligned instead.
                self._fail(pending, "aligned checkpoint timeout, switching to unaligned", False)
                self.trigger(unaligned=True)
        if self._next_trigger is None or now < self._next_trigger:
            return
        if len(self.pending) >= self.max_concurrent or self.ended == set(self.tasks):
            self._next_trigger = now + min(self.interval_s, 0.05)
            return
        earliest = self._last_done + self.min_pause_s
        if now < earliest:
            self._next_trigger = earliest
            return
        self.trigger()
        self._next_trigger = now + self.interval_s

    # -- triggering ------------------------------------------------------------------
    def trigger(
        self,
        savepoint_dir: str | None = None,
        final: bool = False,
        stop: bool = False,
        unaligned: bool | None = None,
        on_done: Callable[[CompletedCheckpoint | None, str | None], None] | None = None,
    ) -> int:
        """Start checkpoint (or savepoint into ``savepoint_dir``) ``n``; returns ``n``."""
        cid = self.next_id
        self.next_id += 1
        is_savepoint = savepoint_dir is not None
        location = (
            self.storage.savepoint_location(savepoint_dir)
            if is_savepoint
            else self.storage.checkpoint_location(cid)
        )
        timestamp = time.time_ns() // 1_000_000
        pending = _Pending(
            cid, timestamp, location, is_savepoint, self.clock(), set(self.tasks), final=final
        )
        if on_done is not None:
            pending.on_done.append(on_done)
        flags = (
            (FLAG_SAVEPOINT if is_savepoint else 0)
            | (FLAG_STOP if stop else 0)
            | (FLAG_FINAL if final else 0)
        )
        unaligned_ok = self.unaligned and not is_savepoint and not final  # savepoints align
        # With aligned-checkpoint-timeout, a checkpoint starts aligned (see poll()).
        pending.aligned_first = unaligned_ok and unaligned is None and self.aligned_timeout_s > 0
        unaligned = unaligned_ok and not pending.aligned_first
        self.pending[cid] = pending
        if unaligned:
            flags |= FLAG_UNALIGNED
        barrier = (cid, timestamp, flags, location)
        if unaligned:
            # Priority barriers travel as doorbell messages without room for the location:
            # every subtask learns it here, before any source injects the barrier.
            for task in self.tasks.values():
                self.send(task.task_id, ("checkpoint_location", barrier))
        for task in self.tasks.values():
            if task.is_source:
                self.send(task.task_id, ("trigger_checkpoint", barrier))
        return cid

    # -- subtask messages ----------------------------------------------------------------
    def on_ack(self, task_id: int, checkpoint_id: int, payload: dict) -> None:
        pending = self.pending.get(checkpoint_id)
        if pending is None or task_id not in pending.waiting:
            return  # late ack of an aborted checkpoint
        pending.waiting.discard(task_id)
        pending.acks[task_id] = payload
        if not pending.waiting:
            self._complete(pending)

    def on_decline(self, task_id: int, checkpoint_id: int, reason: str) -> None:
        pending = self.pending.get(checkpoint_id)
        if pending is not None:
            self._fail(pending, f"declined by subtask {task_id}: {reason}", count=True)

    def on_end_reached(self, task_id: int) -> None:
        """A subtask reached its end of data; once all have, the final checkpoint follows.

        It stays up and takes part in checkpoints as before: barriers follow its
        END_OF_DATA downstream (FLIP-147's checkpoints after tasks finished).
        """
        self.ended.add(task_id)

    @property
    def all_ended(self) -> bool:
        return self.ended == set(self.tasks)

    # -- completion ------------------------------------------------------------------
    def _complete(self, pending: _Pending) -> None:
        del self.pending[pending.checkpoint_id]
        operators: dict[str, dict] = {}
        handles: list[StateHandle] = []
        channel_state: list[dict] = []
        size = 0
        for task in sorted(self.tasks.values(), key=lambda t: t.task_id):
            ack = pending.acks[task.task_id]
            size += ack.get("bytes", 0)
            for item in ack.get("channels", []):
                channel_state.append(item)
                handles.append(StateHandle.from_json(item["handle"]))
            for operator_id, name, uid, max_parallelism in task.operators:
                entry = operators.setdefault(
                    operator_id,
                    {
                        "name": name,
                        "uid": uid,
                        "parallelism": task.parallelism,
                        "max_parallelism": max_parallelism,
                        "subtasks": [{} for _ in range(task.parallelism)],
                    },
                )
                files = ack["operators"].get(operator_id, {})
                entry["subtasks"][task.index] = files
                handles.extend(StateHandle.from_json(h) for h in files.get("operator", []))
                for kind in ("keyed", "timers"):
                    handles.extend(StateHandle.from_json(e["handle"]) for e in files.get(kind, []))
        metadata = {
            "job_id": self.job_id,
            "checkpoint_id": pending.checkpoint_id,
            "timestamp": pending.timestamp,
            "kind": "savepoint" if pending.is_savepoint else "checkpoint",
            "operators": operators,
            "channel_state": channel_state,
        }
        try:
            write_metadata(pending.location, metadata, handles)
        except Exception as exc:
            self._fail(pending, f"writing its metadata failed: {exc}", count=True)
            return
        completed = CompletedCheckpoint(
            pending.checkpoint_id,
            pending.location,
            pending.is_savepoint,
            pending.timestamp,
            (self.clock() - pending.started) * 1000.0,
            size,
            max((a.get("sync_ms", 0.0) for a in pending.acks.values()), default=0.0),
            max(
                (a.get("total_ms", 0.0) - a.get("sync_ms", 0.0) for a in pending.acks.values()),
                default=0.0,
            ),
        )
        self.history.append(completed)
        self.failed_in_a_row = 0
        self.stats["completed"] += 1
        self._last_done = self.clock()
        if not pending.is_savepoint:
            self.completed.append(completed)
            # Older pending checkpoints are subsumed (Flink aborts them the same way).
            for older in [
                p for p in self.pending.values() if p.checkpoint_id < completed.checkpoint_id
            ]:
                if not older.is_savepoint:
                    self._fail(older, "subsumed by a newer checkpoint", count=False)
            self.completed = self.completed[-self.num_retained :]
        if self.on_complete is not None:
            self.on_complete(completed.checkpoint_id)
        for task_id in self.tasks:
            self.send(task_id, ("notify_complete", completed.checkpoint_id))
        if not pending.is_savepoint:
            # After the notifications: deleting the old checkpoints' files takes milliseconds
            # that the tasks (sinks committing, the end of a bounded job) need not wait for.
            try:
                retain_checkpoints(self.checkpoint_dir, self.job_id, self.num_retained)
            except Exception as exc:  # retention is housekeeping: never fail the job for it
                sys.stderr.write(f"flowrun: could not remove old checkpoints: {exc}\n")
        if pending.final:
            self.final_done = True
        for callback in pending.on_done:
            callback(completed, None)

    def _fail(self, pending: _Pending, reason: str, count: bool) -> None:
        self.pending.pop(pending.checkpoint_id, None)
        for task_id in self.tasks:
            self.send(task_id, ("abort_checkpoint", pending.checkpoint_id))
        try:
            discard_location(pending.location)
        except Exception:
            pass
        kind = "Savepoint" if pending.is_savepoint else "Checkpoint"
        message = f"{kind} {pending.checkpoint_id} of job {self.job_id} failed: {reason}"
        for callback in pending.on_done:
            callback(None, message)
        if not count:
            return
        self.stats["failed"] += 1
        sys.stderr.write(f"flowrun: {message}\n")
        if pending.is_savepoint:
            return  # a failed savepoint does not count against the job (as Flink)
        self.failed_in_a_row += 1
        if pending.final or self.failed_in_a_row > self.tolerable:
            raise CheckpointFailure(
                f"{message}\nExceeded checkpoint tolerable failure threshold "
                f"({self.tolerable}); the job fails."
                if not pending.final
                else f"The final checkpoint failed: {message}"
            )

    def abort_all(self, reason: str) -> None:
        """Abort every pending checkpoint without counting it as a failure."""
        for pending in list(self.pending.values()):
            self._fail(pending, reason, count=False)

    def latest(self) -> CompletedCheckpoint | None:
        return self.completed[-1] if self.completed else None
