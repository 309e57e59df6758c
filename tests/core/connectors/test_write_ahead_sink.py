"""GenericWriteAheadSink against a real TCP server on 127.0.0.1 (a system without
transactions): intervals are sent when their checkpoint completes and confirmed in SQLite, so
restores resend exactly what was not confirmed; refusals, rescaling, the documented gap."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from flowrun_testing import KILL_ONCE_SOURCE, run_flowrun
from sink_harness import Job as HarnessJob
from sink_harness import crash, redistribute_states

from flowrun.core.connectors.write_ahead_sink import (
    GenericWriteAheadSink,
    SqliteCheckpointCommitter,
)

RECORDS = [f"r{i:03d}" for i in range(90)]
INTERVALS = [RECORDS[0:30], RECORDS[30:60], RECORDS[60:90]]


class Collector:
    """A line-oriented TCP server: each request is a JSON batch, answered OK (or NO while
    ``refuse`` is set). It keeps what it accepted, in order."""

    def __init__(self) -> None:
        self.batches: list[dict] = []
        self.refuse = False
        self.lock = threading.Lock()
        collector = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    batch = json.loads(line)
                    with collector.lock:
                        if collector.refuse:
                            self.wfile.write(b"NO\n")
                            continue
                        collector.batches.append(batch)
                    self.wfile.write(b"OK\n")

        socketserver.ThreadingTCPServer.daemon_threads = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def records(self) -> Counter:
        with self.lock:
            return Counter(v for b in self.batches for v in b["values"])

    def checkpoints(self) -> list[tuple[int, int]]:
        with self.lock:
            return [(b["subtask"], b["checkpoint"]) for b in self.batches]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.stop()


class TcpSink(GenericWriteAheadSink):
    def __init__(self, committer, port: int) -> None:
        super().__init__(committer)
        self.port = port

    def open(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.replies = self.sock.makefile("rb")

    def send_values(self, values, checkpoint_id, timestamp) -> bool:
        batch = {"subtask": self.subtask_index, "checkpoint": checkpoint_id, "values": values}
        self.sock.sendall(json.dumps(batch).encode() + b"\n")
        return self.replies.readline() == b"OK\n"

    def close(self) -> None:
        self.replies.close()
        self.sock.close()


class Job(HarnessJob):
    uid = "wal"


def tcp_sink(tmp_path, collector, committer=None) -> TcpSink:
    return TcpSink(committer or SqliteCheckpointCommitter(str(tmp_path / "wal.db")), collector.port)


def replay_after_checkpoint_1(sink, states1, parallelism: int = 2) -> None:
    job = Job(sink, parallelism, redistribute_states(states1, parallelism))
    job.write(INTERVALS[1])
    job.checkpoint(2)
    job.write(INTERVALS[2])
    job.finish()


def test_failure_free_run_sends_each_interval_when_its_checkpoint_completes(tmp_path, collector):
    job = Job(tcp_sink(tmp_path, collector), 2)
    job.write(INTERVALS[0])
    job.checkpoint(1, notify=False)
    assert collector.batches == []  # nothing leaves before the checkpoint completes
    job.notify(1)
    assert collector.checkpoints() == [(0, 1), (1, 1)]
    job.write(INTERVALS[1])
    job.checkpoint(2)
    job.write(INTERVALS[2])
    job.finish()  # the rest goes out at the end of the input
    assert collector.checkpoints() == [(0, 1), (1, 1), (0, 2), (1, 2), (0, 3), (1, 3)]
    assert collector.records() == Counter(RECORDS)


def test_crash_after_the_send_is_confirmed_does_not_send_twice(tmp_path, collector):
    def attempt():
        job = Job(tcp_sink(tmp_path, collector), 2)
        job.write(INTERVALS[0])
        states1 = job.checkpoint(1)  # sent and confirmed
        job.write(INTERVALS[1])
        job.checkpoint(2, notify=False)
        job.write(INTERVALS[2][:10])
        return states1

    states1 = crash(attempt)
    assert collector.records() == Counter(INTERVALS[0])
    replay_after_checkpoint_1(tcp_sink(tmp_path, collector), states1)
    assert collector.records() == Counter(RECORDS)


def test_crash_before_the_notification_sends_on_restore(tmp_path, collector):
    def attempt():
        job = Job(tcp_sink(tmp_path, collector), 2)
        job.write(INTERVALS[0])
        states1 = job.checkpoint(1, notify=False)  # completed, never notified
        job.notify(1, subtasks=[1])  # only subtask 1 got it
        job.write(INTERVALS[1][:5])
        return states1

    states1 = crash(attempt)
    assert collector.checkpoints() == [(1, 1)]
    replay_after_checkpoint_1(tcp_sink(tmp_path, collector), states1)
    assert collector.records() == Counter(RECORDS)
    assert collector.checkpoints()[:2] == [(1, 1), (0, 1)]  # subtask 0's log, on restore


@pytest.mark.parametrize("new_parallelism", [1, 3])
def test_restore_at_another_parallelism(tmp_path, collector, new_parallelism):
    def attempt():
        job = Job(tcp_sink(tmp_path, collector), 2)
        job.write(INTERVALS[0])
        states1 = job.checkpoint(1, notify=False)
        job.notify(1, subtasks=[0])
        return states1

    states1 = crash(attempt)
    replay_after_checkpoint_1(tcp_sink(tmp_path, collector), states1, new_parallelism)
    assert collector.records() == Counter(RECORDS)


class DieWhileConfirming(SqliteCheckpointCommitter):
    def commit_checkpoint(self, subtask_idx: int, checkpoint_id: int) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # the system has the records; the log says "not sent"


def test_crash_between_send_and_confirmation_sends_again(tmp_path, collector):
    """The gap the customer's notes describe: write-ahead logging is at-least-once there."""
    db = str(tmp_path / "wal.db")

    def attempt():
        job = Job(TcpSink(DieWhileConfirming(db), collector.port), 1)
        job.write(INTERVALS[0])
        states = job.checkpoint(1, notify=False)
        with open(tmp_path / "states1.pickle", "wb") as f:
            pickle.dump(states, f)  # the completed checkpoint, as storage keeps it
        job.notify(1)  # sends, then dies while confirming

    crash(attempt, may_die_inside=True)  # it dies inside send_values
    with open(tmp_path / "states1.pickle", "rb") as f:
        states1 = pickle.load(f)
    assert collector.records() == Counter(INTERVALS[0])
    Job(TcpSink(SqliteCheckpointCommitter(db), collector.port), 1, states1).finish()
    assert collector.records() == Counter(INTERVALS[0] * 2)


