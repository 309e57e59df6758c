"""The JobManager: deploys one process per subtask, watches them, cleans up.

It runs in the client's process (Flink's application mode). Deployment: expand
the JobGraph into an ExecutionPlan, create the shared-memory buffer pool and
one doorbell pipe per subtask, fork every subtask through the fork server with
exactly its file descriptors (the pool's memory is an anonymous memfd passed
by descriptor, so there is no name in /dev/shm to leak). Supervision: one ``select`` over the control sockets and
a pidfd per subtask, so a crash or ``kill -9`` is seen the moment it happens
and fails the job. Whatever the outcome, every subtask is gone and the segment
unlinked when :meth:`JobManager.run` returns.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from flowrun.network.buffer_pool import NetworkBufferPool, cleanup_stale_segments
from flowrun.network.doorbell import create_doorbell_pipe

from .. import config as cfg
from ..graph.job_graph import JobGraph
from .checkpoint_coordinator import CheckpointCoordinator, CheckpointFailure, TaskRef
from .execution_graph import ExecutionPlan
from .forkserver import get_fork_server
from .rest_server import JobEndpoint
from .stream_task import ChainNodeSpec, ChainSpec, InEdgeSpec, OutEdgeSpec, TaskInfo

__all__ = ["JobManager", "JobExecutionError", "JobCancelledError", "JobOutcome"]


class JobExecutionError(RuntimeError):
    """The job failed; the message says which operator, subtask and record, and why."""


class JobCancelledError(JobExecutionError):
    """The job was cancelled (Ctrl-C or an explicit cancel)."""


@dataclass
class JobOutcome:
    job_id: str
    net_runtime_ms: int
    metrics: dict[int, dict] = field(default_factory=dict)
    savepoint_path: str | None = None  #: set when the job was stopped with a savepoint
    checkpoints: list = field(default_factory=list)  #: CompletedCheckpoint of every attempt
    #: per restart: {"cause", "failed_at", "deployed_at", "running_at"} (time.monotonic())
    restarts: list[dict] = field(default_factory=list)


def _chain_spec(job_graph: JobGraph, vertex_index: int) -> ChainSpec:
    vertex = job_graph.vertices[vertex_index]
    config = job_graph.config
    position = {n.id: i for i, n in enumerate(vertex.nodes)}
    for n in vertex.nodes:  # .name() set after the operator was created
        n.factory.name = n.name
    nodes = [
        ChainNodeSpec(
            name=n.name,
            operator=n.factory,
            operator_id=job_graph.operator_ids[n.id],
            output_type=n.output_type,
            arrow=n.arrow,
            max_parallelism=n.max_parallelism,
        )
        for n in vertex.nodes
    ]
    for e in vertex.chained_edges:
        nodes[position[e.source.id]].children.append(position[e.target.id])
    out_edges = []
    for i, e in enumerate(vertex.out_edges):
        src = e.stream_edge.source
        nodes[position[src.id]].partitions.append(i)
        out_edges.append(
            OutEdgeSpec(e.partitioner, src.output_type, src.arrow, e.target.name, e.index)
        )
    in_edges = [
        InEdgeSpec(
            e.stream_edge.source.output_type,
            e.stream_edge.source.arrow,
            e.stream_edge.input_index,
            e.index,
            e.partitioner,
        )
        for e in vertex.in_edges
    ]
    timeouts = [n.buffer_timeout for n in vertex.nodes if n.buffer_timeout not in (None, -2)]
    buffer_timeout = min(timeouts) if timeouts else config.get(cfg.BUFFER_TIMEOUT)
    return ChainSpec(
        vertex_name=vertex.name,
        nodes=nodes,
        out_edges=out_edges,
        in_edges=in_edges,
        is_source=vertex.is_source,
        buffer_timeout=buffer_timeout,
        source_batch_size=config.get(
            cfg.ARROW_SOURCE_BATCH_SIZE
            if vertex.is_source and vertex.nodes[0].arrow
            else cfg.SOURCE_BATCH_SIZE
        ),
    )


class _Subtask:
    __slots__ = ("ev", "control", "pid", "pidfd", "state", "metrics")

    def __init__(self, ev, control: Connection, pid: int, pidfd: int) -> None:
        self.ev = ev
        self.control = control
        self.pid = pid
        self.pidfd = pidfd
        self.state = "deploying"
        self.metrics: dict = {}


class JobManager:
    """Runs one job to completion (bounded) or until it fails or is cancelled."""

    def __init__(
        self,
        job_graph: JobGraph,
        job_id: str | None = None,
        on_collect: Callable[[list], None] | None = None,
        job_parameters: dict | None = None,
        state_backend: Any = None,
        job_name: str | None = None,
    ) -> None:
        # A backend object when the job set one, else the configured name: the subtasks build
        # it (the JobManager process never loads LMDB and the backends' modules).
        self.state_backend = state_backend or job_graph.config.get(cfg.STATE_BACKEND)
        self.job_graph = job_graph
        self.config = job_graph.config
        # FLOWRUN_JOB_ID: set by `flowrun run -d`, which must know the id first (one job only)
        self.job_id = job_id or os.environ.pop("FLOWRUN_JOB_ID", None) or uuid.uuid4().hex
        self.on_collect = on_collect
        self.job_parameters = job_parameters or {}
        self._cancel_r, self._cancel_w = os.pipe()
        self._cancel_reason: str | None = None
        #: requests from other threads (REST): served by the supervision loop
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        self._stopped_with: str | None = None  #: savepoint path of a stop-with-savepoint
        self.job_name = job_name or job_graph.job_name
        self.start_time_ms = int(time.time() * 1000)
        self.end_time_ms: int | None = None
        self.subtasks: list[_Subtask] = []
        self.status = "CREATED"
        self._lock = threading.Lock()
        self.coordinator: CheckpointCoordinator | None = None

    # -- public -------------------------------------------------------------------
    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel from any thread (or a signal handler)."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        try:
            os.write(self._cancel_w, b"x")
        except OSError:
            pass

    def trigger_savepoint(
        self, target_directory: str | None = None, stop: bool = False
    ) -> concurrent.futures.Future:
        """Take a savepoint from any thread; the future's result is its path.

        With ``stop`` the sources stop right after the savepoint barrier (nothing is
        emitted after it), and the job ends once the savepoint completed: Flink's
        stop-with-savepoint. Without a target the configured ``state.savepoints.dir`` is used.
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        self._requests.put(("savepoint", target_directory, stop, future))
        try:
            os.write(self._wake_w, b"r")
        except OSError:
            future.set_exception(JobExecutionError(f"job {self.job_id} is not running"))
        return future

    def overview(self) -> dict:
        """A JSON-able picture of the job for the REST API (Flink's field names)."""
        now = int(time.time() * 1000)
        end = self.end_time_ms or -1
        vertices = []
        for vertex in self.job_graph.vertices:
            states = [s.state for s in self.subtasks if s.ev.vertex is vertex]
            vertices.append(
                {
                    "id": vertex.id,
                    "name": vertex.name,
                    "parallelism": vertex.parallelism,
                    "status": _vertex_status(states, self.status),
                    "tasks": {state: states.count(state) for state in set(states)},
                }
            )
        coordinator = self.coordinator
        checkpoints = {
            "enabled": bool(getattr(self, "checkpointing", False)),
            "completed": len(self.completed_checkpoints)
            + (coordinator.stats["completed"] if coordinator is not None else 0),
            "failed": coordinator.stats["failed"] if coordinator is not None else 0,
            "in_progress": len(coordinator.pending) if coordinator is not None else 0,
            "latest": None,
        }
        latest = coordinator.latest() if coordinator is not None else None
        if latest is None and self.completed_checkpoints:
            latest = self.completed_checkpoints[-1]
        if latest is not None:
            checkpoints["latest"] = {
                "id": latest.checkpoint_id,
                "external_path": latest.location,
                "duration": round(latest.duration_ms),
                "state_size": latest.size,
                "trigger_timestamp": latest.timestamp,
            }
        return {
            "jid": self.job_id,
            "name": self.job_name,
            "state": self.status,
            "start-time": self.start_time_ms,
            "end-time": end,
            "duration": (self.end_time_ms or now) - self.start_time_ms,
            "attempt": getattr(self, "attempt", 0),
            "restarts": len(getattr(self, "failures", [])),
            "vertices": vertices,
            "checkpoints": checkpoints,
        }

    def subtask_pids(self) -> list[int]:
        return [s.pid for s in self.subtasks]

    def run(self) -> JobOutcome:
        """Run the job; on failure restart it as the restart strategy says, from the latest
        completed checkpoint (or the savepoint it was started from)."""
        from .restart_backoff import create_restart_strategy

        conf = self.config
        cleanup_stale_segments()
        cleanup_stale_working_dirs(conf.get(cfg.WORKING_DIR))
        workdir = tempfile.mkdtemp(
            prefix=f"flowrun-job-{os.getpid()}-{self.job_id[:8]}-", dir=conf.get(cfg.WORKING_DIR)
        )
        self.workdir = workdir
        start = time.monotonic()
        self.status = "RUNNING"
        self.checkpointing = conf.get(cfg.CHECKPOINTING_INTERVAL) > 0
        self.checkpoint_dir = conf.get(cfg.CHECKPOINTS_DIRECTORY) or os.path.join(
            workdir, "checkpoints"
        )
        self.restart_strategy = create_restart_strategy(conf)
        self.attempt = 0
        self.failures: list[str] = []
        self.completed_checkpoints: list = []
        self.checkpoint_history: list = []
        self.restarts: list[dict] = []
        restore_path = conf.get(cfg.SAVEPOINT_PATH)
        self.restore_location = _resolve_restore(restore_path) if restore_path else None
        endpoint = JobEndpoint(self)  # REST API + job registry entry (flowrun list, cancel, ...)
        try:
            endpoint.start()
            plan = ExecutionPlan(
                self.job_graph,
                segment_size=conf.get(cfg.SEGMENT_SIZE),
                buffers_per_subpartition=conf.get(cfg.MAX_BUFFERS_PER_CHANNEL),
                exclusive_credits=conf.get(cfg.BUFFERS_PER_CHANNEL),
                floating_credits=conf.get(cfg.FLOATING_BUFFERS_PER_GATE),
            )
            self._region_of = _pipelined_regions(plan)
            if self.restore_location:
                # A savepoint that does not fit the job fails it at once (as Flink's
                # submission does); restarting would only fail the same way again.
                self._validated_restore = self._load_restore(self.restore_location)
            while True:
                try:
                    self._run_attempt(plan)
                    break
                except (JobExecutionError, CheckpointFailure) as exc:
                    self._failed_at = time.monotonic()
                    if isinstance(exc, JobCancelledError) or self._cancel_reason is not None:
                        raise
                    self._teardown()
                    self.restart_strategy.notify_failure(exc)
                    if not self.restart_strategy.can_restart():
                        if self.attempt:
                            raise JobExecutionError(
                                f"{exc}\n(job {self.job_id} gave up after {self.attempt} "
                                f"restart(s): {self.restart_strategy})"
                            ) from exc
                        raise
                    self._before_restart(exc)
            self.status = "FINISHED"
            self._dispose_checkpoints("FINISHED")
            return JobOutcome(
                self.job_id,
                int((time.monotonic() - start) * 1000),
                {s.ev.task_id: s.metrics for s in self.subtasks},
                self._stopped_with,
                self.checkpoint_history,
                self.restarts,
            )
        except BaseException:
            self.status = "FAILED" if self._cancel_reason is None else "CANCELED"
            self._dispose_checkpoints(self.status)
            raise
        finally:
            self._teardown()
            shutil.rmtree(workdir, ignore_errors=True)
            self.end_time_ms = int(time.time() * 1000)
            self._fail_requests()
            endpoint.close()
            os.close(self._cancel_r)
            os.close(self._cancel_w)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _fail_requests(self) -> None:
        while True:
            try:
                _kind, _target, _stop, future = self._requests.get_nowait()
            except queue.Empty:
                return
            future.set_exception(JobExecutionError(f"job {self.job_id} ended ({self.status})"))

    def _run_attempt(self, plan: ExecutionPlan) -> None:
        conf = self.config
        pool = NetworkBufferPool.create(self.job_id, plan.num_buffers, conf.get(cfg.SEGMENT_SIZE))
        attempt_dir = os.path.join(self.workdir, f"attempt-{self.attempt}")
        os.makedirs(attempt_dir, exist_ok=True)
        try:
            restore = getattr(self, "_validated_restore", None)
            self._validated_restore = None
            if restore is None and self.restore_location:
                restore = self._load_restore(self.restore_location)
            self._plan, self._pool, self._attempt_dir = plan, pool, attempt_dir
            self._task_attempts = {}
            self._deploy(plan, pool, attempt_dir, restore)
            if self.restarts:
                self.restarts[-1]["deployed_at"] = time.monotonic()
            self.coordinator = None
            self._collected: dict[int, list] = {}
            self._collect_marks: dict[int, dict[int, int]] = {}
            # The coordinator always runs: savepoints work without periodic checkpoints
            # (as in Flink); only with them do sinks wait for a final checkpoint.
            first_id = restore["checkpoint_id"] + 1 if restore else 1
            if self.completed_checkpoints:
                first_id = max(first_id, self.completed_checkpoints[-1].checkpoint_id + 1)
            self.coordinator = CheckpointCoordinator(
                conf,
                self.job_id,
                [self._task_ref(s.ev) for s in self.subtasks],
                self._send,
                self.checkpoint_dir,
                first_checkpoint_id=first_id,
                on_complete=self._release_collected,
            )
            self._supervise()
        finally:
            if self.coordinator is not None:
                self.checkpoint_history.extend(self.coordinator.history)
                self.completed_checkpoints = (
                    self.completed_checkpoints + self.coordinator.completed
                )[-max(1, conf.get(cfg.MAX_RETAINED_CHECKPOINTS)) :]
            self._teardown()
            pool.close()
            shutil.rmtree(attempt_dir, ignore_errors=True)

    def _before_restart(self, exc: BaseException) -> None:
        """Wait the strategy's backoff (cancellable), then pick the state to restore."""
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.restarts.append({"cause": first_line, "failed_at": self._failed_at})
        self.attempt += 1
        self.failures.append(first_line)
        backoff_ms = self.restart_strategy.get_backoff_time()
        latest = self._latest_valid_checkpoint()
        if latest is not None:
            self.restore_location = latest.location
        origin = (
            f"checkpoint {latest.checkpoint_id}"
            if latest is not None
            else ("the savepoint" if self.restore_location else "empty state")
        )
        sys.stderr.write(
            f"flowrun: job {self.job_id} failed: {first_line}\n"
            f"flowrun: restarting (attempt {self.attempt}) in {backoff_ms} ms from {origin}\n"
        )
        ready, _, _ = select.select([self._cancel_r], [], [], backoff_ms / 1000.0)
        if ready:
            raise JobCancelledError(f"Job {self.job_id} was {self._cancel_reason}.")
        self.subtasks = []

    def _latest_valid_checkpoint(self, candidates: list | None = None) -> Any:
        """The newest retained checkpoint whose files are all there (a damaged one is
        skipped with a warning, and the one before it used)."""
        from .checkpoint_storage import CheckpointStorageError, read_metadata

        if candidates is None:
            candidates = self.completed_checkpoints
        for completed in reversed(candidates):
            try:
                read_metadata(completed.location)
                return completed
            except CheckpointStorageError as exc:
                sys.stderr.write(
                    f"flowrun: checkpoint {completed.checkpoint_id} cannot be restored ({exc}); "
                    "trying the one before\n"
                )
        return None

    def _task_ref(self, ev: Any) -> TaskRef:
        vertex = ev.vertex
        return TaskRef(
            ev.task_id,
            ev.index,
            vertex.parallelism,
            vertex.is_source,
            [
                (self.job_graph.operator_ids[n.id], n.name, n.uid, n.max_parallelism)
                for n in vertex.nodes
            ],
        )

    def _send(self, task_id: int, message: tuple) -> None:
        try:
            self.subtasks[task_id].control.send(message)
        except OSError:
            pass  # the subtask is gone; supervision reports why

    def _load_restore(self, location: str) -> dict:
        """The checkpoint's metadata, checked against this job (uids, max parallelism)."""
        from .checkpoint_storage import read_metadata

        metadata, _handles = read_metadata(location)
        known: dict[str, Any] = {}
        for vertex in self.job_graph.vertices:
            for n in vertex.nodes:
                known[self.job_graph.operator_ids[n.id]] = n
        unmapped = [
            f"'{entry.get('name')}' (uid {entry.get('uid')!r}, operator id {op_id[:16]}...)"
            for op_id, entry in metadata["operators"].items()
            if op_id not in known and has_state(entry)
        ]
        if unmapped and not self.config.get(cfg.SAVEPOINT_IGNORE_UNCLAIMED_STATE):
            raise JobExecutionError(
                f"Cannot map the state in {location} to the job: no operator of this job "
                f"has the id of {', '.join(unmapped)}. Give operators stable uids with "
                f".uid(...), or allow dropping that state with --allow-non-restored-state "
                f"(-D execution.savepoint.ignore-unclaimed-state=true)."
            )
        for op_id, entry in metadata["operators"].items():
            node = known.get(op_id)
            if node is None or not any(sub.get("keyed") for sub in entry["subtasks"]):
                continue
            if entry["max_parallelism"] != node.max_parallelism:
                raise JobExecutionError(
                    f"Cannot restore operator '{node.name}' from {location}: its keyed state was "
                    f"written with max parallelism {entry['max_parallelism']}, the job now has "
                    f"{node.max_parallelism}. Key groups cannot be remapped; keep the max "
                    f"parallelism of a stateful operator (env.set_max_parallelism) unchanged."
                )
        return {
            "location": location,
            "checkpoint_id": int(metadata.get("checkpoint_id", 0)),
            "operators": metadata["operators"],
            "channel_state": metadata.get("channel_state", []),
        }

    def _dispose_checkpoints(self, status: str) -> None:
        """Flink's retention: finished jobs drop their checkpoints; cancelled ones too unless
        RETAIN_ON_CANCELLATION; failed ones keep them when checkpoints are externalized."""
        if not getattr(self, "checkpointing", False):
            return
        retention = self.config.get(cfg.EXTERNALIZED_CHECKPOINT)
        keep = (status == "CANCELED" and retention == "RETAIN_ON_CANCELLATION") or (
            status == "FAILED" and retention != "NO_EXTERNALIZED_CHECKPOINTS"
        )
        if keep:
            return
        from .checkpoint_storage import discard_location

        for completed in self.completed_checkpoints:
            try:
                discard_location(completed.location)
            except Exception:
                pass

    def _checkpointing_options(self, plan: ExecutionPlan) -> dict:
        return {
            "periodic": self.checkpointing,
            "native_lmdb": self.config.get(cfg.LMDB_NATIVE_CHECKPOINTS),
            "exactly_once": self.config.get(cfg.CHECKPOINTING_MODE) == "EXACTLY_ONCE",
            # subtask index of every task id: unaligned checkpoints name the consumer of
            # each channel whose in-flight data they store
            "task_index": {t.task_id: t.index for t in plan.tasks},
        }

    # -- deployment -----------------------------------------------------------------
    def _deploy(
        self,
        plan: ExecutionPlan,
        pool: NetworkBufferPool,
        working_dir: str,
        restore: dict | None,
        tasks: list | None = None,
    ) -> None:
        """Start ``tasks`` (default: every task of the plan); their peers are among them."""
        server = get_fork_server()
        tasks = plan.tasks if tasks is None else tasks
        specs = {
            v.index: cloudpickle.dumps(_chain_spec(self.job_graph, v.index))
            for v in {ev.vertex.index: ev.vertex for ev in tasks}.values()
        }
        doorbells = {t.task_id: create_doorbell_pipe() for t in tasks}
        try:
            for ev in tasks:
                peers = sorted(ev.peers)
                info = TaskInfo(
                    task_id=ev.task_id,
                    index=ev.index,
                    parallelism=ev.vertex.parallelism,
                    max_parallelism=ev.vertex.max_parallelism,
                    job_id=self.job_id,
                    attempt=self._task_attempts.get(ev.task_id, self.attempt),
                    peer_ids=peers,
                    network=plan.network[ev.task_id],
                    job_parameters=self.job_parameters,
                    main_file=getattr(sys.modules.get("__main__"), "__file__", None),
                    working_dir=working_dir,
                    state_backend=self.state_backend,
                    checkpointing=self._checkpointing_options(plan),
                    restore=_restore_of(restore, self.job_graph, ev.vertex),
                )
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                fds = [theirs.fileno(), doorbells[ev.task_id][0], pool.fd]
                fds.extend(doorbells[p][1] for p in peers)
                pid = server.spawn(
                    "flowrun.core.runtime.stream_task:run_subtask",
                    (specs[ev.vertex.index], info),
                    fds,
                )
                theirs.close()
                control = Connection(ours.detach())
                try:
                    pidfd = os.pidfd_open(pid)
                except ProcessLookupError:
                    pidfd = -1
                sub = _Subtask(ev, control, pid, pidfd)
                if ev.task_id < len(self.subtasks):
                    self.subtasks[ev.task_id] = sub  # a restarted region
                else:
                    self.subtasks.append(sub)
        finally:
            for r, w in doorbells.values():
                os.close(r)
                os.close(w)

    # -- supervision ----------------------------------------------------------------
    def _describe(self, sub: _Subtask) -> str:
        return f"subtask '{sub.ev.name}' (pid {sub.pid})"

    def _exit_status(self, sub: _Subtask) -> str:
        server = get_fork_server()
        for _ in range(50):
            server.poll_exits()
            if sub.pid in server.exit_codes:
                code = server.exit_codes[sub.pid]
                if code < 0:
                    try:
                        name = signal.Signals(-code).name
                    except ValueError:
                        name = str(-code)
                    return f"was killed by signal {name}"
                return f"exited with code {code}"
            time.sleep(0.002)
        return "exited"

    def _supervise(self) -> None:
        by_control = {s.control.fileno(): s for s in self.subtasks}
        by_pidfd = {s.pidfd: s for s in self.subtasks if s.pidfd >= 0}
        self._remaining = len(self.subtasks)
        poll_s = self.config.get(cfg.HEARTBEAT_INTERVAL) / 1000.0
        coordinator = self.coordinator
        while self._remaining:
            timeout = poll_s
            if coordinator is not None:
                deadline = coordinator.next_deadline()
                if deadline is not None:
                    timeout = max(0.0, min(timeout, deadline - time.monotonic()))
            fds = [self._cancel_r, self._wake_r, *by_control, *by_pidfd]
            ready, _, _ = select.select(fds, [], [], timeout)
            if self._cancel_r in ready:
                raise JobCancelledError(f"Job {self.job_id} was {self._cancel_reason}.")
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
                self._serve_requests()
            if self._stopped_with is not None:
                return  # stop-with-savepoint completed: the job ends here
            for fd in ready:
                sub = by_control.get(fd)
                if sub is None:
                    continue
                try:
                    try:
                        while sub.control.poll():
                            if self._on_message(sub, sub.control.recv()):
                                del by_control[fd]
                                break
                    except (EOFError, ConnectionResetError):
                        if sub.state != "finished":
                            raise JobExecutionError(
                                f"Job failed: {self._describe(sub)} {self._exit_status(sub)} "
                                "before finishing."
                            ) from None
                except JobCancelledError:
                    raise
                except JobExecutionError as exc:
                    self._on_task_failure(sub, exc, by_control, by_pidfd)
                    break  # the maps changed: select again
            else:
                for fd in ready:
                    sub = by_pidfd.get(fd)
                    if sub is None:
                        continue
                    del by_pidfd[fd]
                    if sub.state == "finished":
                        continue
                    try:
                        self._on_death(sub, by_control)
                    except JobCancelledError:
                        raise
                    except JobExecutionError as exc:
                        self._on_task_failure(sub, exc, by_control, by_pidfd)
                        break
            if coordinator is not None:
                coordinator.poll()
                self._drive_final_checkpoint()

    def _release_collected(self, checkpoint_id: int) -> None:
        """Hand the client what each subtask collected before its ack of the checkpoint."""
        marks = self._collect_marks.pop(checkpoint_id, {})
        for stale in [c for c in self._collect_marks if c < checkpoint_id]:
            del self._collect_marks[stale]
        for task_id, upto in sorted(marks.items()):
            held = self._collected[task_id]
            for records in held[:upto]:
                self.on_collect(records)
            del held[:upto]
            for other in self._collect_marks.values():  # later marks shift down
                if task_id in other:
                    other[task_id] -= upto

    def _on_death(self, sub: _Subtask, by_control: dict) -> None:
        """A subtask process ended: fine if it finished, else the job (or region) failed."""
        try:  # read what the subtask managed to say before it died
            while sub.control.poll():
                if self._on_message(sub, sub.control.recv()):
                    by_control.pop(sub.control.fileno(), None)
                    break
        except (EOFError, OSError):
            pass
        if sub.state != "finished":
            raise JobExecutionError(
                f"Job failed: {self._describe(sub)} {self._exit_status(sub)} before finishing."
            )

    def _on_task_failure(
        self, sub: _Subtask, exc: JobExecutionError, by_control: dict, by_pidfd: dict
    ) -> None:
        """Fail the job (full failover), or restart only the failed subtask's region.

        Flink's region failover: a pipelined region is a set of subtasks connected by data
        exchanges; a job whose graph has several (independent pipelines) restarts only the
        region of the failed subtask, from the latest completed checkpoint, while the others
        keep running.
        """
        region = self._region_of.get(sub.ev.task_id)
        if (
            self.config.get(cfg.FAILOVER_STRATEGY) != "region"
            or region is None
            or len(region) == len(self.subtasks)
        ):
            raise exc
        self._failed_at = time.monotonic()
        self.restart_strategy.notify_failure(exc)
        if not self.restart_strategy.can_restart():
            raise JobExecutionError(
                f"{exc}\n(job {self.job_id} gave up restarting: {self.restart_strategy})"
            ) from exc
        members = [self.subtasks[t] for t in sorted(region)]
        for member in members:
            by_control.pop(member.control.fileno(), None)
            by_pidfd.pop(member.pidfd, None)
            if member.state == "finished":
                self._remaining += 1  # it runs again
        self._stop(members)
        coordinator = self.coordinator
        if coordinator is not None:
            coordinator.abort_all("a region of the job is restarting")
            coordinator.ended -= region
            self._final_sent = None
        latest = self._latest_valid_checkpoint(
            self.completed_checkpoints + (coordinator.completed if coordinator else [])
        )
        location = latest.location if latest is not None else self.restore_location
        self.restarts.append({"cause": str(exc).splitlines()[0], "failed_at": self._failed_at})
        self.failures.append(str(exc).splitlines()[0])
        backoff_ms = self.restart_strategy.get_backoff_time()
        origin = f"checkpoint {latest.checkpoint_id}" if latest is not None else "empty state"
        names = sorted({m.ev.vertex.name for m in members})
        sys.stderr.write(
            f"flowrun: job {self.job_id}: {str(exc).splitlines()[0]}\n"
            f"flowrun: restarting (attempt {len(self.restarts)}) of region {names} "
            f"({len(members)} subtasks) in {backoff_ms} ms from {origin}\n"
        )
        ready, _, _ = select.select([self._cancel_r], [], [], backoff_ms / 1000.0)
        if ready:
            raise JobCancelledError(f"Job {self.job_id} was {self._cancel_reason}.")
        for t in region:
            self._task_attempts[t] = self._task_attempts.get(t, self.attempt) + 1
            self._collected.pop(t, None)  # not covered by a checkpoint: replayed
            for marks in self._collect_marks.values():
                marks.pop(t, None)
        restore = self._load_restore(location) if location else None
        working_dir = os.path.join(self._attempt_dir, f"region-{len(self.restarts)}")
        os.makedirs(working_dir, exist_ok=True)
        self._deploy(self._plan, self._pool, working_dir, restore, [m.ev for m in members])
        self.restarts[-1]["deployed_at"] = time.monotonic()
        for t in region:
            fresh = self.subtasks[t]
            by_control[fresh.control.fileno()] = fresh
            if fresh.pidfd >= 0:
                by_pidfd[fresh.pidfd] = fresh

    def _serve_requests(self) -> None:
        while True:
            try:
                kind, target, stop, future = self._requests.get_nowait()
            except queue.Empty:
                return
            assert kind == "savepoint"
            coordinator = self.coordinator
            target = target or self.config.get(cfg.SAVEPOINT_DIRECTORY)
            if coordinator is None:
                future.set_exception(JobExecutionError(f"job {self.job_id} is not running yet"))
                continue
            if not target:
                future.set_exception(
                    JobExecutionError(
                        "no savepoint directory: give one, or set state.savepoints.dir"
                    )
                )
                continue

            def done(completed: Any, error: str | None, future=future, stop=stop) -> None:
                if completed is None:
                    future.set_exception(JobExecutionError(error))
                    return
                future.set_result(completed.location)
                if stop:
                    self._stopped_with = completed.location
                    os.write(self._wake_w, b"s")

            try:
                coordinator.trigger(savepoint_dir=target, stop=stop, on_done=done)
            except Exception as exc:
                future.set_exception(exc)

    def _on_message(self, sub: _Subtask, message: tuple) -> bool:
        """Handle one message of a subtask; True when the subtask finished."""
        kind = message[0]
        coordinator = self.coordinator
        if kind == "collect":
            if self.on_collect is None:
                pass
            elif coordinator is None or not coordinator.periodic:
                self.on_collect(message[1])
            else:
                # With checkpoints, collected records are held back until a checkpoint
                # that covers them completes; a restart drops the rest (they are replayed).
                self._collected.setdefault(sub.ev.task_id, []).append(message[1])
        elif kind == "snapshot_taken":
            held = self._collected.get(sub.ev.task_id)
            if held:
                self._collect_marks.setdefault(message[1], {})[sub.ev.task_id] = len(held)
        elif kind == "ack":
            coordinator.on_ack(sub.ev.task_id, message[1], message[2])
        elif kind == "decline":
            coordinator.on_decline(sub.ev.task_id, message[1], message[2])
        elif kind == "end_reached":
            sub.state = "ended"
            coordinator.on_end_reached(sub.ev.task_id)
        elif kind == "attached":
            sub.state = "attached"
        elif kind == "running":
            sub.state = "running"
            if self.restarts and all(
                s.state != "attached" and s.state != "deploying" for s in self.subtasks
            ):
                self.restarts[-1].setdefault("running_at", time.monotonic())
        elif kind == "finished":
            sub.state = "finished"
            sub.metrics = message[1]
            self._remaining -= 1
            return True
        elif kind == "failed":
            sub.state = "failed"
            raise JobExecutionError(message[1])
        elif kind == "canceled":
            sub.state = "canceled"
            raise JobCancelledError(f"{self._describe(sub)} was cancelled")
        return False

    def _drive_final_checkpoint(self) -> None:
        """Every subtask reached its end: take the final checkpoint, then let them finish."""
        coordinator = self.coordinator
        if not coordinator.all_ended or getattr(self, "_final_sent", None) == self.attempt:
            return
        # Without periodic checkpoints there is no final checkpoint (as in Flink): sinks
        # commit at the end of their input; only a savepoint still in progress is awaited.
        if coordinator.final_done or not (coordinator.periodic or coordinator.pending):
            self._final_sent = self.attempt
            for sub in self.subtasks:
                self._send(sub.ev.task_id, ("finish",))
        elif not any(p.final for p in coordinator.pending.values()):
            coordinator.trigger(final=True)

    def _teardown(self) -> None:
        """Cancel what still runs, give it the cancellation timeout, then kill it."""
        self._stop(self.subtasks)

    def _stop(self, subtasks: list[_Subtask]) -> None:
        live = [s for s in subtasks if s.pidfd >= 0 and not _exited(s.pidfd)]
        for s in live:
            try:
                s.control.send(("cancel",))
                signal.pidfd_send_signal(s.pidfd, signal.SIGUSR1)
            except OSError:
                pass
        deadline = time.monotonic() + self.config.get(cfg.CANCEL_TIMEOUT) / 1000.0
        while live and time.monotonic() < deadline:
            select.select([s.pidfd for s in live], [], [], 0.05)
            live = [s for s in live if not _exited(s.pidfd)]
        for s in live:
            try:
                signal.pidfd_send_signal(s.pidfd, signal.SIGKILL)
            except (ProcessLookupError, OSError):
                pass
        for s in live:
            select.select([s.pidfd], [], [], 1.0)
        for s in subtasks:
            s.control.close()
            if s.pidfd >= 0:
                os.close(s.pidfd)
                s.pidfd = -1


