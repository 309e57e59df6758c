"""Bulk formats for :class:`~flowrun.core.connectors.file_system.FileSink` (Flink's ``BulkWriter``).

A row format appends one encoded record after another, so a part file can be cut anywhere. A
*bulk* format (Parquet, ORC) encodes many records together and ends a file with a footer, so
a part file is only readable once its writer has *finished* it. That is why bulk part files
roll only at checkpoints (and at the end of input): the part that is open when a checkpoint
arrives is finished and becomes pending, and nothing half-written is ever committed.

A :class:`BulkWriterFactory` is the picklable description shipped to every subtask; the sink
calls :meth:`BulkWriterFactory.create` with the open binary stream of each new part file and
hands the returned :class:`BulkWriter` the part's records. The sink owns the stream: it flushes,
``fsync`` s and closes it after :meth:`BulkWriter.finish`.

Example (a toy bulk format: a record count as footer)::

    >>> import io
    >>> class CountingWriter(BulkWriter):
    ...     def __init__(self, stream):
    ...         self.stream, self.count = stream, 0
    ...     def add_elements(self, elements):
    ...         self.stream.write("".join(f"{e}\\n" for e in elements).encode())
    ...         self.count += len(elements)
    ...     def finish(self):
    ...         self.stream.write(f"# {self.count} records\\n".encode())
    >>> class Counting(BulkWriterFactory):
    ...     def create(self, stream):
    ...         return CountingWriter(stream)
    >>> out = io.BytesIO()
    >>> writer = Counting().create(out)
    >>> writer.add_elements(["a", "b"])
    >>> writer.add_element("c")
    >>> writer.finish()
    >>> out.getvalue().decode()
    'a\\nb\\nc\\n# 3 records\\n'
"""

from __future__ import annotations

from typing import Any, BinaryIO

import pyarrow as pa

from flowrun.core.connectors.serialization import records_of_batch

__all__ = ["BulkWriter", "BulkWriterFactory"]


class BulkWriter:
    """Encodes the records of one part file into its stream; see the module docstring."""

    def add_element(self, element: Any) -> None:
        """Add one record (Flink's ``addElement``)."""
        self.add_elements([element])

    def add_elements(self, elements: list[Any]) -> None:
        """Add a batch of records; the sink calls this once per batch it receives."""
        raise NotImplementedError

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Add an Arrow batch; the default converts it to records (see ``records_of_batch``)."""
        self.add_elements(records_of_batch(batch))

    def flush(self) -> None:
        """Write buffered records to the stream (a format may keep a row group in memory)."""

    def finish(self) -> None:
        """Write everything still buffered and the footer. Must not close the stream."""
        raise NotImplementedError

    def discard(self) -> None:
        """The part is being thrown away (the job failed): release what the writer holds
        without finishing it; the sink then deletes the file. Must not close the stream."""


class BulkWriterFactory:
    """Picklable description of a bulk format; builds one :class:`BulkWriter` per part file."""

    def create(self, stream: BinaryIO) -> BulkWriter:
        """A writer for a new part file whose (empty) binary stream is ``stream``."""
        raise NotImplementedError
