"""The contract between connectors and the engine: sources hand out readers, sinks hand out writers.

Every parallel subtask runs in its own OS process, so a :class:`Source` or :class:`Sink` is a
small picklable *description* built on the client; the engine ships it to each subtask process
and calls :meth:`Source.create_reader` / :meth:`Sink.create_writer` there. Readers and writers
are then driven by the subtask's single-threaded mailbox loop, which also serves control
messages and network credits, so **no method may block for long**: a reader with nothing to
hand out returns ``[]`` and tells the loop what to wait for (:meth:`SourceReader.fileno`,
:meth:`SourceReader.next_wakeup`).

A source is *replayable* (exactly-once after a failure) when its readers describe their
remaining work as splits (:meth:`SourceReader.snapshot_state`) and the source can build a
reader that resumes any share of them (:meth:`Source.restore_reader`).

Example (a complete, if tiny, replayable source)::

    >>> class Countdown(Source):
    ...     def create_reader(self, subtask_index, parallelism):
    ...         return CountdownReader([(3, 2, 1)])
    ...     def restore_reader(self, subtask_index, parallelism, splits):
    ...         return CountdownReader(splits)
    >>> class CountdownReader(SourceReader):
    ...     def __init__(self, splits):
    ...         self.left = [n for split in splits for n in split]
    ...     def poll(self, max_records):
    ...         if not self.left:
    ...             return None
    ...         out, self.left = self.left[:max_records], self.left[max_records:]
    ...         return out
    ...     def snapshot_state(self, checkpoint_id):
    ...         return [tuple(self.left)] if self.left else []
    >>> reader = Countdown().create_reader(0, 1)
    >>> reader.open()
    >>> reader.poll(2), reader.snapshot_state(1)
    ([3, 2], [(1,)])
    >>> restored = Countdown().restore_reader(0, 1, [(1,)])
    >>> restored.poll(2), restored.poll(2)
    ([1], None)
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import pyarrow as pa

from flowrun.core.connectors.serialization import records_of_batch
from flowrun.core.reprs import short_repr

_T = TypeVar("_T")

__all__ = [
    "DeliveryGuarantee",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceReader",
    "as_split",
]


class DeliveryGuarantee(enum.Enum):
    """How often a sink promises to deliver each record after failures (PyFlink's names)."""

    EXACTLY_ONCE = 0
    AT_LEAST_ONCE = 1
    NONE = 2


def as_split(split_type: type[_T], split: Any, source: str) -> _T:
    """``split`` as a ``split_type`` NamedTuple, or a ValueError naming the source and why.

    Restored splits come from a checkpoint, maybe one written by an older job; a tuple or a
    dict with the right fields is accepted, anything else is refused before reading starts.

    >>> from typing import NamedTuple
    >>> class Range(NamedTuple):
    ...     next: int
    ...     stop: int
    >>> as_split(Range, (3, 9), "numbers")
    Range(next=3, stop=9)
    >>> as_split(Range, "3..9", "numbers")
    Traceback (most recent call last):
    ...
    ValueError: numbers cannot restore split '3..9': expected Range(next, stop)
    """
    if isinstance(split, split_type):
        return split
    try:
        if isinstance(split, dict):
            return split_type(**split)
        if isinstance(split, (tuple, list)):
            return split_type(*split)
    except TypeError:
        pass
    fields = ", ".join(split_type._fields)  # type: ignore[attr-defined]
    raise ValueError(
        f"{source} cannot restore split {short_repr(split)}: expected "
        f"{split_type.__name__}({fields})"
    )


class SourceReader:
    """Reads one subtask's share of a source, a bounded slice of work per :meth:`poll`.

    ``poll`` returns a list of records (or a ``pyarrow.RecordBatch`` when the source
    :meth:`~Source.produces_arrow`), ``[]`` when nothing is available right now, and ``None``
    once the reader is finished for good. After ``[]`` the loop waits until :meth:`fileno` is
    readable or :meth:`next_wakeup` has passed; a wakeup time that is already due means
    "call poll again as soon as you have served your mail".
    """

    def open(self) -> None:
        """Acquire resources (files, sockets); called once in the subtask process."""

    def poll(self, max_records: int) -> list[Any] | pa.RecordBatch | None:
        """Return up to about ``max_records`` records within a few milliseconds."""
        raise NotImplementedError

    def fileno(self) -> int | None:
        """A file descriptor that becomes readable when data arrives, or ``None``."""
        return None

    def next_wakeup(self) -> float | None:
        """``time.monotonic()`` value at which more data is due, or ``None``."""
        return None

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        """The reader's remaining work, as a list of *splits*, for checkpoint ``checkpoint_id``.

        This is what makes a source replayable, and so exactly-once after a failure: the
        engine stores the splits of all readers as operator list state (``SPLIT_DISTRIBUTE``)
        and, on restore, hands each new reader an even share of their union through
        :meth:`Source.restore_reader`, at the old or at any other parallelism.

        A split is small and picklable (a ``NamedTuple`` of paths, offsets, counters) and
        describes work that any reader can pick up, on its own. The list is consistent with
        everything :meth:`poll` has returned so far: those records count as emitted and are
        not in any split. Finished splits are dropped, so a reader that is done returns ``[]``.
        The engine calls this between polls, never during one; it must cost O(splits), never
        O(records), since it runs on every checkpoint.

        The default, ``[]``, is for sources that cannot replay: after a restore they start
        afresh (see :meth:`Source.restore_reader`).
        """
        return []

    def close(self) -> None:
        """Release resources; safe to call more than once and after a failed ``open``."""


class Source:
    """Describes where records come from; picklable, cheap, created on the client."""

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        """Build the reader of subtask ``subtask_index`` out of ``parallelism``."""
        raise NotImplementedError

    def is_bounded(self) -> bool:
        """True when every reader eventually returns ``None`` from ``poll``."""
        return True

    def max_parallelism(self) -> int | None:
        """Upper bound on the number of readers (``1`` for non-splittable sources), or None."""
        return None

    def produces_arrow(self) -> bool:
        """True when readers return ``pyarrow.RecordBatch`` instead of lists."""
        return False

    def restore_reader(
        self, subtask_index: int, parallelism: int, splits: list[Any]
    ) -> SourceReader:
        """A reader of subtask ``subtask_index`` out of ``parallelism`` resuming ``splits``.

        ``splits`` is this subtask's share of the union of what the old readers returned from
        :meth:`SourceReader.snapshot_state`; the old job may have run at any parallelism. The
        reader must emit exactly the records these splits still hold, each split in its own
        order, and nothing else; with no splits a bounded source's reader is done at once.

        The default is for sources whose readers keep no state (the default
        ``snapshot_state``): they cannot replay, so the reader starts afresh, as Flink does
        with a source function that is not checkpointed. A source whose readers do return
        splits must override this; the default refuses splits rather than drop them.
        """
        if splits:
            raise NotImplementedError(
                f"{type(self).__name__} cannot restore its readers' splits: its readers "
                f"return splits from snapshot_state() but the source does not implement "
                f"restore_reader() (got {len(splits)} split(s) for subtask "
                f"{subtask_index} of {parallelism})"
            )
        return self.create_reader(subtask_index, parallelism)


class SinkWriter:
    """Writes one subtask's records; buffered, with explicit end-of-input and failure paths.

    **Checkpoints.** With checkpointing on, the engine drives a writer through Flink's
    two-phase protocol: at each barrier :meth:`snapshot_state` (after every record before the
    barrier reached :meth:`write`), then :meth:`notify_checkpoint_complete` once the checkpoint
    is durable on every subtask. After a failure, a new writer gets :meth:`restore_state` with
    its share of the last completed checkpoint's state, before :meth:`open`, and the records
    after that checkpoint are replayed. A writer that pre-commits its output in
    ``snapshot_state`` and commits it in ``notify_checkpoint_complete`` (and again, idempotently,
    in ``restore_state``) is exactly-once. Without checkpointing only ``finish``/``abort`` come.
    All of these defaults do nothing, which gives at-least-once output.
    """

    def set_checkpointing_enabled(self, enabled: bool) -> None:
        """Whether the job takes checkpoints; called at most once, before ``restore_state``.

        A writer that holds output back until a checkpoint completes (files, a write-ahead
        log) must know whether one ever will: when it is told ``False`` it makes output final
        as it goes. When never called, such writers assume "no checkpoints" until the first
        :meth:`snapshot_state` (or :meth:`restore_state`) arrives.
        """

    def open(self) -> None:
        """Acquire resources; called once in the subtask process."""

    def write(self, records: list[Any]) -> None:
        """Write a batch of row records."""
        raise NotImplementedError

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Write an Arrow batch; the default converts it to rows (see ``records_of_batch``)."""
        self.write(records_of_batch(batch))

    def flush(self) -> None:
        """Push buffered output to its destination; also the hook for time-based work."""

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        """Pre-commit at the barrier of ``checkpoint_id``; return this writer's state for it.

        Called after every record before the barrier was passed to :meth:`write`, and no
        ``write`` comes until it returns. The list is stored as the sink's operator list state
        (``SPLIT_DISTRIBUTE``): its elements must be picklable and small (paths, transaction
        ids, counters -- not the records), and each must make sense on its own, since after a
        rescale they are dealt out to other subtasks.
        """
        return []

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` and every one before it are durable: commit.

        Notifications may come late or be skipped (only the newest is sent), so commit
        everything pre-committed up to and including ``checkpoint_id``.
        """

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` will not complete; its pre-committed output stays
        pending and is committed with the next checkpoint that does."""

    def restore_state(self, state: list[Any]) -> None:
        """Resume from a completed checkpoint; called after ``create_writer``, before ``open``.

        ``state`` is this subtask's share of the union of what every old subtask returned from
        :meth:`snapshot_state` for that checkpoint; the old job may have had another
        parallelism, and the share may be empty. The checkpoint is complete, so what was
        pre-committed in it must be committed now -- idempotently, as the commit may have
        happened before the failure -- and anything else the failed attempt left behind must
        be aborted or removed.
        """

    def finish(self) -> None:
        """Bounded input ended successfully: make all output final."""
        self.flush()

    def abort(self) -> None:
        """The job failed or was cancelled: drop unfinished output, keep finished output.

        Output pre-committed in a checkpoint is kept: that checkpoint may have completed, and
        the next attempt commits it in :meth:`restore_state`.
        """


class Sink:
    """Describes where records go; picklable, cheap, created on the client."""

    def create_writer(
        self, subtask_index: int, parallelism: int, job_id: str, operator_uid: str
    ) -> SinkWriter:
        """Build the writer of subtask ``subtask_index`` out of ``parallelism``."""
        raise NotImplementedError
