"""The contract between connectors and the engine: sources hand out readers, sinks hand out writers.

Every parallel subtask runs in its own OS process, so a :class:`Source` or :class:`Sink` is a
small picklable *description* built on the client; the engine ships it to each subtask process
and calls :meth:`Source.create_reader` / :meth:`Sink.create_writer` there. Readers and writers
are then driven by the subtask's single-threaded mailbox loop, which also serves control
messages and network credits, so **no method may block for long**: a reader with nothing to
hand out returns ``[]`` and tells the loop what to wait for (:meth:`SourceReader.fileno`,
:meth:`SourceReader.next_wakeup`).

Example (a complete, if tiny, source)::

    >>> class Countdown(Source):
    ...     def create_reader(self, subtask_index, parallelism):
    ...         return CountdownReader()
    >>> class CountdownReader(SourceReader):
    ...     def __init__(self):
    ...         self.left = [3, 2, 1]
    ...     def poll(self, max_records):
    ...         if not self.left:
    ...             return None
    ...         out, self.left = self.left[:max_records], self.left[max_records:]
    ...         return out
    >>> reader = Countdown().create_reader(0, 1)
    >>> reader.open()
    >>> reader.poll(2), reader.poll(2), reader.poll(2)
    ([3, 2], [1], None)
"""

from __future__ import annotations

import enum
from typing import Any

import pyarrow as pa

from flowrun.core.connectors.serialization import records_of_batch

__all__ = ["DeliveryGuarantee", "Sink", "SinkWriter", "Source", "SourceReader"]


class DeliveryGuarantee(enum.Enum):
    """How often a sink promises to deliver each record after failures (PyFlink's names)."""

    EXACTLY_ONCE = 0
    AT_LEAST_ONCE = 1
    NONE = 2


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

    def position(self) -> dict[str, Any]:
        """The read position (offsets, counts) that a checkpoint would record."""
        return {}

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


class SinkWriter:
    """Writes one subtask's records; buffered, with explicit end-of-input and failure paths."""

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

    def finish(self) -> None:
        """Bounded input ended successfully: make all output final."""
        self.flush()

    def abort(self) -> None:
        """The job failed or was cancelled: drop unfinished output, keep finished output."""


class Sink:
    """Describes where records go; picklable, cheap, created on the client."""

    def create_writer(
        self, subtask_index: int, parallelism: int, job_id: str, operator_uid: str
    ) -> SinkWriter:
        """Build the writer of subtask ``subtask_index`` out of ``parallelism``."""
        raise NotImplementedError
