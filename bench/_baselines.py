"""Single-process word counts that the engine is measured against.

Why these two: the dict loop is what a Python programmer writes without an
engine (the engine's rows API runs the same interpreter per record, plus
serialisation and a network hop, so it can only approach it with
parallelism); the single-thread pyarrow ``group_by`` is what the Arrow API
could reach with no engine overhead at all on one core.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["dict_loop_count", "pyarrow_count"]


def dict_loop_count(path: str) -> tuple[float, dict[str, int]]:
    """``(seconds, counts)`` of the plain loop over the file's lines."""
    start = time.perf_counter()
    counts: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            for word in line.split():
                counts[word] = counts.get(word, 0) + 1
    return time.perf_counter() - start, counts


def pyarrow_count(path: str) -> tuple[float, dict[str, int]]:
    """``(seconds, counts)``: read, split and ``group_by(...).aggregate`` on one thread.

    Only the timed part is the count; turning the result into a dict for the
    exactness check happens after the clock stops. Splitting the whole file at
    once yields one empty string after the final newline; it is dropped there.
    """
    start = time.perf_counter()
    with open(path, "rb") as f:
        data = f.read()
    text = pa.array([data], type=pa.large_binary()).cast(pa.large_string())
    words = pc.list_flatten(pc.utf8_split_whitespace(text))
    table = pa.table({"word": words})
    counted = table.group_by("word", use_threads=False).aggregate([([], "count_all")])
    seconds = time.perf_counter() - start
    counts = dict(
        zip(counted.column("word").to_pylist(), counted.column(1).to_pylist(), strict=True)
    )
    counts.pop("", None)
    return seconds, counts


def _pipe_receiver(read_fd: int, count: int, result) -> None:
    import os as _os

    latencies = []
    with _os.fdopen(read_fd, "rb", buffering=0) as pipe:
        for _ in range(count):
            stamp = pipe.read(8)
            latencies.append(time.time_ns() - int.from_bytes(stamp, "little"))
    result.send(latencies)


def pipe_hop_latencies(rate: int, count: int) -> list[int]:
    """One-way latencies (ns) of ``count`` timestamps written to a pipe at ``rate`` per second.

    Why this baseline: it is the floor for any engine whose records cross a
    process boundary -- one ``write``, one wake-up of a blocked reader -- on
    this machine at this moment, so the engine's latency is reported as a
    multiple of it as well as in milliseconds.
    """
    import multiprocessing as mp
    import os

    ctx = mp.get_context("fork")
    read_fd, write_fd = os.pipe()
    result_r, result_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_pipe_receiver, args=(read_fd, count, result_w), daemon=True)
    proc.start()
    os.close(read_fd)
    interval = 1.0 / rate
    due = time.monotonic()
    for _ in range(count):
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        os.write(write_fd, time.time_ns().to_bytes(8, "little"))
        due += interval
    latencies = result_r.recv()
    os.close(write_fd)
    proc.join(10)
    return latencies
