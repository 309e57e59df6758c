"""The bounded text-file source behind ``env.read_text_file``: one record per line.

A file (or every file under a directory, recursively, skipping names that start with ``.`` or
``_`` as Flink's file enumerators do) is cut into byte ranges so that ``p`` readers share even a
single file: reader ``i`` owns ``[i * S // p, (i + 1) * S // p)`` of a file of ``S`` bytes, and
every line belongs to the reader in whose range its first byte lies (see
:mod:`~flowrun.core.connectors.line_blocks`). Within a reader, lines come out in file order.

The file list and sizes are taken when the source is built, on the client, so that all readers
agree on the split boundaries even if a file grows meanwhile.

Records are ``str`` lines without their ``\\n`` / ``\\r\\n``; with ``as_arrow=True`` readers return
``pyarrow.RecordBatch`` es with one string column ``line`` instead (built without a Python object
per line). Bytes that are invalid in the charset raise :class:`TextDecodeError` naming the file
and byte offset.

Replay: a reader's remaining work is one :class:`FileSplit` ``(path, start, end)`` per file
range it has not finished, where ``start`` is the offset of the next line not yet emitted (the
range's own start while the reader has not found its first line yet). Offsets are line starts,
so the rule above still assigns every remaining line to exactly one split, however the restored
splits are spread over the new readers. A snapshot costs O(splits): the next line's offset is
found with one vectorised pass over the current block (at most ``chunk_size`` bytes), and only
when a checkpoint comes in the middle of a block.

Example::

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "words.txt")
    >>> _ = open(path, "w").write("to\\nbe\\nor\\nnot\\n")
    >>> source = TextFileSource(path)
    >>> readers = [source.create_reader(i, 2) for i in range(2)]
    >>> [r.poll(100) for r in readers]
    [['to', 'be'], ['or', 'not']]
    >>> [r.poll(100) for r in readers]
    [None, None]
    >>> reader = source.create_reader(0, 1)
    >>> reader.poll(3), reader.snapshot_state(1) == [FileSplit(path, 9, 13)]
    (['to', 'be', 'or'], True)
    >>> source.restore_reader(0, 1, [FileSplit(path, 9, 13)]).poll(100)
    ['not']
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from flowrun.core.connectors.base import Source, SourceReader, as_split
from flowrun.core.connectors.line_blocks import DEFAULT_CHUNK_SIZE, PENDING, LineBlockReader
from flowrun.core.connectors.line_decoding import (
    LINE_SCHEMA,
    TextDecodeError,
    arrow_lines,
    check_charset,
    decode_lines,
)

__all__ = [
    "LINE_SCHEMA",
    "FileSplit",
    "TextDecodeError",
    "TextFileReader",
    "TextFileSource",
    "list_input_files",
    "reader_splits",
]

_TIME_BUDGET = 0.005  # seconds a poll may spend opening empty splits before yielding
_MIN_READ = 64 << 10  # smaller reads cost more per byte than they save in latency
#: largest block read for lines as Python strings. Why: a block is copied ~5 times on its
#: way to str lines (bytes, the decoded str, numpy and Arrow buffers), each copy read again
#: at once; above the subtasks' non-temporal copy threshold those copies bypass the cache,
#: and 5 copies of a 320 KiB block outgrow a 2 MiB L2 anyway. Measured on the rows word
#: count p=2 against the 160-320 KiB blocks it read before: 0.274x -> 0.276x (HashMap),
#: 0.268x -> 0.280x (LMDB), a small gain within the rounds' spread. Arrow lines keep large
#: blocks: an Arrow batch per 128 KiB made the Arrow word count ~30% slower.
_MAX_ROWS_READ = 128 << 10  # = config.NON_TEMPORAL_COPY_THRESHOLD
_NO_LINES = pa.RecordBatch.from_arrays([pa.array([], pa.string())], schema=LINE_SCHEMA)


class FileSplit(NamedTuple):
    """The lines of the file at ``path`` whose first byte lies in ``[start, end)``."""

    path: str
    start: int
    end: int


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def list_input_files(file_path: str) -> list[tuple[str, int]]:
    """``(path, size)`` of the file, or of every visible file under the directory, sorted.

    >>> list_input_files("/nonexistent/x.txt")
    Traceback (most recent call last):
    ...
    FileNotFoundError: text source: no such file or directory: '/nonexistent/x.txt'
    """
    path = file_path[len("file://") :] if file_path.startswith("file://") else file_path
    if os.path.isfile(path):
        return [(path, os.path.getsize(path))]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"text source: no such file or directory: {file_path!r}")
    found = []
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        for name in names:
            full = os.path.join(root, name)
            if not _is_hidden(name) and os.path.isfile(full):
                found.append((full, os.path.getsize(full)))
    return sorted(found)


def reader_splits(
    files: list[tuple[str, int]], subtask_index: int, parallelism: int
) -> list[FileSplit]:
    """The byte ranges reader ``subtask_index`` of ``parallelism`` reads, one per file."""
    if not 0 <= subtask_index < parallelism:
        raise ValueError(f"subtask {subtask_index} outside 0..{parallelism - 1}")
    splits = []
    for path, size in files:
        start = subtask_index * size // parallelism
        end = (subtask_index + 1) * size // parallelism
        if start < end:
            splits.append(FileSplit(path, start, end))
    return splits


class TextFileSource(Source):
    """Lines of a text file or directory; splittable, so any parallelism shares the work.

    Readers size each read to about ``max_records`` lines (at least 64 KiB, at most
    ``chunk_size`` bytes), so that one poll stays within a few milliseconds and returns about as
    many lines as asked for; lines longer than that are still read whole.
    """

    def __init__(
        self,
        path: str,
        charset_name: str = "UTF-8",
        as_arrow: bool = False,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.path = path
        self.charset_name = charset_name
        self.as_arrow = as_arrow
        self.chunk_size = chunk_size
        self._codec = check_charset(charset_name)
        self.files = list_input_files(path)

    def create_reader(self, subtask_index: int, parallelism: int) -> TextFileReader:
        splits = reader_splits(self.files, subtask_index, parallelism)
        return TextFileReader(splits, self._codec, self.as_arrow, self.chunk_size)

    def restore_reader(
        self, subtask_index: int, parallelism: int, splits: list[Any]
    ) -> TextFileReader:
        """Read the rest of ``splits``, one after another, each in file order.

        The recorded paths are read, whatever the source's path is now (as Flink's file source
        does); a file that has gone fails the job when the reader reaches it.
        """
        if not 0 <= subtask_index < parallelism:
            raise ValueError(f"subtask {subtask_index} outside 0..{parallelism - 1}")
        restored = []
        for split in splits:
            s = as_split(FileSplit, split, "text file source")
            if not (
                isinstance(s.path, str)
                and isinstance(s.start, int)
                and isinstance(s.end, int)
                and 0 <= s.start <= s.end
            ):
                raise ValueError(
                    f"text file source cannot restore split {s}: expected a path and byte "
                    f"offsets 0 <= start <= end"
                )
            if s.start < s.end:
                restored.append(s)
        return TextFileReader(restored, self._codec, self.as_arrow, self.chunk_size)

    def is_bounded(self) -> bool:
        return True

    def max_parallelism(self) -> int | None:
        return None

    def produces_arrow(self) -> bool:
        return self.as_arrow

    def __repr__(self) -> str:
        return f"TextFileSource({self.path!r}, {self.charset_name!r}, as_arrow={self.as_arrow})"


class TextFileReader(SourceReader):
    """Reads its splits one after another, a block of lines at a time, sliced per poll."""

    def __init__(
        self,
        splits: list[FileSplit],
        charset: str,
        as_arrow: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self._splits = splits
        self._charset = charset
        self._as_arrow = as_arrow
        self._chunk_size = chunk_size
        self._split_index = 0
        self._lines: LineBlockReader | None = None
        self._block = b""  # raw bytes of the lines being handed out
        self._block_offset = 0  # file offset of ``_block``
        self._newlines: np.ndarray | None = None  # of ``_block``, computed by a snapshot
        self._records: list[str] | pa.RecordBatch | None = None
        self._count = 0
        self._taken = 0
        self._call_again = False
        self._bytes_per_line = 64.0  # running estimate, to size reads to ``max_records``

    def _read_size(self, max_records: int) -> int:
        """About ``max_records`` lines' worth of bytes, at least 64 KiB, at most chunk_size
        (and :data:`_MAX_ROWS_READ` for lines as strings)."""
        wanted = int(self._bytes_per_line * max(1, max_records))
        if not self._as_arrow:
            wanted = min(wanted, _MAX_ROWS_READ)
        return min(self._chunk_size, max(_MIN_READ, wanted))

    def poll(self, max_records: int) -> list[str] | pa.RecordBatch | None:
        self._call_again = False
        if self._taken < self._count:
            return self._take(max_records)
        self._records = None
        deadline = time.monotonic() + _TIME_BUDGET
        while True:
            if self._lines is None:
                if self._split_index >= len(self._splits):
                    return None
                path, start, end = self._splits[self._split_index]
                self._lines = LineBlockReader(path, start, end, self._chunk_size)
            self._lines.chunk_size = self._read_size(max_records)
            result = self._lines.read_block()
            if result is None:
                self._lines.close()
                self._lines = None
                self._split_index += 1
                if time.monotonic() < deadline:
                    continue
                result = PENDING
            if result is PENDING:
                self._call_again = True
                return _NO_LINES if self._as_arrow else []
            assert isinstance(result, tuple)
            self._block_offset, self._block = result
            self._newlines = None
            self._records = self._convert(self._block, self._block_offset)
            self._count = len(self._records)
            self._taken = 0
            self._bytes_per_line = len(self._block) / self._count
            return self._take(max_records)

    def _convert(self, block: bytes, offset: int) -> list[str] | pa.RecordBatch:
        path = self._splits[self._split_index].path
        if self._as_arrow:
            column = arrow_lines(block, self._charset, path, offset)
            return pa.RecordBatch.from_arrays([column], schema=LINE_SCHEMA)
        return decode_lines(block, self._charset, path, offset)

    def _take(self, max_records: int) -> list[str] | pa.RecordBatch:
        records = self._records
        assert records is not None
        first = self._taken
        self._taken = min(self._count, first + max(1, max_records))
        if first == 0 and self._taken == self._count:
            return records
        if isinstance(records, pa.RecordBatch):
            return records.slice(first, self._taken - first)
        return records[first : self._taken]

    def next_wakeup(self) -> float | None:
        return time.monotonic() if self._call_again else None

    def snapshot_state(self, checkpoint_id: int) -> list[FileSplit]:
        """The current split from its next unread line on, and the splits not started yet."""
        index = self._split_index
        if index >= len(self._splits):
            return []
        current = self._splits[index]
        if self._taken < self._count:  # lines of the block are still to be handed out
            offset = self._block_offset + self._line_start(self._taken)
        elif self._lines is None:  # not opened yet
            offset = current.start
        elif self._lines.done:
            offset = current.end  # every line of the split has been handed out
        else:
            offset = self._lines.next_line_offset
        rest = self._splits[index + 1 :]
        if offset < current.end:
            return [FileSplit(current.path, offset, current.end), *rest]
        return list(rest)

    def _line_start(self, index: int) -> int:
        """Offset within the current block of its line ``index`` (one numpy pass per block)."""
        if index <= 0:
            return 0
        if self._newlines is None:
            self._newlines = np.flatnonzero(np.frombuffer(self._block, np.uint8) == 10)
        return int(self._newlines[index - 1]) + 1

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
            self._lines = None
