"""Keyed ValueState read-modify-write per second, through the engine and without it.

**Throughput** (``test_keyed_state_throughput``), at K = 10^4, 10^6 and 10^7 distinct keys
(``N = max(2K, 10^6)`` records, rounded to a multiple of K; both scale with
``FLOWRUN_BENCH_SCALE``). Every round runs, seconds apart (``_state_jobs`` has the details):

* ``raw_lmdb``: py-lmdb, 8-byte key and value, one write transaction per 4,096 records,
  configured as the backend configures its environment (writemap, no fsync);
* ``dict``: the same loop on a Python dict;
* ``alone_lmdb`` / ``alone_hashmap``: the keyed backend driven directly as the keyed operator
  drives it (vectorised key groups, ``begin_batch``, ``set_current_key`` + ``value()`` +
  ``update()`` per record, ``end_batch``), with no engine around it;
* ``engine_lmdb`` / ``engine_hashmap``: a real job at p=1 (sequence source -> key_by ->
  KeyedProcessFunction doing ``value()`` + ``update()`` -> no-op sink), ``env.execute()`` in
  this process, one process per subtask; wall time of ``execute()``.

Every variant's checksum of the counts is checked exactly. Ratios are medians of per-round
ratios. Target: ``engine_lmdb`` >= 50% of ``raw_lmdb``.

**Snapshot / restore** (``test_snapshot_restore``): a backend holding 10^6 keys (backend
level, no engine) snapshots its key-group range to Arrow IPC streams and a fresh backend
restores them (up to the state's declaration, where the heap backend decodes restored
rows); MB/s (of the streams) and keys/s, against a raw LMDB cursor scan and a raw
``putmulti`` load of the same number of 8-byte pairs in the same round.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time

import pytest
from _cpu import ChildCpuMonitor
from _scale import is_quick, scaled
from _state_jobs import (
    MAX_PARALLELISM,
    backend_alone,
    dict_baseline,
    expected_checksum,
    lmdb_baseline,
    make_backend,
    open_raw_lmdb,
    records_for,
    state_job,
)

from flowrun.core import Types
from flowrun.state import ValueStateDescriptor
from flowrun.state.key_groups import KeyGroupRange, assign_key_groups

pytestmark = [pytest.mark.bench, pytest.mark.timeout(7200)]

KEYS = {"1e4": 10_000, "1e6": 1_000_000, "1e7": 10_000_000}
MIN_RECORDS = 1_000_000
TARGET = 0.5  # engine_lmdb vs raw_lmdb
VARIANTS = ["raw_lmdb", "dict", "alone_lmdb", "alone_hashmap", "engine_lmdb", "engine_hashmap"]
RATIOS = {
    "engine_lmdb_vs_raw_lmdb": ("engine_lmdb", "raw_lmdb"),
    "alone_lmdb_vs_raw_lmdb": ("alone_lmdb", "raw_lmdb"),
    "engine_lmdb_vs_alone_lmdb": ("engine_lmdb", "alone_lmdb"),
    "engine_hashmap_vs_dict": ("engine_hashmap", "dict"),
    "alone_hashmap_vs_dict": ("alone_hashmap", "dict"),
    "engine_hashmap_vs_alone_hashmap": ("engine_hashmap", "alone_hashmap"),
    "engine_lmdb_vs_engine_hashmap": ("engine_lmdb", "engine_hashmap"),
    "raw_lmdb_vs_dict": ("raw_lmdb", "dict"),
}


def _rounds(keys: int) -> int:
    if is_quick():
        return 1
    return 1 if keys >= 10_000_000 else 3


@pytest.fixture(scope="module")
def warm_engine() -> None:
    """One tiny job first, so that no measured run pays for starting the fork server."""
    state_job("hashmap", 10, 100)


@pytest.mark.parametrize("size", list(KEYS))
def test_keyed_state_throughput(benchmark, bench_report, warm_engine, size) -> None:
    keys = scaled(KEYS[size], minimum=100)
    records = records_for(keys, scaled(MIN_RECORDS, minimum=1_000))
    expected = expected_checksum(keys, records)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {"engine_lmdb": [], "engine_hashmap": []}
    raw_file: list[int] = []

    def run(variant: str) -> None:
        if variant == "raw_lmdb":
            result = lmdb_baseline(keys, records)
            raw_file.append(result["file_bytes"])
        elif variant == "dict":
            result = dict_baseline(keys, records)
        elif variant.startswith("alone_"):
            result = backend_alone(variant[6:], keys, records)
        else:
            with ChildCpuMonitor() as monitor:
                result = state_job(variant[7:], keys, records)
            cpu[variant].append(monitor.cpu_seconds)
        assert result["checksum"] == expected, f"{variant}: wrong counts"
        seconds[variant].append(result["seconds"])

    def one_round() -> None:
        for variant in VARIANTS:
            run(variant)

    benchmark.pedantic(one_round, rounds=_rounds(keys), iterations=1)
    rate = {v: [records / s for s in seconds[v]] for v in VARIANTS}
    figures: dict = {"keys": keys, "records": records, "rounds": len(seconds["dict"])}
    for v in VARIANTS:
        figures[f"{v}_records_per_s"] = statistics.median(rate[v])
    for name, (a, b) in RATIOS.items():
        figures[name] = statistics.median(x / y for x, y in zip(rate[a], rate[b], strict=True))
    for v, values in cpu.items():
        figures[f"{v}_cpu_s"] = statistics.median(values)
        figures[f"{v}_wall_s"] = statistics.median(seconds[v])
    figures["raw_lmdb_file_mb"] = raw_file[-1] / 1e6
    figures["engine_lmdb_vs_raw_lmdb_all_rounds"] = [
        round(x / y, 3) for x, y in zip(rate["engine_lmdb"], rate["raw_lmdb"], strict=True)
    ]
    figures["target"] = TARGET
    figures["target_met"] = figures["engine_lmdb_vs_raw_lmdb"] >= TARGET
    bench_report(**figures)


# -- snapshot / restore ----------------------------------------------------------------------


def _fill(backend, keys: int) -> None:
    state = backend.get_state(ValueStateDescriptor("n", Types.LONG()))
    for lo in range(0, keys, 4096):
        chunk = list(range(lo, min(lo + 4096, keys)))
        groups = assign_key_groups(chunk, MAX_PARALLELISM).tolist()
        backend.begin_batch()
        for k, g in zip(chunk, groups, strict=True):
            backend.set_current_key(k, g)
            state.update(k * 7)
        backend.end_batch()


def _check_restored(backend, keys: int) -> None:
    state = backend.get_state(ValueStateDescriptor("n", Types.LONG()))
    sample = list(range(0, keys, max(1, keys // 1000)))
    groups = assign_key_groups(sample, MAX_PARALLELISM).tolist()
    backend.begin_batch()
    for k, g in zip(sample, groups, strict=True):
        backend.set_current_key(k, g)
        assert state.value() == k * 7, k
    backend.end_batch()
    assert sum(1 for _ in backend.keys("n")) == keys


def _raw_lmdb_scan_and_load(keys: int) -> dict:
    """Baselines: load ``keys`` 8-byte pairs with putmulti (64k per txn), then scan them all."""
    work = tempfile.mkdtemp(prefix="flowrun-bench-rawlmdb-")
    env = open_raw_lmdb(work)
    pairs = [(k.to_bytes(8, "big"), (k * 7).to_bytes(8, "big")) for k in range(keys)]
    try:
        start = time.perf_counter()
        for lo in range(0, keys, 1 << 16):
            with env.begin(write=True) as txn, txn.cursor() as cursor:
                cursor.putmulti(pairs[lo : lo + (1 << 16)])
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        got_keys, got_values = [], []
        with env.begin() as txn, txn.cursor() as cursor:
            add_key, add_value = got_keys.append, got_values.append
            for key, value in cursor.iternext():
                add_key(key)
                add_value(value)
        scan_s = time.perf_counter() - start
        assert len(got_keys) == keys
    finally:
        env.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"load_s": load_s, "scan_s": scan_s, "bytes": keys * 16}


@pytest.mark.parametrize("backend", ["lmdb", "hashmap"])
def test_snapshot_restore(benchmark, bench_report, backend) -> None:
    keys = scaled(1_000_000, minimum=1_000)
    full = KeyGroupRange.of_operator(MAX_PARALLELISM, 1, 0)
    work = tempfile.mkdtemp(prefix="flowrun-bench-snap-")
    source = make_backend(backend, work + "/a")
    _fill(source, keys)
    snap_s: list[float] = []
    restore_s: list[float] = []
    raw: list[dict] = []
    sizes: list[int] = []

    def one_round() -> None:
        start = time.perf_counter()
        streams = source.snapshot(full)
        snap_s.append(time.perf_counter() - start)
        sizes.append(sum(s.size for s in streams))
        target = make_backend(backend, f"{work}/b{len(snap_s)}")
        try:
            start = time.perf_counter()
            target.restore(streams)
            # the operator's open() declares the state: the heap backend decodes the restored
            # rows only then, so the restore is timed up to there on both backends
            target.get_state(ValueStateDescriptor("n", Types.LONG()))
            restore_s.append(time.perf_counter() - start)
            _check_restored(target, keys)
        finally:
            target.dispose()
        del streams
        raw.append(_raw_lmdb_scan_and_load(keys))

    try:
        benchmark.pedantic(one_round, rounds=1 if is_quick() else 3, iterations=1)
    finally:
        source.dispose()
        shutil.rmtree(work, ignore_errors=True)
    mb = sizes[-1] / 1e6
    figures = {
        "keys": keys,
        "snapshot_mb": mb,
        "snapshot_s": statistics.median(snap_s),
        "snapshot_mb_per_s": statistics.median(mb / s for s in snap_s),
        "snapshot_keys_per_s": statistics.median(keys / s for s in snap_s),
        "restore_s": statistics.median(restore_s),
        "restore_mb_per_s": statistics.median(mb / s for s in restore_s),
        "restore_keys_per_s": statistics.median(keys / s for s in restore_s),
        "raw_lmdb_scan_keys_per_s": statistics.median(keys / r["scan_s"] for r in raw),
        "raw_lmdb_load_keys_per_s": statistics.median(keys / r["load_s"] for r in raw),
        "snapshot_vs_raw_lmdb_scan": statistics.median(
            r["scan_s"] / s for r, s in zip(raw, snap_s, strict=True)
        ),
        "restore_vs_raw_lmdb_load": statistics.median(
            r["load_s"] / s for r, s in zip(raw, restore_s, strict=True)
        ),
    }
    bench_report(**figures)
