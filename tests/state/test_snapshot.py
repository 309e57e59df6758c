"""The backend-neutral snapshot format, restore at another parallelism and across backends."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from flowrun.core.functions import AggregateFunction
from flowrun.core.typeinfo import Types
from flowrun.state import (
    AggregatingStateDescriptor,
    IncompatibleStateError,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateTtlConfig,
    Time,
    ValueStateDescriptor,
)
from flowrun.state.backends import (
    EmbeddedLmdbStateBackend,
    HashMapStateBackend,
    StateBackendError,
    StateMigrationError,
)
from flowrun.state.key_groups import KeyGroupRange, assign_to_key_group
from flowrun.state.operator_state import OperatorStateStore
from flowrun.state.serializers import key_serializer_for, serializer_for
from flowrun.state.snapshot import (
    FORMAT_VERSION,
    KEYED_SCHEMA,
    SnapshotFormatError,
    StateMeta,
    filter_key_groups,
    partition_streams,
    read_snapshot,
    read_stream,
    write_snapshot,
    write_stream,
)

MAX_P = 128
BACKENDS = ["hashmap", "lmdb"]


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


def descriptors():
    return {
        "value": ValueStateDescriptor("count", Types.LONG()),
        "list": ListStateDescriptor("seen", Types.STRING()),
        "map": MapStateDescriptor("hist", Types.INT(), Types.DOUBLE()),
        "reducing": ReducingStateDescriptor("max", lambda a, b: max(a, b), Types.INT()),
        "aggregating": AggregatingStateDescriptor("avg", Avg(), ACC_TYPE),
    }


def states_of(backend):
    d = descriptors()
    return {
        "value": backend.get_state(d["value"]),
        "list": backend.get_list_state(d["list"]),
        "map": backend.get_map_state(d["map"]),
        "reducing": backend.get_reducing_state(d["reducing"]),
        "aggregating": backend.get_aggregating_state(d["aggregating"]),
    }


class Made:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.created = []
        self.n = 0

    def create(self, kind, rng=None, max_p=MAX_P, key_type=None, clock=None):
        self.n += 1
        config = (
            HashMapStateBackend()
            if kind == "hashmap"
            else EmbeddedLmdbStateBackend(str(self.tmp_path / "lmdb"))
        )
        backend = config.create_keyed_backend(
            f"op-{self.n}",
            rng if rng is not None else KeyGroupRange(0, max_p - 1),
            max_p,
            key_type,
            None,
            clock,
        )
        self.created.append(backend)
        return backend

    def subtasks(self, kind, parallelism, max_p=MAX_P):
        return [
            self.create(kind, KeyGroupRange.of_operator(max_p, parallelism, i), max_p)
            for i in range(parallelism)
        ]


@pytest.fixture
def made(tmp_path):
    m = Made(tmp_path)
    yield m
    for backend in m.created:
        backend.dispose()


def owner(subtasks, key):
    kg = assign_to_key_group(key, MAX_P)
    (b,) = [b for b in subtasks if b.key_group_range.contains(kg)]
    b.set_current_key(key, kg)
    return b


def fill(subtasks, n_events=4000, seed=11):
    """Write every state kind for ~600 keys; returns the exact expected content."""
    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(300)] + list(range(300)) + [("t", i) for i in range(50)]
    states = {id(b): states_of(b) for b in subtasks}
    expected: dict = {}
    for b in subtasks:
        b.begin_batch()
    for _ in range(n_events):
        key = rnd.choice(keys)
        value = rnd.randrange(10_000)
        b = owner(subtasks, key)
        s = states[id(b)]
        s["value"].update((s["value"].value() or 0) + 1)
        s["list"].add(f"e{value}")
        s["map"].put(value % 5, value / 2)
        s["reducing"].add(value)
        s["aggregating"].add(value)
        e = expected.setdefault(
            key, {"value": 0, "list": [], "map": {}, "reducing": 0, "agg": [0, 0]}
        )
        e["value"] += 1
        e["list"].append(f"e{value}")
        e["map"][value % 5] = value / 2
        e["reducing"] = max(e["reducing"], value)
        e["agg"][0] += value
        e["agg"][1] += 1
    for b in subtasks:
        b.end_batch()
    return expected


def content(subtasks, expected_keys):
    """key -> every state's value, read through state objects of the subtasks."""
    states = {id(b): states_of(b) for b in subtasks}
    out = {}
    for key in expected_keys:
        s = states[id(owner(subtasks, key))]
        out[key] = {
            "value": s["value"].value(),
            "list": list(s["list"].get()),
            "map": dict(s["map"].items()),
            "reducing": s["reducing"].get(),
            "agg": s["aggregating"].get(),
        }
    return out