def test_refused_intervals_are_retried_in_order(tmp_path, collector):
    job = Job(tcp_sink(tmp_path, collector), 1)
    job.write(INTERVALS[0])
    collector.refuse = True
    job.checkpoint(1)
    job.write(INTERVALS[1])
    job.checkpoint(2)
    assert collector.batches == []
    collector.refuse = False
    job.write(INTERVALS[2])
    job.checkpoint(3)  # retries 1 and 2 first
    assert collector.checkpoints() == [(0, 1), (0, 2), (0, 3)]
    writer = job.writers[0]
    writer.write(["late"])
    collector.refuse = True
    with pytest.raises(RuntimeError, match=r"refused the records of checkpoint 4 at the end"):
        writer.finish()


def test_a_fresh_run_does_not_inherit_confirmations(tmp_path, collector):
    for _ in range(2):  # two runs of the same job, same committer database, same ids
        job = Job(tcp_sink(tmp_path, collector), 1)
        job.write(["x"])
        job.checkpoint(1)
        job.finish()
    assert collector.checkpoints() == [(0, 1), (0, 1)]
    assert collector.records() == Counter(["x", "x"])


def test_without_checkpoints_flush_sends(tmp_path, collector):
    writer = tcp_sink(tmp_path, collector).create_writer(0, 1, "job-1", "wal")
    writer.set_checkpointing_enabled(False)
    writer.open()
    writer.write(["a", "b"])
    writer.flush()
    assert collector.records() == Counter(["a", "b"])
    writer.finish()
    assert collector.records() == Counter(["a", "b"])


def test_bad_input_is_named(tmp_path, collector):
    with pytest.raises(TypeError, match="needs a CheckpointCommitter"):
        TcpSink("wal.db", collector.port)
    writer = tcp_sink(tmp_path, collector).create_writer(0, 1, "job-1", "wal")
    with pytest.raises(ValueError, match=r"TcpSink cannot restore state element \[1, 2\]"):
        writer.restore_state([[1, 2]])

    class NoSend(GenericWriteAheadSink):
        pass

    writer = NoSend(SqliteCheckpointCommitter(str(tmp_path / "c.db"))).create_writer(
        0, 1, "job-1", "wal"
    )
    writer.open()
    writer.write(["a"])
    with pytest.raises(NotImplementedError, match="NoSend must implement send_values"):
        writer.finish()


WAL_JOB = (
    """
import json, os, signal, socket, sys, time
from flowrun.core import MapFunction, StreamExecutionEnvironment, Types
from flowrun.core.connectors import NumberSequenceSource
from flowrun.core.connectors.write_ahead_sink import (
    GenericWriteAheadSink, SqliteCheckpointCommitter,
)

port, db, n, kill_after = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


class TcpSink(GenericWriteAheadSink):
    def __init__(self, committer, port):
        super().__init__(committer)
        self.port = port

    def open(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.replies = self.sock.makefile("rb")

    def send_values(self, values, checkpoint_id, timestamp):
        batch = {"subtask": self.subtask_index, "checkpoint": checkpoint_id, "values": values}
        self.sock.sendall(json.dumps(batch).encode() + b"\\n")
        return self.replies.readline() == b"OK\\n"

    def close(self):
        self.sock.close()


"""
    + KILL_ONCE_SOURCE
    + """
env = StreamExecutionEnvironment.get_execution_environment()
env.set_parallelism(2)
env.enable_checkpointing(50)
(
    env.from_source(NumberSequenceSource(1, n), None, "numbers")
    .map(KillOnce(kill_after, then=lambda x: f"n={x}"), output_type=Types.STRING())
    .sink_to(TcpSink(SqliteCheckpointCommitter(db), port))
    .uid("wal")
)
env.execute("write-ahead sink")
"""
)


def test_checkpointed_job_killed_mid_stream_delivers_every_record_once(tmp_path, collector):
    job = tmp_path / "job.py"
    job.write_text(WAL_JOB)
    code, _, err = run_flowrun(
        [
            "run",
            str(job),
            "-D",
            "restart-strategy=fixed-delay",
            "-D",
            "restart-strategy.fixed-delay.delay=0",
            "-D",
            f"state.checkpoints.dir=file://{tmp_path / 'checkpoints'}",
            # the whole input fits in the network buffers: an aligned barrier would wait
            # behind all of it, so no checkpoint would complete before the end
            "-D",
            "execution.checkpointing.unaligned=true",
            "--",
            str(collector.port),
            str(tmp_path / "wal.db"),
            "60000",
            "4000",
        ]
    )
    assert code == 0, err
    assert "restarting (attempt 1)" in err and "from checkpoint" in err, err
    assert collector.records() == Counter(f"n={x}" for x in range(1, 60001))
