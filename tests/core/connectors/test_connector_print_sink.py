"""PrintSink prefixes and output; the shared text encoding of records."""

from __future__ import annotations

import io
import sys

import cloudpickle
import pyarrow as pa
import pytest

from flowrun.core.connectors import Encoder, PrintSink
from flowrun.core.connectors.serialization import records_of_batch


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


@pytest.mark.parametrize(
    ("identifier", "subtask", "parallelism", "prefix"),
    [
        ("out", 0, 2, "out:1> "),
        ("out", 2, 3, "out:3> "),
        ("out", 0, 1, "out> "),
        (None, 1, 4, "2> "),
        (None, 0, 1, ""),
        ("", 0, 1, ""),
        ("", 0, 2, "1> "),
    ],
)
def test_prefix_rules(capsys, identifier, subtask, parallelism, prefix):
    writer = PrintSink(identifier).create_writer(subtask, parallelism, "job", "uid")
    writer.open()
    writer.write(["a", 1, None, ("t", 2)])
    writer.flush()
    expected = "".join(f"{prefix}{v}\n" for v in ["a", "1", "None", "('t', 2)"])
    assert capsys.readouterr().out == expected


def test_stderr_and_arrow_batches(capsys):
    writer = PrintSink("err", stderr=True).create_writer(0, 1, "job", "uid")
    writer.open()
    writer.write_batch(pa.record_batch({"line": ["x", "y"]}))
    writer.write_batch(pa.record_batch({"k": ["a", "b"], "v": [1, None]}))
    writer.finish()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "err> x\nerr> y\nerr> {'k': 'a', 'v': 1}\nerr> {'k': 'b', 'v': None}\n"


def test_one_write_per_batch_and_flush(monkeypatch):
    stream = CountingStream()
    monkeypatch.setattr(sys, "stdout", stream)
    writer = PrintSink().create_writer(0, 2, "job", "uid")
    writer.open()
    writer.write([str(i) for i in range(1000)])
    writer.write([])
    assert stream.writes == 1 and stream.flushes == 0
    writer.flush()
    assert stream.flushes == 1
    assert stream.getvalue() == "".join(f"1> {i}\n" for i in range(1000))


def test_print_sink_pickles():
    clone = cloudpickle.loads(cloudpickle.dumps(PrintSink("id", True)))
    assert (clone.sink_identifier, clone.stderr) == ("id", True)


def test_simple_string_encoder():
    encoder = Encoder.simple_string_encoder()
    assert encoder.encode_batch([]) == b""
    assert encoder.encode_batch(["a", "é"]) == "a\né\n".encode()
    assert (
        encoder.encode_batch(["a", 1, b"\xff", bytearray(b"z"), None]) == b"a\n1\n\xff\nz\nNone\n"
    )
    assert encoder.encode_each(["a", 2]) == [b"a\n", b"2\n"]
    assert encoder.encode({"k": 1}) == b"{'k': 1}\n"
    latin = Encoder.simple_string_encoder("ISO-8859-1")
    assert latin.encode_batch(["café", "日"]) == b"caf\xe9\n?\n"
    with pytest.raises(ValueError, match="unknown charset"):
        Encoder.simple_string_encoder("nope")


def test_records_of_batch():
    assert records_of_batch(pa.record_batch({"n": [1, 2]})) == [1, 2]
    assert records_of_batch(pa.record_batch({"a": [1], "b": ["x"]})) == [{"a": 1, "b": "x"}]
