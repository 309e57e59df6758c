"""Sinks for benchmarks: they keep only what the check needs and write it to a file.

Why not ``print()`` or ``execute_and_collect()``: both would measure the sink
(formatting, the collect channel back into the client) rather than the engine.
These writers drop records after folding them into a tiny summary, and every
subtask writes that summary to ``<out_dir>/<kind>-<subtask>.pickle`` at
``finish``, so that results can still be checked for exactness.
"""

from __future__ import annotations

import glob
import os
import pickle
import time
from typing import Any

import pyarrow as pa

from flowrun.core.connectors.base import Sink, SinkWriter

__all__ = ["LastValueSink", "LatencySink", "read_summaries"]


class _SummaryWriter(SinkWriter):
    kind = "summary"

    def __init__(self, out_dir: str, subtask_index: int) -> None:
        self.out_dir = out_dir
        self.subtask_index = subtask_index
        self.records = 0

    def summary(self) -> Any:
        raise NotImplementedError

    def finish(self) -> None:
        path = os.path.join(self.out_dir, f"{self.kind}-{self.subtask_index}.pickle")
        with open(path + ".tmp", "wb") as out:
            pickle.dump({"records": self.records, "summary": self.summary()}, out)
        os.replace(path + ".tmp", path)


class _LastValueWriter(_SummaryWriter):
    """Keeps the final value per key of a rolling aggregate whose values only grow.

    Rows are folded into a dict as they come (``dict.update`` is one C call per
    list). Arrow batches are only kept -- converting every output batch to
    Python objects would make this sink the slowest operator of the job -- and
    reduced once at ``finish`` with ``group_by(key).max(value)``: for a running
    count or a sum of positive values the maximum is the last value.
    """

    kind = "last"

    def __init__(self, out_dir: str, subtask_index: int, key: str, value: str) -> None:
        super().__init__(out_dir, subtask_index)
        self.key = key
        self.value = value
        self.last: dict = {}
        self.batches: list[pa.RecordBatch] = []

    def write(self, records: list[Any]) -> None:
        self.records += len(records)
        self.last.update(records)  # (key, value) pairs; later ones win

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.records += batch.num_rows
        self.batches.append(batch.select([self.key, self.value]))

    def summary(self) -> dict:
        if self.batches:
            table = pa.Table.from_batches(self.batches)
            final = table.group_by(self.key, use_threads=False).aggregate([(self.value, "max")])
            keys = final.column(self.key).to_pylist()
            self.last.update(zip(keys, final.column(1).to_pylist(), strict=True))
            self.batches = []
        return self.last


class LastValueSink(Sink):
    """Rows ``(key, value)`` or Arrow batches with columns ``key`` and ``value``."""

    def __init__(self, out_dir: str, key: str = "word", value: str = "count") -> None:
        self.out_dir = out_dir
        self.key = key
        self.value = value

    def create_writer(self, subtask_index, parallelism, job_id, operator_uid) -> SinkWriter:
        return _LastValueWriter(self.out_dir, subtask_index, self.key, self.value)


class _LatencyWriter(_SummaryWriter):
    """Records ``now - created`` (ns) of every record ``(key, created_ns, ...)``."""

    kind = "latency"

    def __init__(self, out_dir: str, subtask_index: int) -> None:
        super().__init__(out_dir, subtask_index)
        self.latencies: list[int] = []

    def write(self, records: list[Any]) -> None:
        now = time.time_ns()
        self.records += len(records)
        self.latencies.extend(now - r[1] for r in records)

    def summary(self) -> list[int]:
        return self.latencies


class LatencySink(Sink):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def create_writer(self, subtask_index, parallelism, job_id, operator_uid) -> SinkWriter:
        return _LatencyWriter(self.out_dir, subtask_index)


def read_summaries(out_dir: str, kind: str) -> list[dict]:
    """The summaries every subtask wrote, in subtask order."""
    paths = sorted(glob.glob(os.path.join(out_dir, f"{kind}-*.pickle")))
    result = []
    for path in paths:
        with open(path, "rb") as f:
            result.append(pickle.load(f))
    return result
