"""The keyed-state job and its same-run baselines (raw py-lmdb, a dict, the backend alone).

Every variant does the same work: for record ``i`` in ``0 .. N - 1`` take the key
``i * MULT % K`` (a permutation of ``0 .. K - 1`` in every block of K records, so the keys
arrive in a scattered order and every key is read and written ``N / K`` times), read its
count, add one, write it back, and fold the new count into a checksum. With ``N`` a multiple
of ``K`` the checksum must be ``K * f * (f + 1) / 2`` for ``f = N / K``: every variant is
checked exactly, so a wrong count anywhere fails the benchmark.

Why the scattered order: with consecutive integer keys raw LMDB would append to the right
edge of its B+tree (every page touched once, in order), while the engine's storage keys lead
with the key group (a hash), so it would be compared against a best case it cannot have.

Why a module of its own: user functions travel to subtask processes with cloudpickle, which
pickles module-level functions by reference; this module is importable by its plain name in
every subtask (see ``_jobs``).
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import tempfile
import time

import numpy as np

from flowrun.core import KeyedProcessFunction, StreamExecutionEnvironment, Types
from flowrun.core.connectors import NumberSequenceSource
from flowrun.core.connectors.base import Sink, SinkWriter
from flowrun.state import ValueStateDescriptor
from flowrun.state.backends import EmbeddedLmdbStateBackend, HashMapStateBackend
from flowrun.state.key_groups import (
    KeyGroupRange,
    assign_key_groups,
    compute_default_max_parallelism,
)

__all__ = [
    "BACKENDS",
    "BATCH",
    "MULT",
    "backend_alone",
    "dict_baseline",
    "expected_checksum",
    "lmdb_baseline",
    "records_for",
    "state_job",
]

MULT = 2_654_435_761  # prime, so coprime with every K of the form 2^a 5^b used here
BATCH = 4096  # records per write transaction in the baselines (and per backend batch)
MAX_PARALLELISM = compute_default_max_parallelism(1)
BACKENDS = {"lmdb": EmbeddedLmdbStateBackend, "hashmap": HashMapStateBackend}
RAW_LMDB_MAP_SIZE = 1 << 36  # sparse; large enough that the baseline never grows its map


def records_for(keys: int, minimum: int) -> int:
    """N: at least ``2 * keys`` and ``minimum``, and a multiple of ``keys``."""
    per_key = max(2, -(-minimum // keys))
    return keys * per_key


def expected_checksum(keys: int, records: int) -> int:
    f = records // keys
    return keys * f * (f + 1) // 2


def _key_chunks(keys: int, records: int):
    """The key sequence in lists of ``BATCH`` ints (numpy: a few ns per key)."""
    for lo in range(0, records, BATCH):
        idx = np.arange(lo, min(lo + BATCH, records), dtype=np.int64)
        yield (idx * MULT % keys).tolist()


# -- through the engine --------------------------------------------------------------------


def _key_selector(keys: int):
    mult = MULT
    return lambda i: i * mult % keys


class CountPerKey(KeyedProcessFunction):
    """``v = state.value(); state.update((v or 0) + 1)`` per record; emits nothing.

    The checksum and record count are written to ``<out_dir>/count-<pid>.pickle`` at
    ``close`` (one file per subtask), so the run is checked without an output stream.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def open(self, runtime_context) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("n", Types.LONG()))
        self.total = 0

    def process_element(self, value, ctx):
        state = self.state
        v = (state.value() or 0) + 1
        state.update(v)
        self.total += v

    def close(self) -> None:
        path = os.path.join(self.out_dir, f"count-{os.getpid()}.pickle")
        with open(path, "wb") as out:
            pickle.dump({"total": self.total}, out)


class _NullWriter(SinkWriter):
    def write(self, records: list) -> None:
        pass

    def write_batch(self, batch) -> None:
        pass


class NullSink(Sink):
    """Drops everything (the process function emits nothing anyway)."""

    def create_writer(self, subtask_index, parallelism, job_id, operator_uid) -> SinkWriter:
        return _NullWriter()


