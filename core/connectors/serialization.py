"""Turning records into bytes for text sinks (PyFlink's ``pyflink.common.serialization``).

A sink receives either Python rows or Arrow batches; text sinks want one line per record. This
module owns both decisions so that the file sink and the print sink agree on them:

* :func:`records_of_batch` says what a "record" of an Arrow batch is: the value of the single
  column, or a ``dict`` of the row when there are several columns.
* :class:`Encoder` turns records into newline-terminated bytes, a whole batch per call so that a
  sink can issue one write per batch.

Example::

    >>> enc = Encoder.simple_string_encoder()
    >>> enc.encode_batch(["a", 1, b"raw"])
    b'a\\n1\\nraw\\n'
"""

from __future__ import annotations

import codecs
from typing import Any

import pyarrow as pa

__all__ = ["Encoder", "SimpleStringEncoder", "records_of_batch", "to_text"]


def records_of_batch(batch: pa.RecordBatch) -> list[Any]:
    """The records of an Arrow batch as text sinks see them.

    One column: that column's values (so a stream of strings stays a stream of strings).
    Several columns: one ``dict`` per row, printed by sinks as ``str(dict)``.

    >>> records_of_batch(pa.record_batch({"line": ["x", "y"]}))
    ['x', 'y']
    >>> records_of_batch(pa.record_batch({"k": ["a"], "v": [1]}))
    [{'k': 'a', 'v': 1}]
    """
    if batch.num_columns == 1:
        return batch.column(0).to_pylist()
    return batch.to_pylist()


def to_text(value: Any) -> str:
    """``str(value)``, except that strings pass through unchanged (cheap identity)."""
    return value if type(value) is str else str(value)


class Encoder:
    """Writes one element as bytes; PyFlink's factory lives here as a static method."""

    def encode(self, element: Any) -> bytes:
        """The bytes of one element, including its line terminator."""
        raise NotImplementedError

    def encode_batch(self, elements: list[Any]) -> bytes:
        """The concatenated bytes of many elements (one buffer, for one write)."""
        return b"".join(self.encode_each(elements))

    def encode_each(self, elements: list[Any]) -> list[bytes]:
        """The bytes of each element, for sinks that must cut a batch (size-based rolling)."""
        return [self.encode(e) for e in elements]

    @staticmethod
    def simple_string_encoder(charset_name: str = "UTF-8") -> SimpleStringEncoder:
        """One line per element: ``str(element)`` encoded with ``charset_name``, then ``\\n``.

        >>> Encoder.simple_string_encoder("ISO-8859-1").encode("café")
        b'caf\\xe9\\n'
        """
        return SimpleStringEncoder(charset_name)


class SimpleStringEncoder(Encoder):
    """``str(element)`` + ``"\\n"``; ``str`` and ``bytes`` elements are written unchanged.

    Characters the charset cannot represent become ``?`` (Java's ``String.getBytes`` rule), so
    a stray character never fails a job.
    """

    def __init__(self, charset_name: str = "UTF-8") -> None:
        try:
            codecs.lookup(charset_name)
        except LookupError:
            raise ValueError(f"unknown charset {charset_name!r}") from None
        self.charset_name = charset_name

    def _bytes(self, element: Any) -> bytes:
        if isinstance(element, (bytes, bytearray, memoryview)):
            return bytes(element)
        return to_text(element).encode(self.charset_name, "replace")

    def encode(self, element: Any) -> bytes:
        return self._bytes(element) + b"\n"

    def encode_batch(self, elements: list[Any]) -> bytes:
        if not elements:
            return b""
        try:
            text = "\n".join(elements)  # fast path: all elements are str
        except TypeError:
            return b"\n".join([self._bytes(e) for e in elements]) + b"\n"
        return (text + "\n").encode(self.charset_name, "replace")

    def __repr__(self) -> str:
        return f"SimpleStringEncoder({self.charset_name!r})"