def expected_content(expected):
    return {
        k: {
            "value": e["value"],
            "list": e["list"],
            "map": e["map"],
            "reducing": e["reducing"],
            "agg": e["agg"][0] / e["agg"][1],
        }
        for k, e in expected.items()
    }


def all_keys(subtasks, name):
    return sorted(repr(k) for b in subtasks for k in b.keys(name))


# ------------------------------------------------------------------------------------------
# Rescaling and cross-backend restore
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", BACKENDS)
@pytest.mark.parametrize("target", BACKENDS)
@pytest.mark.parametrize("new_parallelism", [2, 5])
def test_rescale_from_3_restores_identical_state(made, source, target, new_parallelism):
    old = made.subtasks(source, 3)
    expected = fill(old)
    streams = [s for b in old for s in b.snapshot()]
    new = made.subtasks(target, new_parallelism)
    for b in new:
        b.restore(streams)  # every subtask gets everything and keeps its key groups
    assert content(new, expected) == expected_content(expected)
    for name in ("count", "seen", "hist", "max", "avg"):
        assert all_keys(new, name) == sorted(repr(k) for k in expected)


def test_lmdb_to_heap_and_back_at_other_parallelisms(made):
    lmdb3 = made.subtasks("lmdb", 3)
    expected = fill(lmdb3)
    heap2 = made.subtasks("hashmap", 2)
    for b in heap2:
        b.restore([s for o in lmdb3 for s in o.snapshot()])
    lmdb4 = made.subtasks("lmdb", 4)
    for b in lmdb4:
        b.restore([s for o in heap2 for s in o.snapshot()])
    assert content(lmdb4, expected) == expected_content(expected)


def test_both_backends_write_identical_rows(made):
    """Backend-neutral means byte-identical rows (up to row order) for the same state."""
    heap = made.subtasks("hashmap", 1)
    lmdb = made.subtasks("lmdb", 1)
    fill(heap)
    fill(lmdb)

    def rows(backend):
        out = {}
        for stream in backend.snapshot():
            meta, table = read_stream(stream)
            out[meta.state_name] = (
                meta.state_kind,
                meta.value_type,
                meta.user_key_type,
                sorted(
                    zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
                ),
            )
        return out

    assert rows(heap[0]) == rows(lmdb[0])


@pytest.mark.parametrize("kind", BACKENDS)
def test_snapshot_of_a_key_group_sub_range(made, kind):
    (b,) = made.subtasks(kind, 1)
    expected = fill([b])
    sub = KeyGroupRange(10, 40)
    for stream in b.snapshot(sub):
        meta, table = read_stream(stream)
        assert meta.key_group_range == (10, 40)
        kgs = table.column("key_group").to_pylist()
        assert kgs and all(10 <= kg <= 40 for kg in kgs)
        assert kgs == sorted(kgs)
    restored = made.create(kind, sub)
    restored.restore(b.snapshot(sub))
    inside = [k for k in expected if sub.contains(assign_to_key_group(k, MAX_P))]
    assert content([restored], inside) == {
        k: v for k, v in expected_content(expected).items() if k in inside
    }
    for stream in b.snapshot(KeyGroupRange.empty()):
        assert read_stream(stream)[1].num_rows == 0


@pytest.mark.parametrize("kind", BACKENDS)
def test_restored_but_undeclared_state_is_carried_into_the_next_snapshot(made, kind):
    (b,) = made.subtasks(kind, 1)
    expected = fill([b])
    middle = made.create(kind)
    middle.restore(b.snapshot())
    assert sorted(middle.get_registered_state_names()) == ["avg", "count", "hist", "max", "seen"]
    assert all_keys([middle], "seen") == sorted(repr(k) for k in expected)
    middle.get_state(ValueStateDescriptor("count", Types.LONG()))  # only one declared
    last = made.create(kind)
    last.restore(middle.snapshot())
    assert content([last], expected) == expected_content(expected)


@pytest.mark.parametrize("kind", BACKENDS)
def test_restore_after_declaration(made, kind):
    (b,) = made.subtasks(kind, 1)
    expected = fill([b])
    fresh = made.create(kind)
    states_of(fresh)  # declared first (as open() would if restore came late)
    fresh.restore(b.snapshot())
    assert content([fresh], expected) == expected_content(expected)


