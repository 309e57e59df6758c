"""Backpressure: a fast source into a slow sink runs in bounded memory, the source blocked."""

from __future__ import annotations

import json
import time

from flowrun_testing import CliRun, wait_gone

JOB = """
import json, sys, time
from flowrun.core import StreamExecutionEnvironment
from flowrun.core.connectors.base import Sink, SinkWriter

class SlowWriter(SinkWriter):
    def __init__(self, path):
        self.path, self.n, self.size = path, 0, 0
    def open(self): pass
    def write(self, records):
        time.sleep(len(records) * 0.00025)   # ~40 MB/s for 10 KB records
        self.n += len(records)
        self.size += sum(len(r) for r in records)
    def write_batch(self, batch): raise AssertionError("rows expected")
    def flush(self): pass
    def finish(self):
        with open(self.path, "w") as f:
            json.dump({"n": self.n, "size": self.size}, f)
    def abort(self): pass

class SlowSink(Sink):
    def __init__(self, path): self.path = path
    def create_writer(self, subtask_index, parallelism, job_id, operator_uid):
        return SlowWriter(self.path)

out, metrics_path = sys.argv[1], sys.argv[2]
env = StreamExecutionEnvironment.get_execution_environment()
(env.from_sequence(1, 10_000)
    .map(lambda x: str(x).rjust(10_000, "x"))
    .sink_to(SlowSink(out)).disable_chaining())
result = env.execute("backpressure")
with open(metrics_path, "w") as f:
    json.dump({"runtime_ms": result.get_net_runtime(),
               "metrics": result.get_subtask_metrics()}, f)
"""


def test_fast_source_slow_sink_bounded_memory_and_blocked_source(tmp_path):
    job = tmp_path / "bp.py"
    job.write_text(JOB)
    out, metrics = tmp_path / "sink.json", tmp_path / "metrics.json"
    run = CliRun(["run", str(job), "-p", "1", "--", str(out), str(metrics)])
    peak: dict[int, int] = {}
    while run.proc.poll() is None:
        for proc in run.subtask_processes():
            try:
                peak[proc.pid] = max(peak.get(proc.pid, 0), proc.memory_info().rss)
            except Exception:
                pass
        time.sleep(0.02)
    code, _stdout, err = run.wait(60)
    assert code == 0, err
    assert not wait_gone(run.mark)
    written = json.loads(out.read_text())
    assert written == {"n": 10_000, "size": 10_000 * 10_000}  # nothing lost: 100 MB went through
    assert len(peak) == 2, peak
    # 100 MB were produced far faster than the sink drains them; no process may hold them.
    assert max(peak.values()) < 100 * 1024 * 1024, {p: r >> 20 for p, r in peak.items()}
    print("peak RSS MiB", {p: r >> 20 for p, r in peak.items()})
    stats = json.loads(metrics.read_text())
    source = stats["metrics"]["0"]
    # The source spent most of the run blocked waiting for a free buffer.
    assert source["backpressure_waits"] > 10
    assert source["backpressured_ms"] > 0.5 * stats["runtime_ms"], stats
