"""Bulk-loaded LMDB environments (``lmdb_pages``) are environments LMDB itself accepts: every
row reads back, and later writes, page splits, deletes and merges work on them."""

from __future__ import annotations

import os
import random

import lmdb
import pyarrow as pa
import pytest

from flowrun.core.typeinfo import Types
from flowrun.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor
from flowrun.state.backends import EmbeddedLmdbStateBackend
from flowrun.state.backends.lmdb_pages import Unfit, write_environment
from flowrun.state.key_groups import KeyGroupRange, assign_to_key_group

MAP_SIZE = 1 << 26


def _rows(rng: random.Random, n: int, keys: tuple[int, int], values: tuple[int, int]) -> dict:
    rows: dict[bytes, bytes] = {}
    while len(rows) < n:
        key = rng.randbytes(rng.randint(*keys))
        rows[key] = rng.randbytes(rng.randint(*values))
    return rows


def _write(path: str, databases: dict[bytes, dict]) -> None:
    arrays = {}
    for name, rows in databases.items():
        items = sorted(rows.items())
        arrays[name] = (
            pa.array([k for k, _ in items], pa.binary()),
            pa.array([v for _, v in items], pa.binary()),
        )
    assert write_environment(os.path.join(path, "data.mdb"), arrays, lambda _: MAP_SIZE) == (
        MAP_SIZE
    )


@pytest.mark.parametrize(
    "n, keys, values",
    [
        (0, (1, 5), (0, 5)),
        (1, (1, 5), (0, 5)),
        (5_000, (15, 15), (8, 8)),  # fixed widths: the reshaped fast path
        (20_000, (1, 200), (0, 400)),  # variable widths, several branch levels
        (2_000, (400, 511), (500, 1500)),  # large nodes: few per page, deep tree
    ],
)
def test_lmdb_reads_and_writes_a_bulk_loaded_environment(tmp_path, n, keys, values):
    rng = random.Random(n)
    rows = _rows(rng, n, keys, values)
    meta = {b"\x00format": b"x", b"state:a": b"{}"}
    _write(str(tmp_path), {b"state": rows, b"meta": meta})
    env = lmdb.open(str(tmp_path), map_size=MAP_SIZE, max_dbs=2, writemap=True)
    try:
        state = env.open_db(b"state", create=False)
        meta_db = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            assert list(txn.cursor(db=state)) == sorted(rows.items())
            assert list(txn.cursor(db=meta_db)) == sorted(meta.items())
            assert txn.stat(state)["entries"] == n
        model = dict(rows)
        present = sorted(rows)
        for _ in range(4):
            with env.begin(write=True, db=state) as txn:
                for _ in range(rng.randint(1, 2_000)):
                    if present and rng.random() < 0.4:
                        key = present.pop(rng.randrange(len(present)))
                        txn.delete(key)
                        model.pop(key, None)
                    else:
                        key, value = rng.randbytes(rng.randint(*keys)), rng.randbytes(8)
                        txn.put(key, value)
                        model[key] = value
        with env.begin(db=state) as txn:
            assert list(txn.cursor()) == sorted(model.items())
            assert txn.stat(state)["entries"] == len(model)
    finally:
        env.close()


def test_a_row_that_needs_overflow_pages_is_refused(tmp_path):
    with pytest.raises(Unfit):
        _write(str(tmp_path), {b"state": {b"k": b"v" * 3000}})


def test_restore_into_lmdb_bulk_loads_every_state_kind_and_keeps_working(tmp_path):
    def backend(name: str, key_groups: KeyGroupRange):
        return EmbeddedLmdbStateBackend().create_keyed_backend(
            "op", key_groups, 128, Types.STRING(), str(tmp_path / name)
        )

    def states(b):
        return (
            b.get_state(ValueStateDescriptor("v", Types.LONG())),
            b.get_list_state(ListStateDescriptor("l", Types.STRING())),
            b.get_map_state(MapStateDescriptor("m", Types.STRING(), Types.LONG())),
        )

    source = backend("source", KeyGroupRange(0, 127))
    value, items, entries = states(source)
    keys = [f"k{i}" for i in range(3_000)]
    source.begin_batch()
    for i, key in enumerate(keys):
        source.set_current_key(key)
        value.update(i)
        items.add_all([f"x{i}", "y"])
        entries.put_all({"a": i, "b": -i})
    source.end_batch()
    streams = source.snapshot_async().result()
    source.dispose()
    own = KeyGroupRange(40, 100)
    restored = backend("restored", own)
    restored.restore(streams)
    assert not os.path.exists(os.path.join(restored.directory, "data.mdb.bulk"))
    value, items, entries = states(restored)
    mine = [
        (i, k) for i, k in enumerate(keys) if own.start <= assign_to_key_group(k, 128) <= own.end
    ]
    restored.begin_batch()
    for i, key in mine:
        restored.set_current_key(key)
        assert (value.value(), items.get(), dict(entries.items())) == (
            i,
            [f"x{i}", "y"],
            {"a": i, "b": -i},
        )
        value.update(i + 1)
        items.add("z")
    restored.end_batch()
    for i, key in mine:
        restored.set_current_key(key)
        assert value.value() == i + 1 and items.get() == [f"x{i}", "y", "z"]
    assert restored.entry_count("v") == len(mine)
    restored.dispose()