# ------------------------------------------------------------------------------------------
# MVCC: the content of a snapshot is fixed when it is taken
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
def test_writes_after_the_snapshot_started_are_not_in_it(made, kind):
    b = made.create(kind)
    v = b.get_state(ValueStateDescriptor("v", Types.INT()))
    lst = b.get_list_state(ListStateDescriptor("l", Types.INT()))
    for k in range(100):
        b.set_current_key(k)
        v.update(k)
        lst.add(k)
    handle = b.snapshot_async()
    produced = handle.streams()
    first = next(produced)  # one stream produced, then processing goes on
    b.begin_batch()
    for k in range(100):
        b.set_current_key(k)
        v.update(-1)
        lst.add(-1)
    for k in range(100, 200):
        b.set_current_key(k)
        v.update(k)
    b.set_current_key(0)
    v.clear()
    b.end_batch()
    rest = list(produced)
    tables = {read_stream(s)[0].state_name: read_stream(s)[1] for s in [first, *rest]}
    assert sorted(tables["v"].column("value").to_pylist()) == sorted(
        serializer_for(Types.INT()).serialize(k) for k in range(100)
    )
    assert tables["l"].num_rows == 100
    assert handle.result() == [first, *rest]
    later = b.snapshot()
    assert read_stream(later[0])[1].num_rows == 199


# ------------------------------------------------------------------------------------------
# Format
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
def test_stream_schema_and_metadata(made, kind):
    b = made.create(kind, key_type=Types.STRING())
    v = b.get_state(ValueStateDescriptor("count", Types.LONG()))
    m = b.get_map_state(MapStateDescriptor("m", Types.STRING(), Types.INT()))
    ld = ListStateDescriptor("l", Types.INT())
    ld.enable_time_to_live(StateTtlConfig.new_builder(Time.hours(1)).build())
    lst = b.get_list_state(ld)
    b.set_current_key("alice")
    v.update(5)
    m.put("x", 1)
    lst.add_all([1, 2])
    streams = {}
    for stream in b.snapshot():
        assert isinstance(stream, pa.Buffer)
        reader = pa.ipc.open_stream(stream)  # plain pyarrow can read it
        table = reader.read_all()
        assert table.schema.remove_metadata() == KEYED_SCHEMA
        meta = StateMeta.from_metadata(table.schema.metadata)
        streams[meta.state_name] = (meta, table)
    meta, table = streams["count"]
    assert meta.format_version == FORMAT_VERSION
    assert (meta.operator_id, meta.state_kind, meta.value_type) == (b.operator_id, "value", "Long")
    assert (meta.key_type, meta.max_parallelism, meta.key_group_range) == ("String", 128, (0, 127))
    assert not meta.ttl
    kg = assign_to_key_group("alice", MAX_P)
    assert table.to_pylist() == [
        {
            "key_group": kg,
            "key": key_serializer_for(Types.STRING()).serialize("alice"),
            "user_key": None,
            "value": serializer_for(Types.LONG()).serialize(5),
        }
    ]
    meta, table = streams["m"]
    assert (meta.state_kind, meta.user_key_type, meta.value_type) == ("map", "String", "Integer")
    assert table.column("user_key").to_pylist() == [
        key_serializer_for(Types.STRING()).serialize("x")
    ]
    meta, table = streams["l"]
    assert meta.state_kind == "list" and meta.ttl and meta.value_type == "Integer"
    values = table.column("value").to_pylist()
    assert len(values) == 2  # one row per element, each with its own 8-byte timestamp
    assert [v[8:] for v in values] == [serializer_for(Types.INT()).serialize(i) for i in (1, 2)]


def test_files_round_trip(made, tmp_path):
    (b,) = made.subtasks("lmdb", 1)
    expected = fill([b])
    paths = write_snapshot(tmp_path / "chk-1" / "op", b.snapshot())
    assert all(p.endswith(".arrow") for p in paths)
    heap = made.create("hashmap")
    heap.restore(read_snapshot(tmp_path / "chk-1" / "op"))
    assert content([heap], expected) == expected_content(expected)
    lmdb = made.create("lmdb")
    lmdb.restore(paths)  # file paths work as streams too
    assert content([lmdb], expected) == expected_content(expected)


