"""A short run of every benchmark in bench/, so CI notices a benchmark that broke.

The full runs are on demand (``pytest --benchmark-only bench/``); ``--quick`` shrinks every
input (FLOWRUN_BENCH_SCALE=0.01) and the benchmarks still check their results exactly.
The checkpointing benchmarks have a test of their own, which also checks the figures they
report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from flowrun_testing import REPO

CHECKPOINTING = "bench/bench_checkpointing.py"


def _run_quick(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--benchmark-only",
            *args,
            "--quick",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-storage={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "FLOWRUN_BENCH_CACHE": str(tmp_path / "cache"),
            "FLOWRUN_BENCH_REPORT": str(tmp_path / "report.json"),
        },
    )


def test_benchmarks_run_in_quick_mode(tmp_path):
    proc = _run_quick(tmp_path, "bench/", f"--ignore={CHECKPOINTING}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_checkpointing_benchmarks_run_in_quick_mode_and_report_their_figures(tmp_path):
    proc = _run_quick(tmp_path, CHECKPOINTING)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "report.json") as f:
        report = json.load(f)
    assert report["scale"] == 0.01
    results = report["results"]
    sizes = ["1e4", "1e5", "1e6", "1e7"]
    assert set(results) == {
        "test_checkpointing_throughput",
        *(
            f"test_checkpoint_duration_and_size[{b}-{s}]"
            for b in ("lmdb", "hashmap")
            for s in sizes
        ),
        "test_recovery_time[lmdb]",
        "test_recovery_time[hashmap]",
        "test_rescale_restore",
    }

    throughput = results["test_checkpointing_throughput"]
    assert (throughput["keys"], throughput["records"], throughput["rounds"]) == (10_000, 40_000, 1)
    for mode in ("aligned", "unaligned"):
        assert throughput[f"{mode}_final_count"] == 1  # a checkpointed bounded run ends with one
        assert throughput[f"{mode}_vs_off"] > 0

    for backend in ("lmdb", "hashmap"):
        rows = [results[f"test_checkpoint_duration_and_size[{backend}-{s}]"] for s in sizes]
        assert [r["keys"] for r in rows] == [100, 1_000, 10_000, 100_000]
        assert all(len(r["checkpoint_ids"]) == 2 for r in rows)  # the quick mode holds two
        size_mb = [r["size_mb"] for r in rows]
        assert size_mb == sorted(size_mb) and size_mb[-1] > 10 * size_mb[1]
        # one key group, 8-byte key and 8-byte value per row, plus Arrow framing
        assert 16 < rows[-1]["bytes_per_key"] < 64

        recovery = results[f"test_recovery_time[{backend}]"]
        assert recovery["rounds"] == 1 and recovery["checkpoints"] >= 1
        assert 0 < recovery["failed_ms"] <= recovery["deployed_ms"]
        assert recovery["failed_ms"] < recovery["first_record_ms"]

    restore = results["test_rescale_restore"]
    assert restore["keys"] == 100_000 and restore["keyed_files"] == 2
    assert restore["filled_here"] is True  # a savepoint-format checkpoint of its own
    for name in ("lmdb_p3", "lmdb_p1", "hashmap_p3", "hashmap_p1"):
        assert restore[f"{name}_mb_per_s"] > 0
        assert restore[f"{name}_restore_s"] >= restore[f"{name}_slowest_subtask_s"]
