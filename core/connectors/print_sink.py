"""The sink behind ``DataStream.print``: one line per record on stdout (or stderr).

Lines carry Flink's ``PrintSinkFunction`` prefix, so output of parallel subtasks can be told
apart: identifier and parallelism > 1 give ``"<id>:<subtask+1>> "``, an identifier alone
``"<id>> "``, parallelism > 1 alone ``"<subtask+1>> "``, and neither no prefix. Values are
printed with ``str(value)``; an Arrow batch prints one line per row (the single column's value,
or the row as a ``dict``). Each batch is one ``write`` call on the stream, which keeps the
per-record cost low; ``flush`` flushes the stream.

Example::

    >>> writer = PrintSink("out").create_writer(1, 4, "job", "print-1")
    >>> writer.open()
    >>> writer.write(["a", 42])
    out:2> a
    out:2> 42
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

import pyarrow as pa

from flowrun.core.connectors.base import Sink, SinkWriter
from flowrun.core.connectors.serialization import records_of_batch, to_text

__all__ = ["PrintSink", "PrintSinkWriter", "print_prefix"]


def print_prefix(sink_identifier: str | None, subtask_index: int, parallelism: int) -> str:
    """Flink's ``PrintSinkOutputWriter`` line prefix.

    >>> [print_prefix("x", 0, 2), print_prefix("x", 0, 1), print_prefix(None, 1, 2), print_prefix(None, 0, 1)]
    ['x:1> ', 'x> ', '2> ', '']
    """
    prefix = sink_identifier or ""
    if parallelism > 1:
        prefix = f"{prefix}:{subtask_index + 1}" if prefix else str(subtask_index + 1)
    return f"{prefix}> " if prefix else ""


_PIPE_BUF = 4096  #: POSIX: writes up to this size into a pipe are never interleaved


def _write_whole_lines(fd: int, data: bytes) -> None:
    """Write ``data`` in chunks that end at a line end and fit PIPE_BUF where possible.

    Every subtask process prints to the same stdout; a pipe keeps a write of at most
    PIPE_BUF bytes in one piece, so lines of different subtasks never mix mid-line.
    """
    view = memoryview(data)
    start = 0
    end_all = len(data)
    while start < end_all:
        end = min(start + _PIPE_BUF, end_all)
        if end < end_all:
            cut = data.rfind(b"\n", start, end)
            end = cut + 1 if cut >= start else data.find(b"\n", end) + 1 or end_all
        while start < end:
            start += os.write(fd, view[start:end])


class PrintSink(Sink):
    """Prints every record as a line, with a prefix naming the sink and subtask."""

    def __init__(self, sink_identifier: str | None = None, stderr: bool = False) -> None:
        self.sink_identifier = sink_identifier
        self.stderr = stderr

    def create_writer(
        self, subtask_index: int, parallelism: int, job_id: str, operator_uid: str
    ) -> PrintSinkWriter:
        prefix = print_prefix(self.sink_identifier, subtask_index, parallelism)
        return PrintSinkWriter(prefix, self.stderr)

    def __repr__(self) -> str:
        return f"PrintSink({self.sink_identifier!r}, stderr={self.stderr})"


class PrintSinkWriter(SinkWriter):
    """Writes prefixed lines to the *current* ``sys.stdout``/``sys.stderr`` (looked up per call)."""

    def __init__(self, prefix: str, stderr: bool = False) -> None:
        self.prefix = prefix
        self._stderr = stderr

    def _stream(self) -> TextIO:
        return sys.stderr if self._stderr else sys.stdout

    def write(self, records: list[Any]) -> None:
        if not records:
            return
        separator = "\n" + self.prefix
        text = self.prefix + separator.join(map(to_text, records)) + "\n"
        stream = self._stream()
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            stream.write(text)  # a StringIO or the like: nobody else writes into it
            return
        stream.flush()
        _write_whole_lines(fd, text.encode(getattr(stream, "encoding", None) or "utf-8"))

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.write(records_of_batch(batch))

    def flush(self) -> None:
        self._stream().flush()

    def finish(self) -> None:
        self.flush()

    def abort(self) -> None:
        self.flush()  # printed lines cannot be taken back; make sure they are all out