def state_job(backend: str, keys: int, records: int) -> dict:
    """Run the job at p=1: sequence source -> key_by -> CountPerKey on ``backend``.

    Returns wall seconds of ``env.execute()``, the net runtime and the checksum.
    """
    out_dir = tempfile.mkdtemp(prefix="flowrun-bench-state-")
    try:
        env = StreamExecutionEnvironment.get_execution_environment()
        env.set_parallelism(1)
        env.set_state_backend(BACKENDS[backend]())
        (
            env.from_source(NumberSequenceSource(0, records - 1), None, "seq")
            .key_by(_key_selector(keys))
            .process(CountPerKey(out_dir))
            .sink_to(NullSink())
        )
        start = time.perf_counter()
        result = env.execute(f"bench keyed state {backend} K={keys}")
        seconds = time.perf_counter() - start
        total = 0
        for name in os.listdir(out_dir):
            with open(os.path.join(out_dir, name), "rb") as f:
                total += pickle.load(f)["total"]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {"seconds": seconds, "net_s": result.get_net_runtime() / 1000, "checksum": total}


# -- baselines -----------------------------------------------------------------------------


def dict_baseline(keys: int, records: int) -> dict:
    """The same read-modify-write on a plain dict."""
    state: dict[int, int] = {}
    get = state.get
    total = 0
    start = time.perf_counter()
    for chunk in _key_chunks(keys, records):
        for k in chunk:
            v = (get(k) or 0) + 1
            state[k] = v
            total += v
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "checksum": total}


def open_raw_lmdb(path: str):
    """An environment configured as the backend configures its own (no fsync, writemap)."""
    import lmdb

    return lmdb.open(
        path,
        map_size=RAW_LMDB_MAP_SIZE,
        subdir=True,
        writemap=True,
        metasync=False,
        sync=False,
        map_async=True,
        readahead=False,
        meminit=False,
        max_dbs=1,
        lock=True,
    )


def lmdb_baseline(keys: int, records: int) -> dict:
    """Raw py-lmdb: 8-byte big-endian key, 8-byte value, one write txn per ``BATCH`` records.

    The least any LMDB-backed engine must do per record: encode the key, ``get``, decode,
    encode, ``put``. No map growth (the map is preset), no key group, no state id.
    """
    work = tempfile.mkdtemp(prefix="flowrun-bench-rawlmdb-")
    env = open_raw_lmdb(work)
    pack = struct.Struct(">q").pack
    unpack = struct.Struct(">q").unpack
    total = 0
    try:
        start = time.perf_counter()
        for chunk in _key_chunks(keys, records):
            with env.begin(write=True) as txn:
                get, put = txn.get, txn.put
                for k in chunk:
                    kb = pack(k)
                    data = get(kb)
                    v = 1 if data is None else unpack(data)[0] + 1
                    put(kb, pack(v))
                    total += v
        seconds = time.perf_counter() - start
        size = env.info()["last_pgno"] * env.stat()["psize"]
    finally:
        env.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"seconds": seconds, "checksum": total, "file_bytes": size}


def make_backend(backend: str, work_dir: str, key_group_range: KeyGroupRange | None = None):
    rng = key_group_range or KeyGroupRange.of_operator(MAX_PARALLELISM, 1, 0)
    return BACKENDS[backend]().create_keyed_backend(
        "bench-op", rng, MAX_PARALLELISM, None, work_dir, None
    )


def backend_alone(backend: str, keys: int, records: int) -> dict:
    """The keyed backend with no engine: what the keyed operator does per batch, minus the rest.

    Per batch of ``BATCH`` keys: vectorised key groups, ``begin_batch``, then per record
    ``set_current_key`` + ``value()`` + ``update()``, ``end_batch``.
    """
    work = tempfile.mkdtemp(prefix="flowrun-bench-backend-")
    b = make_backend(backend, work)
    try:
        state = b.get_state(ValueStateDescriptor("n", Types.LONG()))
        set_key, value, update = b.set_current_key, state.value, state.update
        total = 0
        start = time.perf_counter()
        for chunk in _key_chunks(keys, records):
            groups = assign_key_groups(chunk, MAX_PARALLELISM).tolist()
            b.begin_batch()
            for k, g in zip(chunk, groups, strict=True):
                set_key(k, g)
                v = (value() or 0) + 1
                update(v)
                total += v
            b.end_batch()
        seconds = time.perf_counter() - start
    finally:
        b.dispose()
        shutil.rmtree(work, ignore_errors=True)
    return {"seconds": seconds, "checksum": total}