def test_filter_key_groups_is_vectorised_and_exact():
    rnd = random.Random(1)
    kgs = [rnd.randrange(128) for _ in range(10_000)]
    meta = StateMeta(operator_id="o", state_name="s", state_kind="value", max_parallelism=128)
    buf = write_stream(
        meta, kgs, [b"k%d" % i for i in range(10_000)], [None] * 10_000, [b"v"] * 10_000
    )
    _, table = read_stream(buf)
    for rng in (KeyGroupRange(0, 127), KeyGroupRange(5, 60), KeyGroupRange(127, 127)):
        rows = filter_key_groups(table, rng)
        assert rows.column("key").to_pylist() == [
            b"k%d" % i for i, kg in enumerate(kgs) if rng.contains(kg)
        ]


def test_not_a_snapshot_stream():
    with pytest.raises(SnapshotFormatError):
        read_stream(b"definitely not arrow")
    plain = pa.BufferOutputStream()
    with pa.ipc.new_stream(plain, pa.schema([("x", pa.int32())])) as writer:
        writer.write_table(pa.table({"x": pa.array([1], pa.int32())}))
    with pytest.raises(SnapshotFormatError, match="not a flowrun"):
        read_stream(plain.getvalue())


def test_newer_format_version_is_refused():
    meta = StateMeta(operator_id="o", state_name="s", state_kind="value", format_version=99)
    with pytest.raises(SnapshotFormatError, match="version 99"):
        read_stream(write_stream(meta, [], [], [], []))


# ------------------------------------------------------------------------------------------
# Restore errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
def test_restore_with_other_max_parallelism_is_refused(made, kind):
    (b,) = made.subtasks(kind, 1)
    fill([b])
    other = made.create(kind, max_p=256)
    with pytest.raises(StateBackendError, match="max parallelism 128"):
        other.restore(b.snapshot())


@pytest.mark.parametrize("kind", BACKENDS)
def test_restore_with_other_key_type_is_refused(made, kind):
    b = made.create(kind, key_type=Types.STRING())
    s = b.get_state(ValueStateDescriptor("v", Types.INT()))
    b.set_current_key("a")
    s.update(1)
    other = made.create(kind)
    with pytest.raises(StateMigrationError, match="key type"):
        other.restore(b.snapshot())


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize(
    "declare",
    [
        lambda b: b.get_state(ValueStateDescriptor("v", Types.INT())),
        lambda b: b.get_list_state(ListStateDescriptor("v", Types.LONG())),
        lambda b: b.get_state(_with_ttl(ValueStateDescriptor("v", Types.LONG()))),
    ],
    ids=["other type", "other kind", "ttl switched on"],
)
def test_declaring_a_restored_state_differently_is_refused(made, kind, declare):
    b = made.create(kind)
    s = b.get_state(ValueStateDescriptor("v", Types.LONG()))
    b.set_current_key("a")
    s.update(1)
    restored = made.create(kind)
    restored.restore(b.snapshot())
    with pytest.raises(IncompatibleStateError, match="'v'"):
        declare(restored)
    declared = made.create(kind)
    declare(declared)
    with pytest.raises(IncompatibleStateError, match="'v'"):
        declared.restore(b.snapshot())


def _with_ttl(descriptor):
    descriptor.enable_time_to_live(StateTtlConfig.new_builder(Time.hours(1)).build())
    return descriptor


@pytest.mark.parametrize("kind", BACKENDS)
def test_operator_state_streams_are_not_keyed_state(made, kind):
    store = OperatorStateStore("op")
    store.get_list_state(ListStateDescriptor("l", Types.INT())).add(1)
    with pytest.raises(StateBackendError, match="OperatorStateStore"):
        made.create(kind).restore(store.snapshot())


def test_partition_streams(made, tmp_path):
    b = made.create("hashmap")
    b.get_state(ValueStateDescriptor("v", Types.INT()))
    store = OperatorStateStore("op")
    store.get_list_state(ListStateDescriptor("l", Types.INT())).add(1)
    keyed, operator = b.snapshot(), store.snapshot()
    paths = write_snapshot(tmp_path / "mixed", [*operator, *keyed])
    assert partition_streams([*operator, *keyed]) == (keyed, operator)
    assert partition_streams(paths) == (paths[1:], paths[:1])


@pytest.mark.parametrize(
    "name",
    [
        "flowrun.state.snapshot",
        "flowrun.state.operator_state",
        "flowrun.state.backends",
        "flowrun.state.backends.lmdb_native",
    ],
)
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
