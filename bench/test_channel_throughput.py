"""Throughput of one flowrun channel between two processes, per batch and segment size.

Every round measures, back to back on the same noisy machine, the two
baselines and the channel at each candidate ``taskmanager.memory.segment-size``;
figures are medians over the rounds, and every channel figure is reported as a
ratio to the baselines of the same run:

* ``vs_queue``: the same batches pickled through a ``multiprocessing.Queue``
  between two processes (what one would write without flowrun);
* ``vs_memcpy``: one ``numpy`` copy of the batch's bytes into a preallocated
  buffer, in one process (an upper bound: the channel copies the data once,
  into shared memory, and the receiver reads it in place).

Targets: >= 10x the Queue at 64 KiB batches, >= 50% of memcpy at 1 MiB.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import pytest
from _channel import batch_bytes, make_batch, run_channel, run_memcpy, run_memcpy_ring, run_queue
from _scale import is_quick, scaled

from flowrun.core import config as cfg

pytestmark = pytest.mark.bench

KIB = 1024
SEGMENTS_KIB = (32, 64, 256, 1024)
#: bytes moved per channel measurement (the Queue moves a quarter: it is ~10x slower)
VOLUME = 1 << 30


def _rounds() -> int:
    return 1 if is_quick() else 3


@pytest.mark.parametrize("batch_kib", [64, 256, 1024])
def test_channel_throughput(benchmark, bench_report, batch_kib: int) -> None:
    batch = make_batch(batch_kib * KIB)
    size = batch_bytes(batch)
    count = max(8, scaled(VOLUME) // size)
    queue_count = max(8, count // 4)
    pool_bytes = cfg.Configuration().get(cfg.MAX_BUFFERS_PER_CHANNEL) * max(SEGMENTS_KIB) * KIB
    seconds: dict[str, list[float]] = defaultdict(list)

    def one_round() -> None:
        seconds["memcpy"].append(run_memcpy(batch, count) / count)
        seconds["memcpy_ring"].append(run_memcpy_ring(batch, count, pool_bytes) / count)
        seconds["queue"].append(run_queue(batch, queue_count) / queue_count)
        for seg in SEGMENTS_KIB:
            seconds[f"channel_{seg}k"].append(run_channel(batch, count, seg * KIB) / count)

    benchmark.pedantic(one_round, rounds=_rounds(), iterations=1)
    mb_s = {name: size / statistics.median(s) / 1e6 for name, s in seconds.items()}
    figures: dict = {"batch_bytes": size, "batches_per_run": count}
    figures.update({f"{name}_MB_s": round(rate) for name, rate in mb_s.items()})
    for seg in SEGMENTS_KIB:
        rate = mb_s[f"channel_{seg}k"]
        figures[f"channel_{seg}k_vs_queue"] = rate / mb_s["queue"]
        figures[f"channel_{seg}k_vs_memcpy"] = rate / mb_s["memcpy"]
    best = max(SEGMENTS_KIB, key=lambda seg: mb_s[f"channel_{seg}k"])
    default_kib = cfg.Configuration().get(cfg.SEGMENT_SIZE) // KIB
    figures["best_segment_kib"] = best
    figures["default_segment_kib"] = default_kib
    figures["default_vs_queue"] = figures[f"channel_{default_kib}k_vs_queue"]
    figures["default_vs_memcpy"] = figures[f"channel_{default_kib}k_vs_memcpy"]
    bench_report(**figures)
