"""Zero-copy Arrow input: an operator that keeps batches must never see recycled memory."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from flowrun.core import StreamExecutionEnvironment
from flowrun.core.connectors.base import Sink, SinkWriter


class _KeepAll(SinkWriter):
    """Keeps every batch it receives (zero-copy views) and checks them all at the end."""

    def __init__(self, path):
        self.path, self.kept = path, []

    def open(self):
        pass

    def write(self, records):
        raise AssertionError("Arrow input expected")

    def write_batch(self, batch):
        self.kept.append(batch)

    def flush(self):
        pass

    def finish(self):
        values = pa.concat_arrays([b.column("v") for b in self.kept]).to_pylist()
        with open(self.path, "a") as f:
            f.write(f"{len(values)} {sum(values)} {len(set(values))}\n")

    def abort(self):
        pass


class _KeepAllSink(Sink):
    def __init__(self, path):
        self.path = path

    def create_writer(self, subtask_index, parallelism, job_id, operator_uid):
        return _KeepAll(self.path)


def test_kept_arrow_batches_stay_intact(tmp_path):
    n = 1_500_000
    (tmp_path / "in.txt").write_text("".join(f"{i}\n" for i in range(n)))
    out = tmp_path / "out.txt"
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    env.get_configuration().set("taskmanager.memory.segment-size", "64kb")

    def parse(batch):
        return pa.record_batch([pc.cast(batch.column("line"), pa.int64())], names=["v"])

    (
        env.read_text_file(str(tmp_path / "in.txt"), as_arrow=True)
        .map_batches(parse)
        .rebalance()
        .sink_to(_KeepAllSink(str(out)))
    )
    env.execute()
    rows = [tuple(map(int, line.split())) for line in out.read_text().splitlines()]
    assert sum(r[0] for r in rows) == n
    assert sum(r[1] for r in rows) == n * (n - 1) // 2
    assert sum(r[2] for r in rows) == n  # every value once: nothing overwritten
