"""Exactly-once sinks to transactional systems: Flink's ``TwoPhaseCommitSinkFunction``.

The base class runs Flink's protocol; a subclass says what a transaction is. Records go into
the *current* transaction (``invoke``). At every checkpoint barrier the current transaction is
*pre-committed* (``pre_commit``: flush, make it durable but invisible) and stored in the
checkpoint as pending under the checkpoint id, together with the new current transaction
(``begin_transaction``). When the checkpoint completes, every pending transaction up to it is
*committed* (``commit``: make it visible). After a failure the job restarts from the last
completed checkpoint: its pending transactions are committed again (``recover_and_commit``, so
``commit`` must be idempotent: it may have run before the failure) and its then-current
transaction is aborted (``recover_and_abort``); the records after the checkpoint are replayed
into a new transaction.

**Transactions are user objects stored in checkpoints**: they must pickle (a dataclass or
NamedTuple of ids and paths -- never an open file, socket or connection; reopen those from the
ids in ``commit`` and ``abort``), and should stay small. A transaction begun after the last
completed checkpoint appears in no checkpoint; :meth:`TwoPhaseCommitSinkFunction.
finish_recovering_transactions` is the place to clean those up after a restore.

When bounded input ends (``finish``), everything pending and the current transaction are
committed, as Flink's final checkpoint does; a current transaction that received no record is
aborted instead. Without checkpointing that is the only commit.

Example (a sink writing each transaction to a file, made visible by a rename)::

    >>> import os, tempfile
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class FileTxn:
    ...     temp: str
    ...     final: str
    >>> class FileSink2PC(TwoPhaseCommitSinkFunction):
    ...     def __init__(self, directory):
    ...         self.directory, self.count = directory, 0
    ...     def begin_transaction(self):
    ...         self.count += 1
    ...         final = os.path.join(self.directory, f"out-{self.count}")
    ...         return FileTxn(os.path.join(self.directory, f".out-{self.count}"), final)
    ...     def invoke(self, transaction, value, context):
    ...         with open(transaction.temp, "a") as f:
    ...             f.write(f"{value}\\n")
    ...     def pre_commit(self, transaction):
    ...         pass  # each write() above was already flushed and closed
    ...     def commit(self, transaction):
    ...         if os.path.exists(transaction.temp):
    ...             os.rename(transaction.temp, transaction.final)
    ...     def abort(self, transaction):
    ...         if os.path.exists(transaction.temp):
    ...             os.unlink(transaction.temp)
    >>> from flowrun.core.connectors.sink_function import SinkFunctionSink
    >>> d = tempfile.mkdtemp()
    >>> writer = SinkFunctionSink(FileSink2PC(d)).create_writer(0, 1, "job-1", "sink")
    >>> writer.open()
    >>> writer.write(["a", "b"])
    >>> state = writer.snapshot_state(1)  # barrier of checkpoint 1: pre-commit
    >>> writer.write(["c"])
    >>> sorted(os.listdir(d))  # nothing visible yet
    ['.out-1', '.out-2']
    >>> writer.notify_checkpoint_complete(1)
    >>> sorted(os.listdir(d)), open(os.path.join(d, "out-1")).read()
    (['.out-2', 'out-1'], 'a\\nb\\n')
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

from flowrun.core.connectors.sink_function import SinkFunction
from flowrun.core.reprs import short_repr

__all__ = ["TransactionHolder", "TwoPhaseCommitSinkFunction"]

TXN = TypeVar("TXN")
_LOG = logging.getLogger(__name__)
STATE_FORMAT = "flowrun.TwoPhaseCommitSinkFunction/1"


class TransactionHolder(NamedTuple):
    """A transaction handle with the wall-clock time (epoch ms) it began (Flink's name)."""

    handle: Any
    transaction_start_time: int


class TwoPhaseCommitSinkFunction(SinkFunction, Generic[TXN]):
    """Base of exactly-once sink functions; implement the five abstract methods.

    A subclass does not need to call ``super().__init__()``; the protocol's bookkeeping is set
    up when the subtask starts. As in Flink (``initializeState`` runs before ``open``), the
    recovery calls and the first ``begin_transaction`` come *before* ``open``: they must work
    from the transaction handles and the function's own configuration alone.
    """

    _transaction_timeout: int | None = None
    _ignore_failures_after_timeout: bool = False
    _timeout_warning_ratio: float = -1.0
    clock: Callable[[], float] = staticmethod(time.time)  # type: ignore[assignment]
    """Wall-clock seconds, for transaction ages; replace in tests."""

    # -- what a subclass implements (Flink's names in snake_case) --------------------------
    @abstractmethod
    def begin_transaction(self) -> TXN:
        """Start a new transaction and return its (picklable) handle."""

    @abstractmethod
    def invoke(  # type: ignore[override]
        self, transaction: TXN, value: Any, context: SinkFunction.Context
    ) -> None:
        """Write ``value`` within ``transaction``."""

    @abstractmethod
    def pre_commit(self, transaction: TXN) -> None:
        """Prepare ``transaction`` for a commit that may come later (flush, make durable).

        After this the transaction may still be aborted, but a later ``commit`` must succeed.
        """

    @abstractmethod
    def commit(self, transaction: TXN) -> None:
        """Make a pre-committed transaction visible. If it fails the job restarts and
        ``recover_and_commit`` is called for it again, so it must be idempotent."""

    @abstractmethod
    def abort(self, transaction: TXN) -> None:
        """Drop ``transaction`` and everything written in it."""

    def recover_and_commit(self, transaction: TXN) -> None:
        """Commit a pre-committed transaction of the restored checkpoint (it may already be
        committed: the failure may have come after the commit). Default: ``commit``."""
        self.commit(transaction)

    def recover_and_abort(self, transaction: TXN) -> None:
        """Abort the transaction that was current at the restored checkpoint.
        Default: ``abort``."""
        self.abort(transaction)

    def finish_recovering_transactions(self, handled_transactions: list[TXN]) -> None:
        """Called once after a restore, with every transaction recovered and committed or
        aborted, before the new current transaction begins (a flowrun addition, like Flink's
        ``finishRecoveringContext``). Override it to clean up what no checkpoint lists, e.g.
        transactions begun after the restored checkpoint by the failed attempt."""

    # -- Flink's accessors and settings --------------------------------------------------
    def current_transaction(self) -> TXN | None:
        """The transaction records currently go into."""
        holder = getattr(self, "_current", None)
        return None if holder is None else holder.handle

    def pending_transactions(self) -> list[tuple[int, TXN]]:
        """``(checkpoint id, transaction)`` of every pre-committed, not yet committed one."""
        return [(cid, h.handle) for cid, h in getattr(self, "_pending", {}).items()]

    def set_transaction_timeout(self, transaction_timeout: int) -> TwoPhaseCommitSinkFunction:
        """The longest (ms) a transaction may stay open in the external system; only used by
        :meth:`ignore_failures_after_transaction_timeout` and the timeout warnings."""
        if not isinstance(transaction_timeout, int) or transaction_timeout < 0:
            raise ValueError(
                f"transaction_timeout must be a non-negative int of ms, got {transaction_timeout!r}"
            )
        self._transaction_timeout = transaction_timeout
        return self

    def ignore_failures_after_transaction_timeout(self) -> TwoPhaseCommitSinkFunction:
        """Log, instead of raising, a failed ``recover_and_commit`` of a transaction older than
        the transaction timeout (the external system has dropped it anyway)."""
        self._ignore_failures_after_timeout = True
        return self

    def enable_transaction_timeout_warnings(
        self, warning_ratio: float
    ) -> TwoPhaseCommitSinkFunction:
        """Log a warning when a transaction being committed has been open longer than
        ``warning_ratio`` (0..1) of the transaction timeout."""
        if not 0 <= warning_ratio <= 1:
            raise ValueError(f"warning_ratio must be in [0, 1], got {warning_ratio!r}")
        self._timeout_warning_ratio = float(warning_ratio)
        return self

    # -- the protocol ------------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _begin(self) -> TransactionHolder:
        self._current_written = False
        return TransactionHolder(self.begin_transaction(), self._now_ms())

    def _flowrun_initialize(self) -> None:
        self._pending: dict[int, TransactionHolder] = {}
        self._current: TransactionHolder | None = self._begin()

    def _flowrun_restore(self, state: list[Any]) -> None:
        handled: list[Any] = []
        for element in state:
            element = self._check_element(element)
            for holder in element["pending_commit_transactions"]:
                self._recover_and_commit(holder)
                handled.append(holder.handle)
            pending = element["pending_transaction"]
            self.recover_and_abort(pending.handle)
            handled.append(pending.handle)
        self.finish_recovering_transactions(handled)
        self._flowrun_initialize()

    def _check_element(self, element: Any) -> dict[str, Any]:
        if not isinstance(element, dict) or element.get("format") != STATE_FORMAT:
            raise ValueError(
                f"{type(self).__name__} cannot restore state element {short_repr(element)}: "
                f"expected a dict of format {STATE_FORMAT!r} written by a "
                "TwoPhaseCommitSinkFunction (was this sink's uid used by another sink?)"
            )
        return {
            "pending_transaction": TransactionHolder(*element["pending_transaction"]),
            "pending_commit_transactions": [
                TransactionHolder(*h) for h in element["pending_commit_transactions"]
            ],
        }

    def _recover_and_commit(self, holder: TransactionHolder) -> None:
        try:
            self._warn_if_timeout_near(holder)
            self.recover_and_commit(holder.handle)
        except Exception:
            elapsed = self._now_ms() - holder.transaction_start_time
            timeout = self._transaction_timeout
            if self._ignore_failures_after_timeout and timeout is not None and elapsed > timeout:
                _LOG.error(
                    "%s: committing recovered transaction %s failed; it has been open %d ms, "
                    "longer than the transaction timeout (%d ms), so it is not retried: its "
                    "records may be lost",
                    type(self).__name__,
                    short_repr(holder.handle),
                    elapsed,
                    timeout,
                    exc_info=True,
                )
            else:
                raise

    def _warn_if_timeout_near(self, holder: TransactionHolder) -> None:
        timeout = self._transaction_timeout
        if timeout is None or self._timeout_warning_ratio < 0:
            return
        elapsed = self._now_ms() - holder.transaction_start_time
        if elapsed > timeout * self._timeout_warning_ratio:
            _LOG.warning(
                "%s: transaction %s has been open for %d ms, close to or beyond the "
                "transaction timeout of %d ms",
                type(self).__name__,
                short_repr(holder.handle),
                elapsed,
                timeout,
            )

    def _flowrun_invoke(self, records: list[Any], context: SinkFunction.Context) -> None:
        if not records:
            return
        transaction = self._current.handle  # type: ignore[union-attr]
        self._current_written = True
        invoke = self.invoke
        for value in records:
            invoke(transaction, value, context)

    def _flowrun_snapshot(self, checkpoint_id: int) -> list[Any]:
        current = self._current
        if current is None:
            raise RuntimeError(f"{type(self).__name__}: checkpoint {checkpoint_id} after finish")
        self.pre_commit(current.handle)
        self._pending[checkpoint_id] = current
        self._current = self._begin()
        return [
            {
                "format": STATE_FORMAT,
                "pending_transaction": tuple(self._current),
                "pending_commit_transactions": [tuple(h) for h in self._pending.values()],
            }
        ]

    def _flowrun_notify_complete(self, checkpoint_id: int) -> None:
        # Notifications may be late or skipped: commit everything up to this checkpoint
        # (it subsumes the ones before it).
        first_error: Exception | None = None
        for cid in [c for c in self._pending if c <= checkpoint_id]:
            holder = self._pending.pop(cid)
            self._warn_if_timeout_near(holder)
            try:
                self.commit(holder.handle)
            except Exception as exc:
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise RuntimeError(
                f"{type(self).__name__}: committing a transaction of checkpoint "
                f"{checkpoint_id} or before failed: {first_error}"
            ) from first_error

    def _flowrun_finish(self) -> None:
        self.finish()
        current, self._current = self._current, None
        if current is not None and self._current_written:
            self.pre_commit(current.handle)
            self._pending[max(self._pending, default=0) + 1] = current
        elif current is not None:
            self.abort(current.handle)
        if self._pending:
            self._flowrun_notify_complete(max(self._pending))

    def _flowrun_abort(self) -> None:
        # Flink's close(): abort the current transaction only. Pending ones were
        # pre-committed in a checkpoint that may have completed: the next attempt commits them.
        current, self._current = getattr(self, "_current", None), None
        if current is not None:
            self.abort(current.handle)
