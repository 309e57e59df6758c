"""Reading the lines of one byte-range split of a file, in large blocks of whole lines.

Several readers share one file by byte ranges ``[start, end)``. The rule that makes every line
come out exactly once (Hadoop's, stated precisely): **a line belongs to the split in which its
first byte lies**. So a reader whose split does not start at 0 first skips to just after the
first ``\\n`` at or after ``start - 1`` (if byte ``start - 1`` is the ``\\n`` itself, a line
starts exactly at ``start`` and is ours), and a reader finishes its last line even when that
line runs past ``end``.

This module works on bytes only and never looks at a byte in Python: it reads with
``os.pread`` and uses ``bytes.find``/``rfind``, and hands out *blocks* of complete lines (each
ending with ``\\n``, except a file's last line, which may lack it). Decoding is the caller's job.
A line longer than a chunk is accumulated across calls; :meth:`LineBlockReader.read_block`
returns :data:`PENDING` when its time budget ran out first, so a gigantic line never stalls the
mailbox loop for long.

Resuming after a checkpoint needs nothing special: a reader records
:attr:`LineBlockReader.next_line_offset`, which is a line start (or its split's start, while it
is still looking for the first line), and a new reader over ``[that offset, end)`` applies the
same rule: byte ``offset - 1`` is the ``\\n`` ending the previous line, so the line at
``offset`` is its own, and it stops at the same last line.

Example::

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "f.txt")
    >>> _ = open(path, "wb").write(b"ab\\ncd\\nef")
    >>> r = LineBlockReader(path, 1, 9)     # byte 1 is inside "ab": that line is not ours
    >>> r.open()
    >>> r.read_block(), r.read_block()
    ((3, b'cd\\nef'), None)
    >>> r.close()
"""

from __future__ import annotations

import os
import time

__all__ = ["DEFAULT_CHUNK_SIZE", "PENDING", "LineBlockReader"]

DEFAULT_CHUNK_SIZE = 1 << 20
PENDING = "pending"
"""Returned by :meth:`LineBlockReader.read_block` when work is under way but no line is complete."""

_TIME_BUDGET = 0.005  # seconds of reading per call before yielding to the mailbox loop
_MAX_READ = 64 << 20  # largest single read while accumulating a huge line


class LineBlockReader:
    """Yields ``(offset, block)`` pairs of whole lines whose first byte is in ``[start, end)``."""

    def __init__(
        self, path: str, start: int, end: int, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        if not 0 <= start <= end:
            raise ValueError(f"bad split [{start}, {end}) of {path}")
        self.path = path
        self.start = start
        self.end = end
        self.chunk_size = chunk_size  # bytes per read; callers may change it between calls
        self._chunk_size = max(1, chunk_size)
        self._fd: int | None = None
        self._seeking = start > 0  # still looking for the first line start of the split
        self._scan = start - 1  # where the search for that line start continues
        self._pos = start  # first byte of the next line not yet handed out
        self._pending: list[bytes] = []  # pieces of a line longer than a chunk
        self._pending_len = 0
        self._done = start >= end

    @property
    def done(self) -> bool:
        """True once the split's last block has been handed out (or it has none)."""
        return self._done

    @property
    def next_line_offset(self) -> int:
        """File offset of the first line not yet handed out (``start`` while seeking)."""
        return self._pos

    def open(self) -> None:
        if self._fd is None and not self._done:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read_block(self) -> tuple[int, bytes] | str | None:
        """Next ``(offset, block)``; :data:`PENDING` to be called again; ``None`` when done."""
        deadline = time.monotonic() + _TIME_BUDGET
        self._chunk_size = max(1, self.chunk_size)
        while True:
            if self._done:
                self.close()
                return None
            result = self._skip_to_first_line() if self._seeking else self._next_block()
            if result is not PENDING:
                if result is None:
                    continue
                return result
            if time.monotonic() >= deadline:
                return PENDING

    def _pread(self, offset: int, already: int) -> tuple[bytes, bool]:
        """Read at ``offset``; reads grow with ``already`` (bytes of the same line seen so far)
        so that a huge line costs few calls. Returns the data and whether it hit end of file."""
        if self._fd is None:
            self.open()
        assert self._fd is not None
        size = max(self._chunk_size, min(already, _MAX_READ))
        data = os.pread(self._fd, size, offset)
        return data, len(data) < size

    def _skip_to_first_line(self) -> str | None:
        data, _ = self._pread(self._scan, self._scan - self.start)
        if not data:
            self._done = True
            return None
        k = data.find(b"\n")
        if k < 0:
            self._scan += len(data)
            return PENDING
        self._seeking = False
        self._pos = self._scan + k + 1
        if self._pos >= self.end:
            self._done = True
        return None

    def _next_block(self) -> tuple[int, bytes] | str | None:
        base = self._pos
        data, at_eof = self._pread(base + self._pending_len, self._pending_len)
        if self._pending:
            return self._continue_long_line(data, at_eof)
        if not data:
            self._done = True
            return None
        # Our last line is the one holding byte end - 1: it ends at the first \n from there on.
        limit = self.end - base
        j = data.find(b"\n", limit - 1)
        if j >= 0:
            self._done = True
            return self._hand_out(data[: j + 1])
        if at_eof:
            self._done = True
            return self._hand_out(data)
        k = data.rfind(b"\n")
        if k < 0:
            self._pending = [data]
            self._pending_len = len(data)
            return PENDING
        return self._hand_out(data[: k + 1])

    def _continue_long_line(self, data: bytes, at_eof: bool) -> tuple[int, bytes] | str:
        k = data.find(b"\n")
        if k < 0 and not at_eof:
            self._pending.append(data)
            self._pending_len += len(data)
            return PENDING
        tail = data if k < 0 else data[: k + 1]
        block = b"".join([*self._pending, tail])
        self._pending = []
        self._pending_len = 0
        if k < 0 or self._pos + len(block) >= self.end:
            self._done = True  # end of file, or the next line starts outside the split
        return self._hand_out(block)

    def _hand_out(self, block: bytes) -> tuple[int, bytes]:
        base = self._pos
        self._pos += len(block)
        return base, block
