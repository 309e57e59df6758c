"""Keyed state backends: every state kind on both backends, with exact expected values.

Subtasks are simulated the way the runtime runs them: one backend per
``KeyGroupRange.of_operator(max_p, p, i)``, each key routed to the backend owning its key
group. LMDB backends work on real environments under ``tmp_path``. TTL tests use an injected
clock.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import lmdb
import numpy as np
import pytest

from flowrun.core.functions import AggregateFunction
from flowrun.core.typeinfo import Types
from flowrun.state import (
    AggregatingState,
    AggregatingStateDescriptor,
    IncompatibleStateError,
    ListState,
    ListStateDescriptor,
    MapState,
    MapStateDescriptor,
    ReducingState,
    ReducingStateDescriptor,
    StateTtlConfig,
    StateTypeError,
    Time,
    ValueState,
    ValueStateDescriptor,
)
from flowrun.state.backends import (
    EmbeddedLmdbStateBackend,
    HashMapStateBackend,
    LmdbKeyedStateBackend,
    StateBackendError,
    state_backend_from_name,
)
from flowrun.state.key_groups import (
    KeyBatch,
    KeyGroupRange,
    assign_key_groups,
    assign_to_key_group,
)

MAX_P = 128
BACKENDS = ["hashmap", "lmdb"]


class Clock:
    """A settable processing-time clock (epoch ms)."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Backends:
    """Creates backends of one kind under ``tmp_path`` and disposes of them afterwards."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.created: list = []

    def config(self, **options):
        if self.kind == "hashmap":
            return HashMapStateBackend()
        return EmbeddedLmdbStateBackend(str(self.tmp_path / "lmdb"), **options)

    def create(self, key_group_range=None, max_p=MAX_P, key_type=None, clock=None, op="op", **kw):
        rng = key_group_range if key_group_range is not None else KeyGroupRange(0, max_p - 1)
        backend = self.config(**kw).create_keyed_backend(
            op, rng, max_p, key_type, str(self.tmp_path / "work"), clock
        )
        self.created.append(backend)
        return backend

    def subtasks(self, parallelism, max_p=MAX_P, **kw):
        return [
            self.create(KeyGroupRange.of_operator(max_p, parallelism, i), max_p, op=f"op{i}", **kw)
            for i in range(parallelism)
        ]

    def close(self):
        for backend in self.created:
            backend.dispose()


@pytest.fixture(params=BACKENDS)
def backends(request, tmp_path):
    made = Backends(request.param, tmp_path)
    yield made
    made.close()


def route(subtasks, key):
    """The subtask owning ``key``, with its key set as current (key group precomputed)."""
    kg = assign_to_key_group(key, MAX_P)
    owners = [b for b in subtasks if b.key_group_range.contains(kg)]
    assert len(owners) == 1
    owners[0].set_current_key(key, kg)
    return owners[0]


def events(n=6000, distinct=700, seed=3):
    """Deterministic (key, value) events over str and int keys."""
    rnd = random.Random(seed)
    keys = [f"user-{i}" for i in range(distinct // 2)] + list(range(distinct - distinct // 2))
    return [(rnd.choice(keys), rnd.randrange(1000)) for _ in range(n)]


def run_batches(subtasks, evts, fn, batch=512):
    """Apply ``fn(backend, key, value)`` to every event, batches bracketed like the runtime."""
    for lo in range(0, len(evts), batch):
        for b in subtasks:
            b.begin_batch()
        for key, value in evts[lo : lo + batch]:
            fn(route(subtasks, key), key, value)
        for b in subtasks:
            b.end_batch()


class Avg(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + value, acc[1] + 1)

    def get_result(self, acc):
        return acc[0] / acc[1]

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


ACC_TYPE = Types.TUPLE([Types.LONG(), Types.LONG()])


# ------------------------------------------------------------------------------------------
# Every state kind, exact values, p = 1, 2, 4
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parallelism", [1, 2, 4])
def test_all_state_kinds_exact_over_many_keys(backends, parallelism):
    subtasks = backends.subtasks(parallelism)
    states = {}
    for b in subtasks:
        states[id(b)] = {
            "value": b.get_state(ValueStateDescriptor("count", Types.LONG())),
            "list": b.get_list_state(ListStateDescriptor("seen", Types.INT())),
            "map": b.get_map_state(MapStateDescriptor("hist", Types.INT(), Types.LONG())),
            "reducing": b.get_reducing_state(
                ReducingStateDescriptor("sum", lambda x, y: x + y, Types.LONG())
            ),
            "aggregating": b.get_aggregating_state(
                AggregatingStateDescriptor("avg", Avg(), ACC_TYPE)
            ),
        }
        assert isinstance(states[id(b)]["value"], ValueState)
        assert isinstance(states[id(b)]["list"], ListState)
        assert isinstance(states[id(b)]["map"], MapState)
        assert isinstance(states[id(b)]["reducing"], ReducingState)
        assert isinstance(states[id(b)]["aggregating"], AggregatingState)

    def apply(backend, key, value):
        s = states[id(backend)]
        s["value"].update((s["value"].value() or 0) + 1)
        s["list"].add(value)
        bucket = value % 7
        s["map"].put(bucket, (s["map"].get(bucket) or 0) + 1)
        s["reducing"].add(value)
        s["aggregating"].add(value)

    evts = events()
    run_batches(subtasks, evts, apply)

    expected: dict = {}
    for key, value in evts:
        e = expected.setdefault(key, {"count": 0, "seen": [], "hist": {}, "sum": 0})
        e["count"] += 1
        e["seen"].append(value)
        e["hist"][value % 7] = e["hist"].get(value % 7, 0) + 1
        e["sum"] += value
    for key, e in expected.items():
        b = route(subtasks, key)
        s = states[id(b)]
        assert s["value"].value() == e["count"]
        assert list(s["list"].get()) == e["seen"]
        assert dict(s["map"].items()) == e["hist"]
        assert sorted(s["map"].keys()) == sorted(e["hist"])
        assert sorted(s["map"].values()) == sorted(e["hist"].values())
        assert s["reducing"].get() == e["sum"]
        assert s["aggregating"].get() == pytest.approx(e["sum"] / e["count"])
    # every key lives in exactly the subtask owning its key group, and nowhere else
    for name in ("count", "seen", "hist", "sum", "avg"):
        found = []
        for b in subtasks:
            keys = list(b.keys(name))
            assert all(b.key_group_range.contains(assign_to_key_group(k, MAX_P)) for k in keys)
            found.extend(keys)
        assert sorted(map(repr, found)) == sorted(map(repr, expected))


def test_value_state_update_none_and_clear(backends):
    b = backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.STRING()))
    b.set_current_key("a")
    assert s.value() is None
    s.update("x")
    b.set_current_key("b")
    assert s.value() is None
    s.update("y")
    b.set_current_key("a")
    assert s.value() == "x"
    s.update(None)
    assert s.value() is None
    b.set_current_key("b")
    s.clear()
    assert s.value() is None
    assert list(b.keys("v")) == []


def test_list_state_operations(backends):
    b = backends.create()
    s = b.get_list_state(ListStateDescriptor("l", Types.STRING()))
    b.set_current_key(("t", 1))
    assert list(s.get()) == []
    s.add("a")
    s.add_all(["b", "c"])
    assert list(s.get()) == ["a", "b", "c"]
    assert list(s) == ["a", "b", "c"]
    s.update(["x", "y"])
    assert list(s.get()) == ["x", "y"]
    s.add_all([])
    assert list(s.get()) == ["x", "y"]
    with pytest.raises(TypeError):
        s.add(None)
    with pytest.raises(TypeError):
        s.add_all(["ok", None])
    with pytest.raises(TypeError):
        s.update(None)
    assert list(s.get()) == ["x", "y"]  # failed calls change nothing
    s.update([])
    assert list(s.get()) == []
    s.add("z")
    s.clear()
    assert list(s.get()) == []
    b.set_current_key(("t", 2))
    s.add("other")
    b.set_current_key(("t", 1))
    assert list(s.get()) == []


def test_map_state_operations(backends):
    b = backends.create()
    s = b.get_map_state(MapStateDescriptor("m", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
    b.set_current_key(7)
    assert s.is_empty()
    assert s.get("a") is None
    s.put("a", {"nested": [1, 2]})
    s["b"] = None  # None values are allowed, and are entries
    s.put_all({"c": 3, "d": (4,)})
    assert s.contains("b") and "b" in s and s.get("b") is None
    assert not s.contains("zz")
    assert s["a"] == {"nested": [1, 2]}
    assert dict(s.items()) == {"a": {"nested": [1, 2]}, "b": None, "c": 3, "d": (4,)}
    assert dict(s.entries()) == dict(s.items())
    assert sorted(s) == ["a", "b", "c", "d"]
    del s["c"]
    s.remove("missing")
    assert sorted(s.keys()) == ["a", "b", "d"]
    assert not s.is_empty()
    b.set_current_key(8)
    assert s.is_empty() and list(s.items()) == []
    s.put("a", 1)
    b.set_current_key(7)
    s.clear()
    assert s.is_empty()
    b.set_current_key(8)
    assert dict(s.items()) == {"a": 1}


def test_map_state_removing_last_entry_removes_key(backends):
    b = backends.create()
    s = b.get_map_state(MapStateDescriptor("m", Types.INT(), Types.INT()))
    b.set_current_key("k")
    s.put(1, 1)
    s.remove(1)
    assert s.is_empty()
    assert list(b.keys("m")) == []


def test_reducing_and_aggregating_none_clears(backends):
    b = backends.create()
    r = b.get_reducing_state(ReducingStateDescriptor("r", lambda x, y: max(x, y), Types.INT()))
    a = b.get_aggregating_state(AggregatingStateDescriptor("a", Avg(), ACC_TYPE))
    b.set_current_key("k")
    assert r.get() is None and a.get() is None
    for v in (3, 9, 4):
        r.add(v)
        a.add(v)
    assert r.get() == 9
    assert a.get() == pytest.approx(16 / 3)
    r.add(None)
    a.add(None)
    assert r.get() is None and a.get() is None
    r.add(2)
    r.clear()
    assert r.get() is None


def test_state_objects_follow_the_current_key(backends):
    b = backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.INT()))
    for i in range(100):
        b.set_current_key(i)
        s.update(i * 10)
    for i in reversed(range(100)):
        b.set_current_key(i)
        assert s.value() == i * 10
        assert b.get_current_key() == i
        assert b.get_current_key_group() == assign_to_key_group(i, MAX_P)


# ------------------------------------------------------------------------------------------
# Declarations and types
# ------------------------------------------------------------------------------------------


def test_same_descriptor_returns_same_state(backends):
    b = backends.create()
    first = b.get_state(ValueStateDescriptor("v", Types.INT()))
    assert b.get_state(ValueStateDescriptor("v", Types.INT())) is first
    assert b.get_registered_state_names() == ["v"]


@pytest.mark.parametrize(
    "second",
    [
        lambda b: b.get_state(ValueStateDescriptor("s", Types.LONG())),
        lambda b: b.get_list_state(ListStateDescriptor("s", Types.INT())),
        lambda b: b.get_map_state(MapStateDescriptor("s", Types.INT(), Types.INT())),
    ],
)
def test_same_name_with_other_type_or_kind_is_an_error(backends, second):
    b = backends.create()
    b.get_state(ValueStateDescriptor("s", Types.INT()))
    with pytest.raises(IncompatibleStateError, match="'s'"):
        second(b)


def test_same_name_with_and_without_ttl_is_an_error(backends):
    b = backends.create()
    b.get_state(ValueStateDescriptor("s", Types.INT()))
    d = ValueStateDescriptor("s", Types.INT())
    d.enable_time_to_live(StateTtlConfig.new_builder(Time.seconds(1)).build())
    with pytest.raises(IncompatibleStateError):
        b.get_state(d)


def test_descriptor_of_other_kind_is_rejected(backends):
    b = backends.create()
    with pytest.raises(TypeError, match="get_list_state"):
        b.get_state(ListStateDescriptor("l", Types.INT()))


@pytest.mark.parametrize(
    "type_info, bad",
    [
        (Types.INT(), "7"),
        (Types.INT(), 2**40),
        (Types.LONG(), 1.5),
        (Types.STRING(), 7),
        (Types.BOOLEAN(), 1),
        (Types.DOUBLE(), "x"),
    ],
)
def test_basic_type_mismatch_fails_on_write(backends, type_info, bad):
    b = backends.create()
    s = b.get_state(ValueStateDescriptor("v", type_info))
    b.set_current_key("k")
    with pytest.raises(StateTypeError) as info:
        s.update(bad)
    assert info.value.state_name == "v" and info.value.key == "k"
    assert s.value() is None


def test_accepted_values_round_trip_through_snapshot(backends):
    """What a write accepts, the serializer can write (int for DOUBLE, numpy, Row ...)."""
    import numpy as np

    from flowrun.core.row import Row

    b = backends.create()
    d = b.get_state(ValueStateDescriptor("d", Types.DOUBLE()))
    n = b.get_state(ValueStateDescriptor("n", Types.LONG()))
    r = b.get_state(ValueStateDescriptor("r", Types.ROW_NAMED(["a"], [Types.STRING()])))
    b.set_current_key("k")
    d.update(3)
    n.update(np.int64(5))
    r.update(Row(a="x"))
    streams = b.snapshot()
    other = backends.create(op="other")
    other.restore(streams)
    d2 = other.get_state(ValueStateDescriptor("d", Types.DOUBLE()))
    n2 = other.get_state(ValueStateDescriptor("n", Types.LONG()))
    r2 = other.get_state(ValueStateDescriptor("r", Types.ROW_NAMED(["a"], [Types.STRING()])))
    other.set_current_key("k")
    assert d2.value() == 3.0 and n2.value() == 5 and r2.value() == Row(a="x")


def test_composite_type_mismatch_fails_at_the_latest_on_snapshot(backends):
    b = backends.create()
    s = b.get_state(ValueStateDescriptor("t", Types.TUPLE([Types.STRING(), Types.INT()])))
    b.set_current_key("k")
    with pytest.raises(StateTypeError):
        s.update(("a", "not an int"))  # checked on write by LMDB, ...
        b.snapshot()  # ... and at the latest here by the heap backend


def test_map_key_type_mismatch(backends):
    b = backends.create()
    s = b.get_map_state(MapStateDescriptor("m", Types.INT(), Types.INT()))
    b.set_current_key("k")
    with pytest.raises(StateTypeError):
        s.put("not an int", 1)


def test_key_outside_the_key_group_range_is_rejected(backends):
    b = backends.create(KeyGroupRange(0, 9))
    key = next(k for k in range(1000) if assign_to_key_group(k, MAX_P) > 9)
    with pytest.raises(ValueError, match="outside"):
        b.set_current_key(key)
    with pytest.raises(ValueError, match="outside"):
        b.set_current_key("x", 50)


def test_declared_key_type(backends):
    b = backends.create(key_type=Types.STRING())
    s = b.get_state(ValueStateDescriptor("v", Types.INT()))
    b.set_current_key("a")
    s.update(1)
    with pytest.raises(TypeError):
        b.set_current_key(5)  # LMDB checks at once, the heap backend when snapshotting
        s.update(2)
        b.snapshot()


# ------------------------------------------------------------------------------------------
# Keys prepared once per batch (prepare_keys / set_prepared_key), int values
# ------------------------------------------------------------------------------------------


def _prepare(b, keys, max_p=MAX_P):
    batch = KeyBatch(keys, max_p)
    assert batch.group_list == assign_key_groups(keys, max_p).tolist()
    return batch.group_list, b.prepare_keys(batch)


def _count_batch(b, state, keys, max_p=MAX_P):
    """One batch counting ``keys`` in ValueState ``state``, as the keyed runtime runs it:
    the prepared path when the backend takes the batch, else ``set_current_key`` per key."""
    groups, tokens = _prepare(b, keys, max_p)
    b.begin_batch()
    for key, group, token in zip(keys, groups, tokens or [None] * len(keys), strict=True):
        if tokens is None:
            b.set_current_key(key, group)
        else:
            b.set_prepared_key(key, group, token)
        assert b.get_current_key() is key  # the record's own key object
        state.update((state.value() or 0) + 1)
    b.end_batch()


@pytest.mark.parametrize(
    "key_type, keys",
    [
        (None, [0, 1, -1, 7, 1, 2**63 - 1, -(2**63)]),
        (None, [0, 2**64, -(2**70), 5, 2**64]),  # beyond int64: the big-int encoding
        (None, ["a", "b", "", "a", "\ud800"]),
        (None, [("a", 1), ("b", 2), ("a", 1)]),
        (None, [1, "1", None, b"2"]),
        (Types.LONG(), [3, -3, 2**40, 3]),
        (Types.INT(), [3, -3, 2**31 - 1, -(2**31)]),
        (Types.STRING(), ["x", "y", "x"]),
    ],
)
def test_prepared_keys_address_the_same_state_as_set_current_key(backends, key_type, keys):
    b = backends.create(key_type=key_type)
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    groups, tokens = _prepare(b, keys)
    assert tokens is not None
    b.begin_batch()
    for i, (key, group, token) in enumerate(zip(keys, groups, tokens, strict=True)):
        b.set_prepared_key(key, group, token)
        assert b.get_current_key() is key and b.get_current_key_group() == group
        s.update((s.value() or 0) + i + 1)
    b.end_batch()
    expected: dict = {}
    for i, key in enumerate(keys):
        expected[key] = expected.get(key, 0) + i + 1
    for key, total in expected.items():
        b.set_current_key(key)  # the per-key path, key group computed here
        assert s.value() == total, key
    assert sorted(map(repr, b.keys("v"))) == sorted(map(repr, expected))


def test_nan_keys_are_one_key_through_every_path(backends):
    """NaN equals NaN as a key (Java's Double.equals; LMDB compares key bytes): a dict-based
    backend must find a NaN key whatever NaN object a record carries, also after a restore."""
    nan = float("nan")
    b = backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    keys = [float("nan"), 1.5, float("nan"), nan, 2.5, float("nan")]
    _count_batch(b, s, keys)
    b.set_current_key(float("nan"))
    assert s.value() == 4
    streams = b.snapshot()
    for kind in BACKENDS:
        other = Backends(kind, backends.tmp_path / f"restored-{kind}").create(op="other")
        other.restore(streams)
        v = other.get_state(ValueStateDescriptor("v", Types.LONG()))
        other.set_current_key(float("nan"))
        assert v.value() == 4, kind
        other.set_current_key(1.5)
        assert v.value() == 1, kind
        other.dispose()


def test_prepare_keys_leaves_bad_batches_to_set_current_key(backends):
    b = backends.create(KeyGroupRange(0, 9))
    inside = [k for k in range(200) if assign_to_key_group(k, MAX_P) <= 9][:3]
    outside = next(k for k in range(1000) if assign_to_key_group(k, MAX_P) > 9)
    assert list(_prepare(b, [])[1]) == []
    assert _prepare(b, inside)[1] is not None
    assert _prepare(b, [*inside, outside])[1] is None
    with pytest.raises(ValueError, match="outside"):
        b.set_current_key(outside)


def test_run_prepared_runs_each_record_with_its_key_and_names_a_failing_one(backends):
    b = backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    keys = [5, 9, 5, 2, 9, 5]
    groups, tokens = _prepare(b, keys)
    records = [(k, i) for i, k in enumerate(keys)]

    def step(record, ctx):
        key, i = record
        assert ctx == "ctx" and b.get_current_key() == key
        assert b.get_current_key_group() == assign_to_key_group(key, MAX_P)
        s.update((s.value() or 0) + 1)
        return None if i % 2 else [(key, s.value())]

    def fail(record, exc):
        return RuntimeError(f"failed on {record!r}")

    out: list = []
    b.begin_batch()
    b.run_prepared(step, "ctx", keys, groups, tokens, records, out, fail)
    b.end_batch()
    assert out == [(5, 1), (5, 2), (9, 2)]
    assert b.get_current_key() == 5  # the last record's key stays current, as before

    def failing(record, ctx):
        if record[1] == 3:
            raise ValueError("boom")

    groups, tokens = _prepare(b, keys)
    b.begin_batch()
    with pytest.raises(RuntimeError, match=r"failed on \(2, 3\)") as info:
        b.run_prepared(failing, None, keys, groups, tokens, records, [], fail)
    b.end_batch()
    assert isinstance(info.value.__cause__, ValueError)


def test_lmdb_prepared_int_keys_are_the_serializer_bytes(lmdb_backends):
    b = lmdb_backends.create()
    keys = [1, True, 0, False, -1, 2**63, 1.0, np.int64(1), None]  # equal in Python, not keys
    _, tokens = _prepare(b, keys)
    assert list(tokens) == [b._klp_of(k) for k in keys]
    assert len(set(b._klp_of(k) for k in [1, True, 1.0])) == 3
    declared = lmdb_backends.create(key_type=Types.INT(), op="int-keys")
    assert _prepare(declared, [1, 2**40])[1] is None
    assert list(_prepare(declared, [1, -(2**31)])[1]) == [
        declared._klp_of(1),
        declared._klp_of(-(2**31)),
    ]
    with pytest.raises(TypeError, match="does not match the key type"):
        declared.set_current_key(2**40)


@pytest.mark.parametrize(
    "type_info, good, bad",
    [
        (Types.LONG(), [0, -1, 2**63 - 1, -(2**63), np.int64(5)], [True, 2**63, 1.5, "1"]),
        (Types.INT(), [2**31 - 1, -(2**31), np.int32(-3)], [2**31, False, 2.0]),
        (Types.SHORT(), [2**15 - 1, -(2**15)], [2**15]),
        (Types.BYTE(), [127, -128], [128, -129]),
    ],
)
def test_int_values_exact_and_refused_as_the_serializer_does(backends, type_info, good, bad):
    b = backends.create()
    s = b.get_state(ValueStateDescriptor("v", type_info))
    b.begin_batch()
    for i, value in enumerate(good):
        b.set_current_key(i)
        s.update(value)
        assert s.value() == value
    for value in bad:
        b.set_current_key("bad")
        with pytest.raises(StateTypeError):
            s.update(value)
        assert s.value() is None
    b.end_batch()
    for i, value in enumerate(good):
        b.set_current_key(i)
        assert s.value() == value and type(s.value()) in (int, type(value))


def test_lmdb_malformed_int_value_is_a_clear_error(lmdb_backends):
    b = lmdb_backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    b.set_current_key("k")
    b._put(s._key(), b"\x01\x02\x03")
    with pytest.raises(ValueError, match="malformed state bytes for Long"):
        s.value()


def test_backend_from_name(tmp_path):
    assert isinstance(state_backend_from_name("hashmap"), HashMapStateBackend)
    assert isinstance(state_backend_from_name(" LMDB "), EmbeddedLmdbStateBackend)
    with pytest.raises(ValueError):
        state_backend_from_name("rocksdb")


def test_config_objects_pickle(tmp_path):
    import pickle

    config = EmbeddedLmdbStateBackend(str(tmp_path), map_size=1 << 20, keep_on_close=True)
    assert pickle.loads(pickle.dumps(config)) == config
    assert pickle.loads(pickle.dumps(HashMapStateBackend())) == HashMapStateBackend()


# ------------------------------------------------------------------------------------------
# Batches and transactions (LMDB)
# ------------------------------------------------------------------------------------------


@pytest.fixture
def lmdb_backends(tmp_path):
    made = Backends("lmdb", tmp_path)
    yield made
    made.close()


def test_reads_in_a_batch_see_its_writes_and_commit_at_end(lmdb_backends):
    b = lmdb_backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.INT()))
    m = b.get_map_state(MapStateDescriptor("m", Types.STRING(), Types.INT()))
    b.begin_batch()
    b.begin_batch()  # nested brackets: commit at the outermost end
    b.set_current_key("k")
    s.update(1)
    m.put("x", 1)
    assert s.value() == 1 and dict(m.items()) == {"x": 1}
    b.end_batch()
    assert b._txn is not None  # still open
    s.update(2)
    b.end_batch()
    assert b._txn is None
    with b._env.begin(db=b._db) as txn:  # committed: visible to a fresh reader
        assert txn.stat(b._db)["entries"] == 2
    assert s.value() == 2


def test_one_write_transaction_per_batch(lmdb_backends, monkeypatch):
    b = lmdb_backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.INT()))
    b.begin_batch()
    b.end_batch()  # commits the registration's metadata
    begun = []
    original = b._begin

    def counting():
        begun.append(1)
        return original()

    monkeypatch.setattr(b, "_begin", counting)
    for batch in range(5):
        b.begin_batch()
        for i in range(1000):
            b.set_current_key(i)
            s.update((s.value() or 0) + batch)
        b.end_batch()
    assert len(begun) == 5


def test_map_growth_from_a_tiny_map_loses_nothing(lmdb_backends):
    b = lmdb_backends.create(map_size=64 << 10)
    s = b.get_state(ValueStateDescriptor("v", Types.STRING()))
    lst = b.get_list_state(ListStateDescriptor("l", Types.LONG()))
    start = b.map_size
    expected = {}
    for batch in range(6):
        b.begin_batch()
        for i in range(3000):
            key = f"key-{batch}-{i}"
            b.set_current_key(key)
            s.update(key * 3)
            lst.add(i)
            expected[key] = key * 3
            if i % 500 == 0:  # reads in the batch see writes made before a growth
                b.set_current_key(f"key-{batch}-0")
                assert s.value() == f"key-{batch}-0" * 3
        b.end_batch()
    assert b.grow_count > 0 and b.map_size > start
    for key, value in expected.items():
        b.set_current_key(key)
        assert s.value() == value
        assert list(lst.get()) == [int(key.rsplit("-", 1)[1])]
    assert b.entry_count("v") == len(expected)


def test_map_growth_inside_one_huge_batch(lmdb_backends):
    b = lmdb_backends.create(map_size=32 << 10)
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    b.begin_batch()
    for i in range(150_000):  # also crosses the mid-batch commit threshold
        b.set_current_key(i)
        s.update(i)
    b.end_batch()
    assert b.grow_count > 0
    for i in range(0, 150_000, 7):
        b.set_current_key(i)
        assert s.value() == i


def test_point_ops_switch_from_the_cursor_to_the_transaction_as_the_tree_grows(lmdb_backends):
    # Small tree: value()/update() go through the write transaction's cursor; past
    # _CURSOR_MAX_PAGES through the transaction itself. Both must read and write the same
    # state, also across map growth and mid-batch commits.
    b = lmdb_backends.create(map_size=32 << 10)
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    seen = set()
    for lo in range(0, 200_000, 20_000):
        b.begin_batch()
        for i in range(lo, lo + 20_000):
            b.set_current_key(i)
            s.update((s.value() or 0) + i)
        seen.add(type(b._point))
        b.end_batch()
    assert seen == {lmdb.Cursor, lmdb.Transaction}
    assert b.grow_count > 0
    b.begin_batch()
    for i in range(0, 200_000, 3):  # read-modify-write on the large tree
        b.set_current_key(i)
        s.update(s.value() + 1)
    b.end_batch()
    for i in range(0, 200_000, 1):
        b.set_current_key(i)
        assert s.value() == i + (i % 3 == 0)


def test_small_trees_commit_more_often_within_a_batch(lmdb_backends, monkeypatch):
    from flowrun.state.backends import lmdb as lmdb_backend

    txn_writes = lmdb_backend._txn_writes
    assert txn_writes(0) == txn_writes(100) == lmdb_backend._MIN_TXN_WRITES
    assert txn_writes(1000) == 1000 * lmdb_backend._TXN_WRITES_PER_PAGE
    assert txn_writes(10**6) == lmdb_backend._MAX_TXN_WRITES
    b = lmdb_backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    b.begin_batch()
    b.end_batch()  # commits the registration's metadata
    commits = []
    original = b._commit

    def counting():
        commits.append(len(b._log) // 2)
        original()

    monkeypatch.setattr(b, "_commit", counting)
    writes = 3 * lmdb_backend._MIN_TXN_WRITES + 5
    b.begin_batch()
    for i in range(writes):
        b.set_current_key(i % 1000)  # a tree of a few pages
        s.update((s.value() or 0) + i)
    b.end_batch()
    assert commits == [lmdb_backend._MIN_TXN_WRITES] * 3 + [5]
    for k in range(1000):
        b.set_current_key(k)
        assert s.value() == sum(range(k, writes, 1000))


def test_map_growth_replays_deletes_and_clears_in_order(lmdb_backends):
    b = lmdb_backends.create(map_size=32 << 10)
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    lst = b.get_list_state(ListStateDescriptor("l", Types.INT()))
    m = b.get_map_state(MapStateDescriptor("m", Types.INT(), Types.STRING()))
    model: dict = {}  # expected values, kept apart from the backend
    lists: dict = {}
    grown_at = []
    b.begin_batch()  # one batch: every growth replays everything written before it
    for i in range(20_000):
        key = i % 50  # revisited often: puts, deletes and clears of one key between growths
        b.set_current_key(key)
        assert s.value() == model.get(key), i  # reads after a growth see the replayed log
        assert lst.get() == lists.get(key, []), i
        if i % 7 == 0:
            s.clear()
            model[key] = None
        elif i % 11 == 0:
            s.update(None)
            model[key] = None
        else:
            model[key] = (model.get(key) or 0) + i
            s.update(model[key])
        if i % 3:
            lst.update([i, i + 1])
            lists[key] = [i, i + 1]
        else:
            lst.clear()
            lists[key] = []
        grows = b.grow_count
        b.set_current_key("growing")
        m.put(i, "x" * 40)  # the state grows all along, so the map keeps growing
        if b.grow_count > grows:
            grown_at.append(i)
    b.end_batch()
    assert len(grown_at) >= 4 and grown_at[-1] > 5000, grown_at
    for key, value in model.items():
        b.set_current_key(key)
        assert s.value() == value
        assert lst.get() == lists[key]
    b.set_current_key("growing")
    assert len(m.keys()) == 20_000


def test_growth_while_a_snapshot_is_pending(lmdb_backends):
    from flowrun.state.snapshot import read_stream

    b = lmdb_backends.create(map_size=64 << 10)
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    for i in range(100):
        b.set_current_key(i)
        s.update(i)
    handle = b.snapshot_async()
    b.begin_batch()
    for i in range(100, 20_000):
        b.set_current_key(i)
        s.update(i)
    b.end_batch()
    assert b.grow_count > 0
    (stream,) = handle.result()
    assert read_stream(stream)[1].num_rows == 100


def test_key_too_long_for_lmdb(lmdb_backends):
    b = lmdb_backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.INT()))
    m = b.get_map_state(MapStateDescriptor("m", Types.STRING(), Types.INT()))
    with pytest.raises(StateBackendError, match="too long"):
        b.set_current_key("x" * 600)
    b.set_current_key("x" * 400)
    s.update(1)
    assert s.value() == 1
    with pytest.raises(StateBackendError, match="too long"):
        m.put("y" * 200, 1)
    with pytest.raises(StateBackendError, match="too long"):
        m.get("y" * 200)


def test_corrupt_directory_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt"
    path.mkdir()
    (path / "data.mdb").write_bytes(b"garbage" * 1000)
    with pytest.raises(StateBackendError, match=str(path)):
        LmdbKeyedStateBackend("op", KeyGroupRange(0, 127), MAX_P, directory=str(path))
    assert (path / "data.mdb").read_bytes() == b"garbage" * 1000  # left alone


def test_foreign_lmdb_environment_is_refused(tmp_path):
    path = tmp_path / "foreign"
    env = lmdb.open(str(path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"user", b"data")
    env.close()
    with pytest.raises(StateBackendError, match=f"{path}.*did not create"):
        LmdbKeyedStateBackend("op", KeyGroupRange(0, 127), MAX_P, directory=str(path))
    env = lmdb.open(str(path), map_size=1 << 20)
    with env.begin() as txn:
        assert txn.get(b"user") == b"data"
    env.close()


def test_non_lmdb_directory_is_refused(tmp_path):
    path = tmp_path / "other"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(StateBackendError, match=str(path)):
        LmdbKeyedStateBackend("op", KeyGroupRange(0, 127), MAX_P, directory=str(path))


def test_own_environment_from_an_earlier_attempt_is_wiped(tmp_path):
    config = EmbeddedLmdbStateBackend(str(tmp_path), keep_on_close=True)
    first = config.create_keyed_backend("op", KeyGroupRange(0, 127), MAX_P)
    s = first.get_state(ValueStateDescriptor("v", Types.INT()))
    first.set_current_key("k")
    s.update(1)
    first.dispose()
    assert os.path.exists(os.path.join(first.directory, "data.mdb"))
    second = config.create_keyed_backend("op", KeyGroupRange(0, 127), MAX_P)
    assert second.directory == first.directory
    s = second.get_state(ValueStateDescriptor("v", Types.INT()))
    second.set_current_key("k")
    assert s.value() is None
    assert second.entry_count() == 0
    second.close()


def test_dispose_removes_the_environment(tmp_path):
    b = EmbeddedLmdbStateBackend(str(tmp_path)).create_keyed_backend(
        "op", KeyGroupRange(0, 127), MAX_P
    )
    assert os.path.isdir(b.directory)
    b.close()
    assert os.path.isdir(b.directory)  # close keeps the files, dispose removes them
    b.dispose()
    assert not os.path.exists(b.directory)


def test_default_location_is_a_temporary_directory():
    b = EmbeddedLmdbStateBackend().create_keyed_backend("op", KeyGroupRange(0, 127), MAX_P)
    parent = os.path.dirname(b.directory)
    assert os.path.isdir(b.directory)
    b.dispose()
    assert not os.path.exists(parent)


def test_closed_backend_refuses_work(backends):
    b = backends.create()
    s = b.get_state(ValueStateDescriptor("v", Types.INT()))
    b.close()
    with pytest.raises(StateBackendError, match="closed"):
        b.get_state(ValueStateDescriptor("w", Types.INT()))
    with pytest.raises(StateBackendError):
        b.snapshot()
    del s


DISK_FULL_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from flowrun.core.typeinfo import Types
    from flowrun.state import ValueStateDescriptor
    from flowrun.state.backends import EmbeddedLmdbStateBackend, StateBackendError
    from flowrun.state.key_groups import KeyGroupRange

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write returns EFBIG instead
    limit = 4 << 20  # the "disk": files may not grow beyond 4 MiB
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    b = EmbeddedLmdbStateBackend(sys.argv[1], map_size=1 << 20).create_keyed_backend(
        "op", KeyGroupRange(0, 127), 128)
    s = b.get_state(ValueStateDescriptor("v", Types.STRING()))
    committed = 0
    try:
        for batch in range(1000):
            b.begin_batch()
            for i in range(500):
                b.set_current_key(batch * 500 + i)
                s.update("x" * 100)
            b.end_batch()
            committed = (batch + 1) * 500
    except StateBackendError as exc:
        message = str(exc)
        b.end_batch()  # as the runtime does in its finally clause
    else:
        raise SystemExit("expected the disk to fill up")
    for key in range(committed):  # everything committed before is intact
        b.set_current_key(key)
        assert s.value() == "x" * 100, key
    print(committed)
    print(message)
    """
)


