"""A short run of every benchmark in bench/, so CI notices a benchmark that broke.

The full runs are on demand (``pytest --benchmark-only bench/``); ``--quick`` shrinks every
input (FLOWRUN_BENCH_SCALE=0.01) and the benchmarks still check their results exactly.
"""

from __future__ import annotations

import subprocess
import sys

from flowrun_testing import REPO


def test_benchmarks_run_in_quick_mode(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--benchmark-only",
            "bench/",
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
        env={**__import__("os").environ, "FLOWRUN_BENCH_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
