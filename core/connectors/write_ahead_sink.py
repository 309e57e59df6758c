"""A write-ahead-log sink for external systems without transactions (Flink's
``GenericWriteAheadSink``; the customer's notes, section 3.6.2).

Records are not sent as they arrive. The records of each checkpoint interval are kept in the
sink's checkpoint state (the *log*); when the checkpoint completes they are sent to the
external system in one go with :meth:`GenericWriteAheadSink.send_values`, and when that
reports success the sent checkpoint is *confirmed* in a :class:`CheckpointCommitter`, a small
durable store of its own. After a failure the job restarts from the last completed checkpoint;
its log still holds every interval not yet confirmed, which is sent then, while intervals
already confirmed are skipped -- so a checkpoint whose records reached the system before the
failure is not sent twice.

The guarantee has one gap, inherent to the method: if the system took the records but the
process died before the confirmation was stored, they are sent again after the restart
(at-least-once for that interval). Output is also delayed by one checkpoint interval, and the
log of an interval lives in memory and in the checkpoint until it is sent.

``send_values`` returning False (the system refused) keeps the interval and every later one
in the log; all are retried, in order, when the next checkpoint completes. The ``timestamp``
given with each interval is the wall-clock time (epoch ms) of its checkpoint barrier at this
subtask.

Without checkpointing (the engine says ``set_checkpointing_enabled(False)``), records are sent
at every flush; when the engine never says, they are kept until the first checkpoint or the end
of input.

Example (the "external system" is a list)::

    >>> import os, tempfile
    >>> received = []
    >>> class ListSink(GenericWriteAheadSink):
    ...     def send_values(self, values, checkpoint_id, timestamp):
    ...         received.append((checkpoint_id, list(values)))
    ...         return True
    >>> committer = SqliteCheckpointCommitter(os.path.join(tempfile.mkdtemp(), "wal.db"))
    >>> writer = ListSink(committer).create_writer(0, 1, "job-1", "wal")
    >>> writer.open()
    >>> writer.write(["a", "b"])
    >>> state = writer.snapshot_state(1)
    >>> writer.write(["c"])
    >>> received  # nothing is sent before checkpoint 1 completes
    []
    >>> writer.notify_checkpoint_complete(1)
    >>> received
    [(1, ['a', 'b'])]
    >>> restored = ListSink(committer).create_writer(0, 1, "job-1", "wal")
    >>> restored.restore_state(state)  # a failure after the send: confirmed, so not resent
    >>> restored.open()
    >>> received
    [(1, ['a', 'b'])]
"""

from __future__ import annotations

import copy
import sqlite3
import time
import uuid
from typing import Any

from flowrun.core.connectors.base import Sink, SinkWriter
from flowrun.core.reprs import short_repr

__all__ = [
    "CheckpointCommitter",
    "GenericWriteAheadSink",
    "SqliteCheckpointCommitter",
    "WriteAheadSinkWriter",
]

STATE_FORMAT = "flowrun.GenericWriteAheadSink/1"


class CheckpointCommitter:
    """Remembers which checkpoints a write-ahead sink has sent (Flink's names).

    The sink gives each committer a *job id* and an *operator id* before ``open``; a
    checkpoint is identified within them by the subtask that logged it and its id. flowrun
    passes a fresh id per writer generation as the job id (a restored log keeps the id it was
    logged under), so confirmations of an earlier run can never be mistaken for this one's,
    and within one job and subtask checkpoints are confirmed in increasing order: storing the
    highest confirmed id is enough.
    """

    job_id: str = ""
    operator_id: str = ""

    def set_job_id(self, job_id: str) -> None:
        self.job_id = job_id

    def set_operator_id(self, operator_id: str) -> None:
        self.operator_id = operator_id

    def create_resource(self) -> None:
        """Create the store (a table, a directory) if it does not exist; idempotent."""

    def open(self) -> None:
        """Connect to the store."""

    def close(self) -> None:
        """Disconnect; safe to call more than once."""

    def commit_checkpoint(self, subtask_idx: int, checkpoint_id: int) -> None:
        """Durably record that checkpoint ``checkpoint_id`` of ``subtask_idx`` was sent."""
        raise NotImplementedError

    def is_checkpoint_committed(self, subtask_idx: int, checkpoint_id: int) -> bool:
        """Whether :meth:`commit_checkpoint` was called for it (or a later one)."""
        raise NotImplementedError