def test_int_keyed_states_restore_from_the_snapshot_columns_without_inserts(tmp_path, monkeypatch):
    """Int keys and fixed-width values, suffixes and map keys: the pages are composed from the
    snapshot columns (several states interleaved by key group), never inserted row by row."""
    from flowrun.state.backends.lmdb import LmdbKeyedStateBackend

    def backend(name: str, key_groups: KeyGroupRange):
        return EmbeddedLmdbStateBackend().create_keyed_backend(
            "op", key_groups, 128, Types.LONG(), str(tmp_path / name)
        )

    def states(b):
        return (
            b.get_state(ValueStateDescriptor("v", Types.LONG())),
            b.get_list_state(ListStateDescriptor("l", Types.LONG())),
            b.get_map_state(MapStateDescriptor("m", Types.LONG(), Types.LONG())),
        )

    source = backend("source", KeyGroupRange(0, 127))
    value, items, entries = states(source)
    keys = list(range(-1_500, 150_000, 7))
    source.begin_batch()
    for key in keys:
        source.set_current_key(key)
        value.update(key * 3)
        items.add_all([key, 1])
        entries.put_all({1: key, 2: -key})
    source.end_batch()
    streams = source.snapshot_async().result()
    source.dispose()

    def no_inserts(*args, **kwargs):
        raise AssertionError("rows were inserted one by one, not bulk loaded")

    monkeypatch.setattr(LmdbKeyedStateBackend, "_put_many", no_inserts)
    own = KeyGroupRange(20, 110)
    restored = backend("restored", own)
    restored.restore(streams)
    monkeypatch.undo()
    value, items, entries = states(restored)
    mine = [k for k in keys if own.start <= assign_to_key_group(k, 128) <= own.end]
    assert sorted(restored.keys("v")) == mine
    restored.begin_batch()
    for key in mine:
        restored.set_current_key(key)
        assert (value.value(), items.get(), dict(entries.items())) == (
            key * 3,
            [key, 1],
            {1: key, 2: -key},
        )
        items.add(2)
        entries.remove(1)
    restored.end_batch()
    for key in mine[::5]:
        restored.set_current_key(key)
        assert items.get() == [key, 1, 2] and dict(entries.items()) == {2: -key}
    restored.dispose()


def test_rows_out_of_key_order_are_inserted_instead(tmp_path):
    """A snapshot of the heap backend is in dict order within a key group: LMDB restores it by
    inserting (the bulk loader refuses rows that are not strictly ascending)."""
    from flowrun.state.backends import HashMapStateBackend

    heap = HashMapStateBackend().create_keyed_backend(
        "op", KeyGroupRange(0, 127), 128, Types.LONG(), None
    )
    state = heap.get_state(ValueStateDescriptor("v", Types.LONG()))
    keys = [(i * 7919) % 20_011 for i in range(20_011)]  # every key once, scrambled
    for key in keys:
        heap.set_current_key(key)
        state.update(key + 1)
    streams = heap.snapshot_async().result()
    heap.dispose()
    restored = EmbeddedLmdbStateBackend().create_keyed_backend(
        "op", KeyGroupRange(0, 127), 128, Types.LONG(), str(tmp_path / "r")
    )
    restored.restore(streams)
    state = restored.get_state(ValueStateDescriptor("v", Types.LONG()))
    assert sorted(restored.keys("v")) == sorted(keys)
    for key in keys[::13]:
        restored.set_current_key(key)
        assert state.value() == key + 1
    restored.dispose()