def test_disk_full_is_a_clear_error_and_keeps_committed_state(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    committed, message = result.stdout.strip().split("\n", 1)
    assert int(committed) > 0
    assert "no space left" in message and str(tmp_path) in message


# ------------------------------------------------------------------------------------------
# TTL
# ------------------------------------------------------------------------------------------

TTL = 100


def ttl_descriptor(d, *, read=False, return_expired=False, build=None):
    builder = StateTtlConfig.new_builder(Time.milliseconds(TTL)).disable_cleanup_in_background()
    if read:
        builder = builder.update_ttl_on_read_and_write()
    if return_expired:
        builder = builder.return_expired_if_not_cleaned_up()
    if build is not None:
        builder = build(builder)
    d.enable_time_to_live(builder.build())
    return d


@pytest.fixture
def clocked(backends):
    clock = Clock()
    return backends, clock, backends.create(clock=clock)


def test_ttl_value_on_create_and_write(clocked):
    _, clock, b = clocked
    s = b.get_state(ttl_descriptor(ValueStateDescriptor("v", Types.INT())))
    b.set_current_key("k")
    s.update(1)
    clock.now += TTL - 1
    assert s.value() == 1  # reading does not extend the TTL
    clock.now += 1
    assert s.value() is None
    assert list(b.keys("v")) == []  # dropped when read
    s.update(2)
    clock.now += TTL - 1
    s.update(3)  # writing does
    clock.now += TTL - 1
    assert s.value() == 3


def test_ttl_value_on_read_and_write(clocked):
    _, clock, b = clocked
    s = b.get_state(ttl_descriptor(ValueStateDescriptor("v", Types.INT()), read=True))
    b.set_current_key("k")
    s.update(1)
    for _ in range(5):
        clock.now += TTL - 1
        assert s.value() == 1
    clock.now += TTL
    assert s.value() is None


def test_ttl_return_expired_if_not_cleaned_up(clocked):
    _, clock, b = clocked
    s = b.get_state(ttl_descriptor(ValueStateDescriptor("v", Types.INT()), return_expired=True))
    b.set_current_key("k")
    s.update(1)
    clock.now += TTL
    assert s.value() == 1  # expired but still there: returned, and cleaned up by the read
    assert s.value() is None


def test_ttl_list_elements_expire_one_by_one(clocked):
    _, clock, b = clocked
    s = b.get_list_state(ttl_descriptor(ListStateDescriptor("l", Types.STRING())))
    b.set_current_key("k")
    s.add("a")
    clock.now += 40
    s.add_all(["b", "c"])
    clock.now += 40
    s.add("d")
    assert list(s.get()) == ["a", "b", "c", "d"]
    clock.now += 20  # a expires
    assert list(s.get()) == ["b", "c", "d"]
    clock.now += 40  # b, c expire
    assert list(s.get()) == ["d"]
    s.update(["x", "y"])  # update stamps all elements
    clock.now += TTL - 1
    assert list(s.get()) == ["x", "y"]
    clock.now += 1
    assert list(s.get()) == []
    assert list(b.keys("l")) == []


def test_ttl_list_on_read_and_return_expired(clocked):
    _, clock, b = clocked
    s = b.get_list_state(
        ttl_descriptor(ListStateDescriptor("l", Types.INT()), read=True, return_expired=True)
    )
    b.set_current_key("k")
    s.add(1)
    clock.now += 60
    s.add(2)
    clock.now += 50  # 1 expired, 2 not: a read returns both, drops 1, refreshes 2
    assert list(s.get()) == [1, 2]
    assert list(s.get()) == [2]
    clock.now += TTL - 1
    assert list(s.get()) == [2]


def test_ttl_map_entries_expire_one_by_one(clocked):
    _, clock, b = clocked
    s = b.get_map_state(ttl_descriptor(MapStateDescriptor("m", Types.STRING(), Types.INT())))
    b.set_current_key("k")
    s.put("a", 1)
    clock.now += 50
    s.put_all({"b": 2, "c": 3})
    clock.now += 50
    assert s.get("a") is None and not s.contains("a")
    assert dict(s.items()) == {"b": 2, "c": 3}
    s.put("b", 20)  # rewrite refreshes b only
    clock.now += 50
    assert dict(s.items()) == {"b": 20}
    assert sorted(s.keys()) == ["b"] and list(s.values()) == [20]
    clock.now += 50
    assert s.is_empty()
    assert list(b.keys("m")) == []


def test_ttl_map_on_read_and_write_and_return_expired(clocked):
    _, clock, b = clocked
    s = b.get_map_state(
        ttl_descriptor(
            MapStateDescriptor("m", Types.STRING(), Types.INT()), read=True, return_expired=True
        )
    )
    b.set_current_key("k")
    s.put("a", 1)
    s.put("b", 2)
    clock.now += TTL - 1
    assert s.get("a") == 1  # refreshes a
    clock.now += 1
    assert s.contains("b")  # expired, returned once ...
    assert not s.contains("b")  # ... and gone
    assert dict(s.items()) == {"a": 1}


def test_ttl_reducing_and_aggregating(clocked):
    _, clock, b = clocked
    r = b.get_reducing_state(
        ttl_descriptor(ReducingStateDescriptor("r", lambda x, y: x + y, Types.LONG()))
    )
    a = b.get_aggregating_state(ttl_descriptor(AggregatingStateDescriptor("a", Avg(), ACC_TYPE)))
    b.set_current_key("k")
    r.add(1)
    a.add(10)
    clock.now += TTL - 1
    r.add(2)  # each add refreshes
    a.add(20)
    clock.now += TTL - 1
    assert r.get() == 3 and a.get() == 15
    clock.now += 1
    assert r.get() is None and a.get() is None
    r.add(5)
    a.add(7)
    clock.now += TTL
    r.add(1)  # the expired sum does not count
    a.add(1)
    assert r.get() == 1 and a.get() == 1


def test_ttl_reducing_return_expired_keeps_folding(clocked):
    _, clock, b = clocked
    r = b.get_reducing_state(
        ttl_descriptor(
            ReducingStateDescriptor("r", lambda x, y: x + y, Types.LONG()), return_expired=True
        )
    )
    b.set_current_key("k")
    r.add(1)
    clock.now += TTL
    r.add(2)  # as Flink's TTL reduce: an expired but visible value is still folded
    assert r.get() == 3


def _snapshot_rows(b, name):
    from flowrun.state.snapshot import read_stream

    for stream in b.snapshot():
        meta, table = read_stream(stream)
        if meta.state_name == name:
            return table.num_rows
    raise AssertionError(name)


@pytest.mark.parametrize("full_snapshot", [True, False])
def test_ttl_cleanup_full_snapshot(clocked, full_snapshot):
    _, clock, b = clocked
    build = (lambda x: x.cleanup_full_snapshot()) if full_snapshot else None
    v = b.get_state(ttl_descriptor(ValueStateDescriptor("v", Types.INT()), build=build))
    lst = b.get_list_state(ttl_descriptor(ListStateDescriptor("l", Types.INT()), build=build))
    m = b.get_map_state(
        ttl_descriptor(MapStateDescriptor("m", Types.INT(), Types.INT()), build=build)
    )
    for k in range(10):
        b.set_current_key(k)
        v.update(k)
        lst.add(k)
        m.put(k, k)
    clock.now += 60
    for k in range(5):
        b.set_current_key(k)
        v.update(k)
        lst.add(k)
        m.put(k + 100, k)
    clock.now += 50  # the first writes expired, the second not
    expect = (5, 5, 5) if full_snapshot else (10, 15, 15)
    assert (_snapshot_rows(b, "v"), _snapshot_rows(b, "l"), _snapshot_rows(b, "m")) == expect
    assert b.keys("v")  # the live state is untouched by a snapshot
    assert len(list(b.keys("v"))) == 10


def test_ttl_timestamps_survive_snapshot_and_restore(backends):
    clock = Clock()
    b = backends.create(clock=clock)
    s = b.get_state(ttl_descriptor(ValueStateDescriptor("v", Types.INT())))
    b.set_current_key("k")
    s.update(1)
    streams = b.snapshot()
    for kind in BACKENDS:
        other = Backends(kind, backends.tmp_path / f"restored-{kind}")
        try:
            r = other.create(clock=clock, op=f"op-{kind}")
            r.restore(streams)
            rs = r.get_state(ttl_descriptor(ValueStateDescriptor("v", Types.INT())))
            r.set_current_key("k")
            clock.now += TTL - 1
            assert rs.value() == 1
            clock.now += 1
            assert rs.value() is None
            clock.now -= TTL
        finally:
            other.close()


def test_ttl_incremental_cleanup_heap(tmp_path):
    clock = Clock()
    made = Backends("hashmap", tmp_path)
    b = made.create(clock=clock)
    d = ttl_descriptor(
        ValueStateDescriptor("v", Types.INT()), build=lambda x: x.cleanup_incrementally(10, False)
    )
    s = b.get_state(d)
    for k in range(100):
        b.set_current_key(k)
        s.update(k)
    assert b.entry_count("v") == 100
    clock.now += TTL
    b.set_current_key("other")
    for _ in range(5):  # each access checks 10 more keys
        s.value()
    assert 40 <= 100 - b.entry_count("v") <= 60
    for _ in range(20):
        s.value()
    assert b.entry_count("v") == 0
    made.close()


def test_ttl_incremental_cleanup_for_every_record_heap(tmp_path):
    clock = Clock()
    made = Backends("hashmap", tmp_path)
    b = made.create(clock=clock)
    lst = b.get_list_state(
        ttl_descriptor(
            ListStateDescriptor("l", Types.INT()), build=lambda x: x.cleanup_incrementally(5, True)
        )
    )
    for k in range(50):
        b.set_current_key(k)
        lst.add(k)
    clock.now += TTL
    for k in range(1000, 1020):  # records for other keys, no state access at all
        b.set_current_key(k)
    assert b.entry_count("l") == 0
    made.close()


def test_ttl_background_cleanup_lmdb(lmdb_backends):
    clock = Clock()
    b = lmdb_backends.create(clock=clock)
    d = ttl_descriptor(
        MapStateDescriptor("m", Types.INT(), Types.INT()),
        build=lambda x: x.cleanup_in_lmdb_compact_filter(50),
    )
    m = b.get_map_state(d)
    plain = b.get_state(ValueStateDescriptor("plain", Types.INT()))
    for k in range(200):
        b.set_current_key(k)
        m.put(k, k)
        m.put(k + 1000, k)
        plain.update(k)
    assert b.entry_count("m") == 400
    clock.now += TTL
    b.set_current_key("other")
    b.begin_batch()
    for _ in range(100):  # 100 accesses: two sweeps of 50 entries each
        m.get(1)
    b.end_batch()
    removed = 400 - b.entry_count("m")
    assert 0 < removed <= 100  # bounded per pass
    for _ in range(50):
        b.run_ttl_cleanup(100)
    assert b.entry_count("m") == 0
    assert b.entry_count("plain") == 200  # states without TTL are never touched


def test_ttl_disabled_background_cleanup_leaves_entries(lmdb_backends):
    clock = Clock()
    b = lmdb_backends.create(clock=clock)
    m = b.get_map_state(ttl_descriptor(MapStateDescriptor("m", Types.INT(), Types.INT())))
    for k in range(100):
        b.set_current_key(k)
        m.put(k, k)
    clock.now += TTL
    b.set_current_key("x")
    for _ in range(3000):
        m.get(1)
    assert b.entry_count("m") == 100


def test_ttl_default_background_cleanup(backends):
    """Flink's defaults when nothing is configured: incremental (5) / compaction filter (1000)."""
    clock = Clock()
    b = backends.create(clock=clock)
    d = ValueStateDescriptor("v", Types.INT())
    d.enable_time_to_live(StateTtlConfig.new_builder(Time.milliseconds(TTL)).build())
    s = b.get_state(d)
    for k in range(300):
        b.set_current_key(k)
        s.update(k)
    clock.now += TTL
    b.set_current_key("x")
    for _ in range(1000):
        s.value()
    left = len(list(b.keys("v")))
    assert left == 0


def test_ttl_return_expired_until_a_cleanup_removes_it(backends):
    clock = Clock()
    b = backends.create(clock=clock)
    d = ttl_descriptor(
        ValueStateDescriptor("v", Types.INT()),
        return_expired=True,
        build=lambda x: x.cleanup_incrementally(1000, False).cleanup_in_lmdb_compact_filter(1000),
    )
    s = b.get_state(d)
    for k in range(10):
        b.set_current_key(k)
        s.update(k)
    clock.now += TTL
    b.set_current_key(3)
    if backends.kind == "lmdb":
        assert s.value() == 3  # expired, not cleaned up yet: visible (and dropped by the read)
        assert b.run_ttl_cleanup() == 9  # the background sweep removes the rest
    else:
        # as in Flink, an access runs the incremental cleanup step first: the step checks
        # all 10 keys, so nothing expired is left to return
        assert s.value() is None
    for k in range(10):
        b.set_current_key(k)
        assert s.value() is None
    assert list(b.keys("v")) == []


def test_keys_are_equal_as_flink_compares_them_not_as_python_does(backends, tmp_path):
    """1, 1.0 and True are three keys, -0.0 and 0.0 two, every NaN one, also inside tuples
    (Java's equals; LMDB compares the key bytes). A Python dict merges the first ones and
    splits NaNs of different objects, so a dict-based backend must not use such keys as
    they are. One key group (max parallelism 1) puts them all in one table."""
    keys = [
        1, True, 1.0, 1, True, 1.0,
        0.0, -0.0, 0.0,
        (1, 0.0), (1, -0.0), (1, -0.0), (True, "a"), (1, "a"),
        (1, float("nan")), (1, float("nan")), (2, (float("nan"), -0.0)), (2, (float("nan"), -0.0)),
        np.int64(1), np.float64(-0.0),
    ]  # fmt: skip
    expected = {
        "1": 3,  # 1, 1, np.int64(1): numpy scalars are their Python values
        "True": 2,
        "1.0": 2,
        "0.0": 2,
        "-0.0": 2,  # -0.0, np.float64(-0.0)
        "(1, 0.0)": 1,
        "(1, -0.0)": 2,
        "(True, 'a')": 1,
        "(1, 'a')": 1,
        "(1, nan)": 2,
        "(2, (nan, -0.0))": 2,
    }
    b = backends.create(KeyGroupRange(0, 0), max_p=1)
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    _count_batch(b, s, keys, max_p=1)

    def counts(backend, state) -> dict:
        found = {}
        for key in backend.keys("v"):
            backend.set_current_key(key)
            found[repr(key)] = state.value()
        return found

    assert counts(b, s) == expected
    streams = b.snapshot()
    for kind in BACKENDS:
        other = Backends(kind, tmp_path / f"restored-{kind}").create(
            KeyGroupRange(0, 0), max_p=1, op="other"
        )
        other.restore(streams)
        v = other.get_state(ValueStateDescriptor("v", Types.LONG()))
        assert counts(other, v) == expected, kind
        other.set_current_key((1, float("nan")))
        v.update(v.value() + 10)
        other.set_current_key(True)
        v.clear()
        assert counts(other, v) == {
            **{k: n for k, n in expected.items() if k != "True"},
            "(1, nan)": 12,
        }, kind
        other.dispose()


@pytest.mark.parametrize("ttl", [False, True])
def test_map_user_keys_are_equal_as_flink_compares_them(backends, tmp_path, ttl):
    """Map-state user keys follow the same equality as state keys: 1, 1.0 and True three
    entries, -0.0 and 0.0 two, every NaN one, also inside tuples; reads, removes and
    restores (into either backend) find them by that equality."""
    descriptor = MapStateDescriptor("m", Types.PICKLED_BYTE_ARRAY(), Types.LONG())
    if ttl:
        descriptor.enable_time_to_live(StateTtlConfig.new_builder(Time.hours(1)).build())
    b = backends.create(clock=Clock())
    m = b.get_map_state(descriptor)
    b.set_current_key("k")
    puts = [1, True, 1.0, 0.0, -0.0, float("nan"), (1, float("nan")), np.int64(1)]
    for n, user_key in enumerate(puts):
        m.put(user_key, (m.get(user_key) or 0) + 10**n)
    m.put_all({-0.0: m.get(-0.0) + 100, (2, -0.0): 5})
    expected = {
        "1": 1 + 10**7,  # np.int64(1) is the int 1
        "True": 10,
        "1.0": 100,
        "0.0": 1000,
        "-0.0": 10000 + 100,
        "nan": 10**5,
        "(1, nan)": 10**6,
        "(2, -0.0)": 5,
    }

    def entries(state) -> dict:
        return {repr(k): v for k, v in state.items()}

    assert entries(m) == expected
    assert sorted(map(repr, m.keys())) == sorted(expected)
    assert m.get(float("nan")) == 10**5 and m.contains((1, float("nan")))
    assert not m.contains((2, 0.0)) and m.get(False) is None
    streams = b.snapshot()
    for kind in BACKENDS:
        other = Backends(kind, tmp_path / f"restored-{kind}").create(op="other", clock=Clock())
        other.restore(streams)
        restored = other.get_map_state(descriptor)
        other.set_current_key("k")
        assert entries(restored) == expected, kind
        restored.remove(float("nan"))
        restored.remove(True)
        restored.put((1, float("nan")), 7)
        assert entries(restored) == {
            **{k: v for k, v in expected.items() if k not in ("nan", "True")},
            "(1, nan)": 7,
        }, kind
        other.dispose()