class SqliteCheckpointCommitter(CheckpointCommitter):
    """Keeps confirmations in a table of an SQLite database file (one row per writer
    generation and subtask: the highest confirmed checkpoint id).

    >>> import os, tempfile
    >>> c = SqliteCheckpointCommitter(os.path.join(tempfile.mkdtemp(), "c.db"))
    >>> c.set_job_id("gen-1"); c.set_operator_id("wal")
    >>> c.create_resource(); c.open()
    >>> c.commit_checkpoint(0, 3)
    >>> [c.is_checkpoint_committed(s, cid) for s, cid in [(0, 2), (0, 4), (1, 1)]]
    [True, False, False]
    >>> c.close()
    """

    def __init__(
        self, db_path: str, table: str = "flowrun_checkpoints", timeout: float = 30.0
    ) -> None:
        if not isinstance(db_path, str) or not db_path:
            raise ValueError(f"db_path must be a non-empty path, got {db_path!r}")
        if not isinstance(table, str) or not table or '"' in table or "\0" in table:
            raise ValueError(f"table must be a non-empty str without '\"' or NUL, got {table!r}")
        self.db_path = db_path
        self.table = table
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=self.timeout, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def create_resource(self) -> None:
        conn = self._connect()
        try:
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{self.table}" (job_id TEXT NOT NULL, '
                "operator_id TEXT NOT NULL, subtask INTEGER NOT NULL, checkpoint_id INTEGER "
                "NOT NULL, PRIMARY KEY (job_id, operator_id, subtask))"
            )
        finally:
            conn.close()

    def open(self) -> None:
        if self._conn is None:
            self._conn = self._connect()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteCheckpointCommitter is not open")
        return self._conn

    def commit_checkpoint(self, subtask_idx: int, checkpoint_id: int) -> None:
        self._connection().execute(
            f'INSERT INTO "{self.table}" VALUES (?, ?, ?, ?) ON CONFLICT '
            "(job_id, operator_id, subtask) DO UPDATE SET checkpoint_id = "
            "max(checkpoint_id, excluded.checkpoint_id)",
            (self.job_id, self.operator_id, subtask_idx, checkpoint_id),
        )

    def is_checkpoint_committed(self, subtask_idx: int, checkpoint_id: int) -> bool:
        row = (
            self._connection()
            .execute(
                f'SELECT checkpoint_id FROM "{self.table}" WHERE job_id = ? AND '
                "operator_id = ? AND subtask = ?",
                (self.job_id, self.operator_id, subtask_idx),
            )
            .fetchone()
        )
        return row is not None and row[0] >= checkpoint_id

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_conn"] = None  # connections do not travel
        return state

    def __deepcopy__(self, memo: dict) -> SqliteCheckpointCommitter:
        clone = copy.copy(self)
        clone._conn = None
        return clone

    def __repr__(self) -> str:
        return f"SqliteCheckpointCommitter({self.db_path!r}, {self.table!r})"


