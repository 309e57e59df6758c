"""Connectors inside real jobs: a socket server on 127.0.0.1, FileSink part files, generators."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter

from flowrun_testing import REPO, run_flowrun

from flowrun.core import StreamExecutionEnvironment, Types
from flowrun.core.connectors import Encoder, FileSink, NumberSequenceSource


def _serve_lines(lines: list[str], delay: float = 0.0) -> tuple[int, threading.Thread]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            for i, line in enumerate(lines):
                conn.sendall((line + "\n").encode())
                if delay and i % 100 == 0:
                    time.sleep(delay)
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def test_socket_text_stream_word_count():
    lines = [f"alpha beta {i % 7}" for i in range(2000)]
    port, thread = _serve_lines(lines, delay=0.01)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    out = list(
        env.socket_text_stream("127.0.0.1", port)
        .flat_map(str.split)
        .map(lambda w: (w, 1))
        .key_by(lambda t: t[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .execute_and_collect()
    )
    thread.join(5)
    final: dict[str, int] = {}
    for word, count in out:
        final[word] = max(final.get(word, 0), count)
    assert final == dict(Counter(w for line in lines for w in line.split()))


def test_file_sink_writes_finished_part_files_per_subtask(tmp_path):
    out_dir = tmp_path / "out"
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(3)
    (
        env.from_source(NumberSequenceSource(1, 30_000), None, "numbers")
        .map(lambda x: f"n={x}", output_type=Types.STRING())
        .sink_to(FileSink.for_row_format(str(out_dir), Encoder.simple_string_encoder()).build())
        .uid("numbers-sink")
    )
    env.execute("file sink")
    files = [os.path.join(d, f) for d, _, fs in os.walk(out_dir) for f in fs]
    assert files and not any(
        ".inprogress" in f or os.path.basename(f).startswith(".") for f in files
    )
    lines = [line for f in files for line in open(f).read().splitlines()]
    assert sorted(lines) == sorted(f"n={x}" for x in range(1, 30_001))
    assert len(files) >= 3  # one part per subtask at least


def test_word_count_example_with_file_sink_output(tmp_path):
    code, out, err = run_flowrun(
        ["run", "examples/word_count.py", "-p", "2", "--", "--output", str(tmp_path / "wc")],
        cwd=REPO,
    )
    assert code == 0, err
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "wc") for f in fs]
    assert len(files) >= 2
    total = sum(len(open(f).read().splitlines()) for f in files)
    assert total > 1000  # every rolling update is written
