"""Checkpoints under heavy backpressure: aligned vs unaligned, same run.

A fast source feeds a keyed counter that sleeps per record, so every network buffer between
them is full for the whole run. An aligned barrier has to wait behind all those buffers; an
unaligned one overtakes them (they are stored in the checkpoint instead). Both variants run
alternately (aligned, unaligned, unaligned, aligned) and the durations of every checkpoint
they complete are compared: median and max, and the in-flight bytes the unaligned ones
stored. Checkpoints after the source finished are left out (no barrier flows any more then;
the final checkpoint is taken directly).

``--quick`` runs one short round of each.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile

import pytest
from _backpressure_jobs import backpressured_job
from _scale import is_quick, scaled

pytestmark = [pytest.mark.bench]


def _durations(result) -> list:
    checkpoints = result._outcome.checkpoints
    return checkpoints[:-1] if len(checkpoints) > 1 else checkpoints  # drop the final one


def test_unaligned_vs_aligned_under_backpressure(benchmark, record_property):
    records = scaled(400_000, 20_000)
    rounds = ["aligned", "unaligned"] if is_quick() else ["aligned", "unaligned"] * 2
    if not is_quick():
        rounds = ["aligned", "unaligned", "unaligned", "aligned"]
    found: dict[str, list] = {"aligned": [], "unaligned": []}

    def run_all():
        for mode in rounds:
            chk = tempfile.mkdtemp(prefix="flowrun-bench-unaligned-")
            try:
                result = backpressured_job(records, 20, 200, mode == "unaligned", chk)
                found[mode].extend(_durations(result))
            finally:
                shutil.rmtree(chk, ignore_errors=True)

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    lines = []
    for mode, checkpoints in found.items():
        assert checkpoints, f"no {mode} checkpoint completed"
        durations = [c.duration_ms for c in checkpoints]
        size = statistics.median(c.size for c in checkpoints)
        line = (
            f"{mode}: {len(durations)} checkpoints, median {statistics.median(durations):.0f} ms,"
            f" max {max(durations):.0f} ms, median size {size / 1e6:.2f} MB"
        )
        lines.append(line)
        record_property(mode, line)
        benchmark.extra_info[mode] = line
    ratio = statistics.median(c.duration_ms for c in found["unaligned"]) / statistics.median(
        c.duration_ms for c in found["aligned"]
    )
    benchmark.extra_info["median duration unaligned / aligned"] = round(ratio, 3)
    print("\n" + "\n".join(lines) + f"\nmedian duration unaligned / aligned: {ratio:.2f}")
