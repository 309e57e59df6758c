"""Benchmark plumbing: the ``--quick`` smoke mode, the ``bench`` marker, a results table.

Why a results table of our own: pytest-benchmark reports the wall time of the
benchmarked callable, but every figure that matters here is a ratio against a
baseline measured in the same run (the machine is shared and noisy), and the
ratios are computed inside the tests. :func:`bench_report` stores them in the
benchmark's ``extra_info`` (so ``--benchmark-json`` carries them), prints them
at the end of the session and writes them to ``FLOWRUN_BENCH_REPORT``
(default: ``bench-report.json`` in the bench cache directory).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_RESULTS: list[tuple[str, dict]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick",
        action="store_true",
        help="smoke mode: FLOWRUN_BENCH_SCALE=0.01 unless it is set",
    )


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` too (``python_files`` is ``test_*.py``, set for ``tests/``).

    A file named on the command line is collected by pytest's own hook already.
    """
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench: a flowrun benchmark (bench/, not part of tests)")
    if config.getoption("--quick", default=False):
        os.environ.setdefault("FLOWRUN_BENCH_SCALE", "0.01")


@pytest.fixture
def bench_report(request: pytest.FixtureRequest, benchmark):
    """``bench_report(**figures)``: record this test's ratios and measurements."""

    def record(**figures) -> None:
        benchmark.extra_info.update(figures)
        _RESULTS.append((request.node.name, dict(figures)))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _RESULTS:
        return
    from _scale import cache_dir, scale

    terminalreporter.section(f"flowrun benchmark figures (FLOWRUN_BENCH_SCALE={scale():g})")
    for name, figures in _RESULTS:
        terminalreporter.write_line(name)
        for key, value in figures.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            terminalreporter.write_line(f"    {key:<40} {shown}")
    path = os.environ.get("FLOWRUN_BENCH_REPORT") or os.path.join(cache_dir(), "bench-report.json")
    with open(path, "w") as out:
        json.dump({"scale": scale(), "results": dict(_RESULTS)}, out, indent=1, sort_keys=True)
    terminalreporter.write_line(f"written to {path}")