def cleanup_stale_working_dirs(parent: str) -> list[str]:
    """Remove job directories (LMDB state) of JobManagers that died without cleaning up."""
    import psutil

    removed = []
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith("flowrun-job-"):
            continue
        try:
            pid = int(name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or psutil.pid_exists(pid):
            continue
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        removed.append(name)
    return removed


def _vertex_status(states: list[str], job_status: str) -> str:
    if job_status in ("FAILED", "CANCELED", "FINISHED"):
        return job_status
    if states and all(s == "finished" for s in states):
        return "FINISHED"
    if states and all(s in ("running", "ended", "finished") for s in states):
        return "RUNNING"
    return "DEPLOYING" if job_status == "RUNNING" else job_status


def _pipelined_regions(plan: ExecutionPlan) -> dict[int, frozenset[int]]:
    """Task id -> the set of task ids of its pipelined region (connected by exchanges)."""
    parent = {t.task_id: t.task_id for t in plan.tasks}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for t in plan.tasks:
        for peer in t.peers:
            parent[find(t.task_id)] = find(peer)
    groups: dict[int, set[int]] = {}
    for t in plan.tasks:
        groups.setdefault(find(t.task_id), set()).add(t.task_id)
    return {t: frozenset(groups[find(t)]) for t in parent}


def _resolve_restore(path: str) -> str:
    from .checkpoint_storage import resolve_restore_path

    try:
        return resolve_restore_path(path)
    except Exception as exc:
        raise JobExecutionError(f"Cannot restore the job from {path}: {exc}") from exc


def has_state(entry: dict) -> bool:
    """Whether a checkpoint's operator entry holds state a restoring job must claim (any
    operator or keyed state file, empty ones too)."""
    return any(sub.get(kind) for sub in entry.get("subtasks", []) for kind in ("operator", "keyed"))


def _restore_of(restore: dict | None, job_graph: JobGraph, vertex: Any) -> dict | None:
    """The part of a checkpoint's metadata that one subtask of ``vertex`` needs."""
    if restore is None:
        return None
    operators = {}
    for n in vertex.nodes:
        op_id = job_graph.operator_ids[n.id]
        entry = restore["operators"].get(op_id)
        if entry is not None:
            operators[op_id] = entry
    in_edges = {e.index for e in vertex.in_edges}
    channel_state = [
        item for item in restore.get("channel_state", []) if in_edges & set(item["edges"])
    ]
    return {"location": restore["location"], "operators": operators, "channel_state": channel_state}


def _exited(pidfd: int) -> bool:
    ready, _, _ = select.select([pidfd], [], [], 0)
    return bool(ready)
