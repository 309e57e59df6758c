"""Wall time of ``flowrun run job.py -p 2`` for a 1,000-record job, from the shell's view.

Baselines of the same run, measured interleaved with the job (round by round):
``python -c pass`` (the interpreter) and ``python -c "import pyarrow"`` (the
import every flowrun process needs). The job's figure is reported in seconds
(the target is absolute) and as a multiple of both baselines.

Target: <= 0.5 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import pytest
from _scale import is_quick
from _sinks import read_summaries

pytestmark = pytest.mark.bench

HERE = os.path.dirname(os.path.abspath(__file__))
FLOWRUN = os.path.join(os.path.dirname(sys.executable), "flowrun")
TARGET_S = 0.5


def _wall(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return seconds, done.stdout


def _job(out_dir: str) -> tuple[float, float]:
    """``(wall seconds, the job's net runtime in seconds)``; checks the job's result."""
    job = os.path.join(HERE, "job_startup.py")
    seconds, stdout = _wall([FLOWRUN, "run", job, "-p", "2", "--", out_dir])
    counts: dict = {}
    for summary in read_summaries(out_dir, "last"):
        counts.update(summary["summary"])
    assert counts == {f"k{k}": 100 for k in range(10)}, counts
    net_ms = int(stdout.rsplit("net_runtime_ms=", 1)[1].split()[0])
    return seconds, net_ms / 1000


def test_startup(benchmark, bench_report) -> None:
    rounds = 2 if is_quick() else 7
    walls: dict[str, list[float]] = {"job": [], "net": [], "python": [], "import_pyarrow": []}

    def one_round() -> None:
        walls["python"].append(_wall([sys.executable, "-c", "pass"])[0])
        walls["import_pyarrow"].append(_wall([sys.executable, "-c", "import pyarrow"])[0])
        with tempfile.TemporaryDirectory(prefix="flowrun-bench-") as out:
            wall, net = _job(out)
        walls["job"].append(wall)
        walls["net"].append(net)

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    med = {name: statistics.median(values) for name, values in walls.items()}
    bench_report(
        job_wall_s_median=med["job"],
        job_wall_s_min=min(walls["job"]),
        job_net_runtime_s_median=med["net"],
        python_pass_s_median=med["python"],
        import_pyarrow_s_median=med["import_pyarrow"],
        job_vs_python_pass=med["job"] / med["python"],
        job_vs_import_pyarrow=med["job"] / med["import_pyarrow"],
        target_s=TARGET_S,
        target_met=med["job"] <= TARGET_S,
    )
