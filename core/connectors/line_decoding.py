"""Turning a block of whole lines (bytes) into ``list[str]`` or an Arrow string column.

Line terminators follow Flink's ``TextInputFormat`` (``read_text_file``): lines end at ``\\n``
and one ``\\r`` before it is dropped too; the file's last line may lack the ``\\n`` (its trailing
``\\r`` is still dropped). A lone ``\\r`` elsewhere is data.

The Arrow path for UTF-8 avoids Python objects per line: newline offsets come from numpy, the
block is wrapped zero-copy as a binary array of lines *with* their ``\\n``, and one
``binary_slice`` kernel drops the terminators; UTF-8 validity is checked once per block (and
skipped for pure ASCII). This is about four times as fast as ``pa.array(text.split("\\n"))``
(measured by ``tests/core/connectors/bench_text_source.py``).

Example::

    >>> decode_lines(b"a\\r\\nb\\n", "utf-8", "f.txt", 0)
    ['a', 'b']
    >>> arrow_lines(b"x\\n\\ny", "utf-8", "f.txt", 0).to_pylist()
    ['x', '', 'y']
"""

from __future__ import annotations

import codecs

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "LINE_SCHEMA",
    "TextDecodeError",
    "arrow_lines",
    "check_charset",
    "decode_lines",
    "line_start",
]

LINE_SCHEMA = pa.schema([pa.field("line", pa.string())])
"""Schema of the batches a text source produces in Arrow mode: one string column ``line``."""

_MAX_INT32 = 2**31 - 1


class TextDecodeError(ValueError):
    """Bytes in a text file are not valid in its charset; the message names file and offset."""

    def __init__(self, path: str, offset: int, charset: str, reason: str) -> None:
        super().__init__(f"{path}: invalid {charset} data at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset


def check_charset(charset_name: str) -> str:
    """Python's codec name for a Java-style charset name, if lines can be split in bytes.

    Splitting at ``\\n`` bytes is only sound for charsets in which that byte always means a
    newline (ASCII-compatible ones: UTF-8, ISO-8859-x, windows-125x, GBK, Shift_JIS, ...).
    """
    try:
        name = codecs.lookup(charset_name).name
    except LookupError:
        raise ValueError(f"unknown charset {charset_name!r}") from None
    if "\n\r".encode(name, "replace") != b"\n\r" or name.startswith(("utf-16", "utf-32")):
        raise ValueError(
            f"charset {charset_name!r} is not supported for text files: lines are split at "
            "'\\n' bytes, which needs an ASCII-compatible charset such as UTF-8"
        )
    return name


def _decode(block: bytes, charset: str, path: str, base: int) -> str:
    try:
        return block.decode(charset)
    except UnicodeDecodeError as err:
        raise TextDecodeError(path, base + err.start, charset, err.reason) from err


def decode_lines(block: bytes, charset: str, path: str, base: int) -> list[str]:
    """The lines of ``block`` (which starts at file offset ``base``) as strings."""
    text = _decode(block, charset, path, base)
    if b"\r" in block:
        text = text.replace("\r\n", "\n")
    if text.endswith("\n"):
        return text[:-1].split("\n")
    lines = text.split("\n")  # the file's last line, without a newline
    if lines[-1].endswith("\r"):
        lines[-1] = lines[-1][:-1]
    return lines


def arrow_lines(block: bytes, charset: str, path: str, base: int) -> pa.StringArray:
    """The lines of ``block`` as an Arrow string array (zero Python objects per line for UTF-8)."""
    if charset not in ("utf-8", "ascii"):
        return pa.array(decode_lines(block, charset, path, base), pa.string())
    if not block.isascii():
        _decode(block, charset, path, base)  # validate; the error names the file offset
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n")
    if not block.endswith(b"\n"):
        block = (block[:-1] if block.endswith(b"\r") else block) + b"\n"
    newlines = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
    count = len(newlines)
    if len(block) > _MAX_INT32:
        raise ValueError(f"{path}: more than 2 GiB of text in one block at byte offset {base}")
    offsets = np.empty(count + 1, np.int32)
    offsets[0] = 0
    np.add(newlines, 1, out=offsets[1:], casting="unsafe")
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(block)]
    with_newlines = pa.BinaryArray.from_buffers(pa.binary(), count, buffers)  # zero-copy
    return pc.binary_slice(with_newlines, 0, -1).view(pa.string())  # one copy, in C++


def line_start(block: bytes, index: int) -> int:
    """Offset within ``block`` of its line number ``index`` (``len(block)`` past the last)."""
    if index <= 0:
        return 0
    newlines = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
    if index > len(newlines):
        return len(block)
    return int(newlines[index - 1]) + 1
