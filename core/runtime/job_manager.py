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

import os
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
from .execution_graph import ExecutionPlan
from .forkserver import get_fork_server
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
        out_edges.append(OutEdgeSpec(e.partitioner, src.output_type, src.arrow, e.target.name))
    in_edges = [
        InEdgeSpec(
            e.stream_edge.source.output_type, e.stream_edge.source.arrow, e.stream_edge.input_index
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
        source_batch_size=config.get(cfg.SOURCE_BATCH_SIZE),
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
    ) -> None:
        from flowrun.state.backends import state_backend_from_name

        self.state_backend = state_backend or state_backend_from_name(
            job_graph.config.get(cfg.STATE_BACKEND)
        )
        self.job_graph = job_graph
        self.config = job_graph.config
        self.job_id = job_id or uuid.uuid4().hex
        self.on_collect = on_collect
        self.job_parameters = job_parameters or {}
        self._cancel_r, self._cancel_w = os.pipe()
        self._cancel_reason: str | None = None
        self.subtasks: list[_Subtask] = []
        self.status = "CREATED"
        self._lock = threading.Lock()

    # -- public -------------------------------------------------------------------
    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel from any thread (or a signal handler)."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        try:
            os.write(self._cancel_w, b"x")
        except OSError:
            pass

    def subtask_pids(self) -> list[int]:
        return [s.pid for s in self.subtasks]

    def run(self) -> JobOutcome:
        conf = self.config
        cleanup_stale_segments()
        cleanup_stale_working_dirs(conf.get(cfg.WORKING_DIR))
        workdir = tempfile.mkdtemp(
            prefix=f"flowrun-job-{os.getpid()}-{self.job_id[:8]}-", dir=conf.get(cfg.WORKING_DIR)
        )
        self.workdir = workdir
        pool: NetworkBufferPool | None = None
        start = time.monotonic()
        self.status = "RUNNING"
        try:
            plan = ExecutionPlan(
                self.job_graph,
                segment_size=conf.get(cfg.SEGMENT_SIZE),
                buffers_per_subpartition=conf.get(cfg.MAX_BUFFERS_PER_CHANNEL),
                exclusive_credits=conf.get(cfg.BUFFERS_PER_CHANNEL),
                floating_credits=conf.get(cfg.FLOATING_BUFFERS_PER_GATE),
            )
            pool = NetworkBufferPool.create(
                self.job_id, plan.num_buffers, conf.get(cfg.SEGMENT_SIZE)
            )
            self._deploy(plan, pool)
            self._supervise()
            self.status = "FINISHED"
            return JobOutcome(
                self.job_id,
                int((time.monotonic() - start) * 1000),
                {s.ev.task_id: s.metrics for s in self.subtasks},
            )
        except BaseException:
            self.status = "FAILED" if self._cancel_reason is None else "CANCELED"
            raise
        finally:
            self._teardown()
            if pool is not None:
                pool.close()
            shutil.rmtree(workdir, ignore_errors=True)
            os.close(self._cancel_r)
            os.close(self._cancel_w)

    # -- deployment -----------------------------------------------------------------
    def _deploy(self, plan: ExecutionPlan, pool: NetworkBufferPool) -> None:
        server = get_fork_server()
        specs = {
            v.index: cloudpickle.dumps(_chain_spec(self.job_graph, v.index))
            for v in self.job_graph.vertices
        }
        doorbells = {t.task_id: create_doorbell_pipe() for t in plan.tasks}
        try:
            for ev in plan.tasks:
                peers = sorted(ev.peers)
                info = TaskInfo(
                    task_id=ev.task_id,
                    index=ev.index,
                    parallelism=ev.vertex.parallelism,
                    max_parallelism=ev.vertex.max_parallelism,
                    job_id=self.job_id,
                    attempt=0,
                    peer_ids=peers,
                    network=plan.network[ev.task_id],
                    job_parameters=self.job_parameters,
                    main_file=getattr(sys.modules.get("__main__"), "__file__", None),
                    working_dir=self.workdir,
                    state_backend=self.state_backend,
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
                self.subtasks.append(_Subtask(ev, control, pid, pidfd))
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
        remaining = len(self.subtasks)
        poll_s = self.config.get(cfg.HEARTBEAT_INTERVAL) / 1000.0
        while remaining:
            fds = [self._cancel_r, *by_control, *by_pidfd]
            ready, _, _ = select.select(fds, [], [], poll_s)
            if self._cancel_r in ready:
                raise JobCancelledError(f"Job {self.job_id} was {self._cancel_reason}.")
            for fd in ready:
                sub = by_control.get(fd)
                if sub is None:
                    continue
                try:
                    while sub.control.poll():
                        message = sub.control.recv()
                        kind = message[0]
                        if kind == "attached":
                            sub.state = "attached"
                        elif kind == "running":
                            sub.state = "running"
                        elif kind == "collect":
                            if self.on_collect is not None:
                                self.on_collect(message[1])
                        elif kind == "finished":
                            sub.state = "finished"
                            sub.metrics = message[1]
                            remaining -= 1
                            del by_control[fd]
                            break
                        elif kind == "failed":
                            sub.state = "failed"
                            raise JobExecutionError(message[1])
                        elif kind == "canceled":
                            sub.state = "canceled"
                            raise JobCancelledError(f"{self._describe(sub)} was cancelled")
                except (EOFError, ConnectionResetError):
                    if sub.state != "finished":
                        raise JobExecutionError(
                            f"Job failed: {self._describe(sub)} {self._exit_status(sub)} "
                            "before finishing."
                        ) from None
            for fd in ready:
                sub = by_pidfd.get(fd)
                if sub is None:
                    continue
                del by_pidfd[fd]
                if sub.state == "finished":
                    continue
                # Read what the subtask managed to say before it died.
                try:
                    while sub.control.poll():
                        message = sub.control.recv()
                        if message[0] == "failed":
                            raise JobExecutionError(message[1])
                        if message[0] == "finished":
                            sub.state = "finished"
                            sub.metrics = message[1]
                            remaining -= 1
                            by_control.pop(sub.control.fileno(), None)
                            break
                        if message[0] == "collect" and self.on_collect is not None:
                            self.on_collect(message[1])
                except (EOFError, OSError):
                    pass
                if sub.state != "finished":
                    raise JobExecutionError(
                        f"Job failed: {self._describe(sub)} {self._exit_status(sub)} "
                        "before finishing."
                    )

    def _teardown(self) -> None:
        """Cancel what still runs, give it the cancellation timeout, then kill it."""
        live = [s for s in self.subtasks if s.pidfd >= 0 and not _exited(s.pidfd)]
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
        for s in self.subtasks:
            s.control.close()
            if s.pidfd >= 0:
                os.close(s.pidfd)


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


def _exited(pidfd: int) -> bool:
    ready, _, _ = select.select([pidfd], [], [], 0)
    return bool(ready)
