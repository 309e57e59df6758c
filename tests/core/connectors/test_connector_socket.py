"""SocketTextSource against a real TCP server on 127.0.0.1; retry timing on a fake clock."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable

import cloudpickle
import pytest

from flowrun.core.connectors import SocketTextSource
from flowrun.core.connectors.socket import DelimitedText


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Server:
    """Accepts one connection per script, runs the script on it, closes it."""

    def __init__(self, scripts: list[Callable[[socket.socket], None]], close_after=True) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._scripts = scripts
        self._close_after = close_after
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for script in self._scripts:
            conn, _ = self.listener.accept()
            self.accepted += 1
            with conn:
                script(conn)
        if self._close_after:
            self.listener.close()

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()


def send(*chunks: bytes, pause: float = 0.02):
    def script(conn: socket.socket) -> None:
        for chunk in chunks:
            conn.sendall(chunk)
            time.sleep(pause)  # make separate segments likely

    return script


def drive(reader, clock: FakeClock | None = None, max_records=1000, stop_after=None, timeout=10):
    """Poll like the mailbox loop: wait on fileno / next_wakeup, advance a fake clock."""
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = reader.poll(max_records)
        if got is None:
            return out
        assert len(got) <= max_records
        out.extend(got)
        if stop_after is not None and len(out) >= stop_after:
            return out
        if got:
            continue
        wakeup = reader.next_wakeup()
        fd = reader.fileno()
        if fd is None and wakeup is not None and clock is not None and wakeup > clock.now:
            clock.now = wakeup  # nothing to wait for but time: jump there
        elif fd is not None:
            select.select([fd], [], [], 0.05)
        else:
            time.sleep(0.001)
    raise AssertionError(f"reader did not finish; got {out}")


def open_reader(port: int, **kwargs):
    reader = SocketTextSource("127.0.0.1", port, **kwargs).create_reader(0, 1)
    reader.open()
    return reader


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def test_lines_crlf_and_trailing_text_then_end():
    server = Server([send(b"alpha\nbe", b"ta\r\n\ngam", b"ma\r")])
    reader = open_reader(server.port)
    # Flink keeps the trailing text as is: the \r is only dropped before a \n delimiter.
    assert drive(reader) == ["alpha", "beta", "", "gamma\r"]
    assert reader.fileno() is None and reader.poll(10) is None
    assert reader.records_emitted == 4 and reader.bytes_received == 19
    assert reader.snapshot_state(1) == []  # at-most-once: nothing to replay
    server.close()


def test_multi_character_delimiter_split_across_segments():
    server = Server([send(b"x|", b"|y\r||", b"|z||")])
    reader = open_reader(server.port, delimiter="||")
    assert drive(reader) == ["x", "y\r", "|z"]
    server.close()


def test_utf8_character_split_across_segments():
    data = "héllo wörld\n日本\n".encode()
    server = Server([send(data[:2], data[2:13], data[13:])])
    assert drive(open_reader(server.port)) == ["héllo wörld", "日本"]
    server.close()


def test_poll_never_blocks_and_respects_max_records():
    gate = threading.Event()

    def script(conn):
        gate.wait(10)
        conn.sendall(b"".join(b"%d\n" % i for i in range(10_000)))

    server = Server([script])
    reader = open_reader(server.port)
    started = time.monotonic()
    for _ in range(20):
        assert reader.poll(100) == []
    assert time.monotonic() - started < 0.5
    assert reader.fileno() is not None
    gate.set()
    records = drive(reader, max_records=100)
    assert records == [str(i) for i in range(10_000)]
    server.close()


def test_retries_reconnect_after_delay_and_keep_partial_text():
    clock = FakeClock()
    server = Server([send(b"one\npart"), send(b"ial\ntwo\n"), send(b"three"), send(b"never\n")])
    reader = open_reader(server.port, max_retry=2, clock=clock)
    got = drive(reader, clock, stop_after=1)
    assert got == ["one"]
    # After the first connection ends, nothing happens until 500 ms have passed on the clock.
    for _ in range(50):
        if reader.next_wakeup() is not None and reader.fileno() is None:
            break
        assert reader.poll(10) == []
        time.sleep(0.01)
    assert reader.next_wakeup() == pytest.approx(clock.now + 0.5)
    assert reader.poll(10) == [] and server.accepted == 1
    rest = drive(reader, clock)
    assert rest == ["partial", "two", "three"]
    assert server.accepted == 3  # max_retry=2: two reconnections, then the stream ends
    server.thread.join(0.2)
    assert server.thread.is_alive()  # the fourth script is still waiting for a connection
    with socket.create_connection(("127.0.0.1", server.port)):
        pass
    server.close()


def test_retry_forever():
    clock = FakeClock()
    server = Server([send(b"n%d\n" % i) for i in range(5)], close_after=False)
    reader = open_reader(server.port, max_retry=-1, clock=clock)
    assert drive(reader, clock, stop_after=5) == [f"n{i}" for i in range(5)]
    reader.close()
    server.close()


def test_connection_refused_fails_without_retries():
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:\d+"):
        reader = open_reader(free_port())
        drive(reader)


def test_refused_reconnects_use_up_retries_then_fail():
    clock = FakeClock()
    server = Server([send(b"only\n")])  # closes its listener after one connection
    reader = open_reader(server.port, max_retry=2, clock=clock)
    with pytest.raises(ConnectionError, match="could not connect"):
        drive(reader, clock)
    server.close()


def test_source_contract():
    source = SocketTextSource("localhost", 9999)
    assert source.max_parallelism() == 1 and not source.is_bounded()
    assert not source.produces_arrow()
    with pytest.raises(ValueError):
        source.create_reader(0, 2)
    with pytest.raises(ValueError):
        SocketTextSource("localhost", 0)
    with pytest.raises(ValueError):
        SocketTextSource("localhost", 1, max_retry=-2)
    clone = cloudpickle.loads(cloudpickle.dumps(source))
    assert (clone.hostname, clone.port, clone.delimiter, clone.max_retry) == (
        "localhost",
        9999,
        "\n",
        0,
    )


@pytest.mark.parametrize("delimiter", ["\n", "||", "abc", "日本"])
def test_delimited_text_finds_delimiters_split_anywhere(delimiter):
    text = f"one{delimiter}{delimiter}two\r{delimiter}ab{delimiter}日{delimiter}tail"
    expected = text.split(delimiter)
    rest = expected.pop()
    if delimiter == "\n":
        expected = [r.rstrip("\r") for r in expected]
    # every way of cutting the text into pieces of one, two or three characters
    for size in (1, 2, 3):
        for first in range(size):
            pieces = [text[:first]] + [text[i : i + size] for i in range(first, len(text), size)]
            splitter = DelimitedText(delimiter)
            records = [r for piece in pieces for r in splitter.feed(piece)]
            assert records == expected, (size, first)
            assert splitter.take_rest() == rest