class GenericWriteAheadSink(Sink):
    """Base of write-ahead-log sinks: implement :meth:`send_values`; see the module docstring.

    The sink object is the picklable description *and*, copied once per subtask, the sender:
    ``open`` and ``close`` run in the subtask (connect there), where ``subtask_index`` and
    ``parallelism`` are set.
    """

    subtask_index: int = 0
    parallelism: int = 1

    def __init__(self, committer: CheckpointCommitter) -> None:
        if not isinstance(committer, CheckpointCommitter):
            raise TypeError(
                "GenericWriteAheadSink needs a CheckpointCommitter (e.g. "
                f"SqliteCheckpointCommitter(path)), got {committer!r}"
            )
        self.committer = committer

    def open(self) -> None:
        """Connect to the external system (once per subtask, before anything is sent)."""

    def close(self) -> None:
        """Disconnect; called at the end and after a failure."""

    def send_values(self, values: list[Any], checkpoint_id: int, timestamp: int) -> bool:
        """Send the records of one checkpoint interval; True once the system has them all.

        False keeps them (and every later interval) for a retry at the next completed
        checkpoint; an exception fails the job, which restarts and sends them again.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement send_values()")

    def create_writer(
        self, subtask_index: int, parallelism: int, job_id: str, operator_uid: str
    ) -> WriteAheadSinkWriter:
        try:
            sender = copy.deepcopy(self)
        except Exception as exc:
            raise TypeError(
                f"{type(self).__name__} cannot be copied for each subtask ({exc}); a sink must "
                "be picklable until open() -- connect in open(), not in __init__()"
            ) from exc
        sender.subtask_index = subtask_index
        sender.parallelism = parallelism
        return WriteAheadSinkWriter(sender, subtask_index, operator_uid)


class WriteAheadSinkWriter(SinkWriter):
    """One subtask's log: the records since the last checkpoint, and the intervals logged in
    checkpoints but not yet confirmed."""

    def __init__(self, sender: GenericWriteAheadSink, subtask_index: int, operator_uid: str):
        self._sender = sender
        self._subtask = subtask_index
        self._operator_uid = operator_uid
        self._generation = uuid.uuid4().hex
        self._current: list[Any] = []
        self._pending: list[dict[str, Any]] = []  # logged intervals, by checkpoint id
        self._committers: dict[str, CheckpointCommitter] = {}
        self._checkpointing: bool | None = None
        self._last_checkpoint = 0  # the newest checkpoint this writer logged an interval for
        self._restored = False
        self._opened = False

    # -- committers, one per writer generation ---------------------------------------------
    def _committer(self, generation: str) -> CheckpointCommitter:
        committer = self._committers.get(generation)
        if committer is None:
            committer = copy.deepcopy(self._sender.committer)
            committer.set_job_id(generation)
            committer.set_operator_id(self._operator_uid)
            committer.create_resource()
            committer.open()
            self._committers[generation] = committer
        return committer

    def _send_pending(self, up_to: float) -> bool:
        """Send and confirm logged intervals up to checkpoint ``up_to``, in order; False when
        the system refused one (it and the later ones stay logged)."""
        while self._pending and self._pending[0]["checkpoint_id"] <= up_to:
            entry = self._pending[0]
            committer = self._committer(entry["generation"])
            subtask, cid = entry["subtask"], entry["checkpoint_id"]
            if not committer.is_checkpoint_committed(subtask, cid):
                if not self._sender.send_values(entry["values"], cid, entry["timestamp"]):
                    return False
                committer.commit_checkpoint(subtask, cid)
            self._pending.pop(0)
        return True

    # -- the contract ----------------------------------------------------------------------
    def set_checkpointing_enabled(self, enabled: bool) -> None:
        self._checkpointing = bool(enabled)

    def restore_state(self, state: list[Any]) -> None:
        self._checkpointing = True
        self._restored = True
        for element in state:
            if not isinstance(element, dict) or element.get("format") != STATE_FORMAT:
                raise ValueError(
                    f"{type(self._sender).__name__} cannot restore state element "
                    f"{short_repr(element)}: expected a dict of format {STATE_FORMAT!r} "
                    "written by a GenericWriteAheadSink (was this sink's uid used by another "
                    "sink?)"
                )
            self._pending.append(element)
        self._pending.sort(key=lambda e: (e["checkpoint_id"], e["generation"], e["subtask"]))

    def open(self) -> None:
        self._sender.open()
        self._opened = True
        self._committer(self._generation)
        if self._restored:
            # Every logged interval of the restored checkpoint belongs to a completed one.
            self._send_pending(float("inf"))

    def write(self, records: list[Any]) -> None:
        self._current.extend(records)

    def flush(self) -> None:
        if self._checkpointing is False and self._current:
            if self._sender.send_values(self._current, 0, int(time.time() * 1000)):
                self._current = []

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        self._checkpointing = True
        self._last_checkpoint = max(self._last_checkpoint, checkpoint_id)
        if self._current:
            self._pending.append(
                {
                    "format": STATE_FORMAT,
                    "generation": self._generation,
                    "subtask": self._subtask,
                    "checkpoint_id": checkpoint_id,
                    "timestamp": int(time.time() * 1000),
                    "values": self._current,
                }
            )
            self._current = []
        return list(self._pending)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self._send_pending(checkpoint_id)

    def finish(self) -> None:
        try:
            if self._current:  # records after the last checkpoint: one more interval
                self.snapshot_state(self._last_checkpoint + 1)
            if not self._send_pending(float("inf")):
                entry = self._pending[0]
                raise RuntimeError(
                    f"{type(self._sender).__name__}.send_values() refused the records of "
                    f"checkpoint {entry['checkpoint_id']} at the end of the input; there is no "
                    "later checkpoint to retry them with"
                )
        finally:
            self._close()

    def abort(self) -> None:
        self._current = []  # replayed after the restart; logged intervals stay in the checkpoint
        self._close()

    def _close(self) -> None:
        committers, self._committers = self._committers, {}
        try:
            for committer in committers.values():
                committer.close()
        finally:
            if self._opened:
                self._opened = False
                self._sender.close()
