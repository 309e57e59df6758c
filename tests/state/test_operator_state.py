"""Operator state: list (even split), union list and broadcast state, and redistribution
exactly as Flink's RoundRobinOperatorStateRepartitioner hands them out."""

from __future__ import annotations

import pytest

from flowrun.core.typeinfo import Types
from flowrun.state import (
    BroadcastState,
    IncompatibleStateError,
    ListState,
    ListStateDescriptor,
    MapStateDescriptor,
    StateTtlConfig,
    StateTypeError,
    Time,
)
from flowrun.state.backends import StateMigrationError
from flowrun.state.operator_state import (
    BROADCAST,
    SPLIT_DISTRIBUTE,
    UNION,
    OperatorStateStore,
    redistribute,
)
from flowrun.state.snapshot import OPERATOR_SCHEMA, read_stream

OFFSETS = ListStateDescriptor("offsets", Types.LONG())
SPLITS = ListStateDescriptor("splits", Types.STRING())
RULES = MapStateDescriptor("rules", Types.STRING(), Types.INT())


def old_stores(split_lists, union_lists=None, broadcast_maps=None):
    """Snapshots of old subtasks holding the given list / union / broadcast content."""
    snapshots = []
    for i, elements in enumerate(split_lists):
        store = OperatorStateStore("op")
        store.get_list_state(OFFSETS).update(elements)
        if union_lists is not None:
            store.get_union_list_state(SPLITS).update(union_lists[i])
        if broadcast_maps is not None:
            store.get_broadcast_state(RULES).put_all(broadcast_maps[i])
        snapshots.append(store.snapshot())
    return snapshots


def restored(streams_per_subtask):
    stores = []
    for streams in streams_per_subtask:
        store = OperatorStateStore("op")
        store.restore(streams)
        stores.append(store)
    return stores


def lists(stores, descriptor=OFFSETS, union=False):
    get = "get_union_list_state" if union else "get_list_state"
    return [list(getattr(s, get)(descriptor).get()) for s in stores]


# ------------------------------------------------------------------------------------------
# SPLIT_DISTRIBUTE
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "new_p, expected",
    [
        (1, [[0, 1, 2, 3, 4, 5, 6]]),
        (2, [[0, 1, 2, 3], [4, 5, 6]]),
        (4, [[0, 1], [2, 3], [4, 5], [6]]),
        (5, [[0, 1], [2, 3], [4], [5], [6]]),
        (8, [[0], [1], [2], [3], [4], [5], [6], []]),
    ],
)
def test_even_split_in_old_subtask_order(new_p, expected):
    old = old_stores([[0, 1, 2], [3], [4, 5, 6]])
    assert lists(restored(redistribute(old, new_p))) == expected


def test_same_parallelism_keeps_each_subtasks_own_list():
    old = old_stores([[0, 1, 2, 3, 4], [], [5]])
    assert lists(restored(redistribute(old, 3))) == [[0, 1, 2, 3, 4], [], [5]]


def test_round_robin_start_moves_on_between_states():
    """Flink starts the next state's round where the odd elements ran out."""
    old = []
    for elements in ([("a", 1), ("b", 1)], [("a", 2)]):
        store = OperatorStateStore("op")
        for name, value in elements:
            store.get_list_state(ListStateDescriptor(name, Types.INT())).add(value)
        old.append(store.snapshot())
    stores = restored(redistribute(old, 2))
    a = lists(stores, ListStateDescriptor("a", Types.INT()))
    b = lists(stores, ListStateDescriptor("b", Types.INT()))
    assert a == [[1], [2]]  # 2 elements over 2 subtasks, no odd one: the next round starts at 0
    assert b == [[1], []]
    old = []
    for elements in ([("a", 1), ("b", 1), ("c", 1)],):
        store = OperatorStateStore("op")
        for name, value in elements:
            store.get_list_state(ListStateDescriptor(name, Types.INT())).add(value)
        old.append(store.snapshot())
    stores = restored(redistribute(old, 3))
    got = [lists(stores, ListStateDescriptor(n, Types.INT())) for n in "abc"]
    assert got == [[[1], [], []], [[], [1], []], [[], [], [1]]]  # spread, not all on subtask 0


def test_every_element_exactly_once_for_many_shapes():
    for old_sizes in ([10, 0, 3], [1], [0, 0], [7, 7, 7, 7], [100, 1]):
        base = 0
        olds = []
        for size in old_sizes:
            olds.append(list(range(base, base + size)))
            base += size
        for new_p in range(1, 7):
            got = lists(restored(redistribute(old_stores(olds), new_p)))
            assert sorted(x for lst in got for x in lst) == list(range(base))
            if len(old_sizes) != new_p:
                sizes = sorted(len(lst) for lst in got)
                assert sizes[-1] - sizes[0] <= 1  # even split


# ------------------------------------------------------------------------------------------
# UNION and BROADCAST
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("new_p", [1, 2, 3, 4])
def test_union_gives_everyone_everything(new_p):
    old = old_stores([[1], [2], [3]], union_lists=[["a"], ["b", "c"], []])
    stores = restored(redistribute(old, new_p))
    for got in lists(stores, SPLITS, union=True):
        assert got == ["a", "b", "c"]


@pytest.mark.parametrize("new_p", [1, 2, 3, 5])
def test_broadcast_takes_old_copy_i_mod_old_parallelism(new_p):
    copies = [{"x": 0}, {"x": 1}, {"x": 2}]  # distinguishable, to see which copy is taken
    old = old_stores([[], [], []], broadcast_maps=copies)
    stores = restored(redistribute(old, new_p))
    got = [dict(s.get_broadcast_state(RULES).items()) for s in stores]
    assert got == [copies[i % 3] for i in range(new_p)]


def test_mixed_modes_survive_two_rescalings():
    old = old_stores(
        [[1, 2], [3], [4, 5, 6, 7]],
        union_lists=[["u1"], ["u2"], ["u3"]],
        broadcast_maps=[{"r": 1}] * 3,
    )
    mid = restored(redistribute(old, 2))
    for s in mid:  # declare everything so the next snapshot has it
        s.get_list_state(OFFSETS)
        s.get_union_list_state(SPLITS)
        s.get_broadcast_state(RULES)
    final = restored(redistribute([s.snapshot() for s in mid], 4))
    assert sorted(x for lst in lists(final) for x in lst) == [1, 2, 3, 4, 5, 6, 7]
    for s in final:
        # union after two restores: the union of the unions
        assert sorted(s.get_union_list_state(SPLITS).get()) == sorted(["u1", "u2", "u3"] * 2)
        assert dict(s.get_broadcast_state(RULES).items()) == {"r": 1}


# ------------------------------------------------------------------------------------------
# The store
# ------------------------------------------------------------------------------------------


def test_list_state_api_and_types():
    store = OperatorStateStore()
    s = store.get_list_state(OFFSETS)
    assert isinstance(s, ListState)
    assert store.get_list_state(OFFSETS) is s
    s.add(1)
    s.add_all([2, 3])
    assert list(s.get()) == [1, 2, 3] and list(s) == [1, 2, 3]
    s.update([9])
    assert list(s.get()) == [9]
    with pytest.raises(TypeError):
        s.add(None)
    with pytest.raises(StateTypeError):
        s.add("not a long")
    s.clear()
    assert list(s.get()) == []


def test_broadcast_state_api():
    store = OperatorStateStore()
    b = store.get_broadcast_state(RULES)
    assert isinstance(b, BroadcastState)
    assert b.is_empty()
    b.put("a", 1)
    b["b"] = 2
    b.put_all({"c": 3})
    assert b.get("a") == 1 and b["b"] == 2 and "c" in b and b.contains("c")
    assert sorted(b) == ["a", "b", "c"] and sorted(b.values()) == [1, 2, 3]
    del b["a"]
    b.remove("zz")
    assert dict(b.items()) == {"b": 2, "c": 3}
    with pytest.raises(StateTypeError):
        b.put(1, 1)
    with pytest.raises(StateTypeError):
        b.put("k", "v")
    b.clear()
    assert b.is_empty()


def test_registered_names():
    store = OperatorStateStore()
    store.get_list_state(OFFSETS)
    store.get_union_list_state(SPLITS)
    store.get_broadcast_state(RULES)
    assert store.get_registered_state_names() == {"offsets", "splits"}
    assert store.get_registered_broadcast_state_names() == {"rules"}
    restored_store = OperatorStateStore()
    restored_store.restore(store.snapshot())
    assert restored_store.restored
    assert restored_store.get_registered_state_names() == {"offsets", "splits"}
    assert restored_store.get_registered_broadcast_state_names() == {"rules"}


def test_mode_mismatch_is_refused():
    store = OperatorStateStore()
    store.get_list_state(OFFSETS)
    with pytest.raises(StateMigrationError, match="get_union_list_state"):
        store.get_union_list_state(OFFSETS)
    restored_store = OperatorStateStore()
    restored_store.restore(store.snapshot())
    with pytest.raises(StateMigrationError, match="SPLIT_DISTRIBUTE"):
        restored_store.get_union_list_state(OFFSETS)


def test_type_mismatch_is_refused():
    store = OperatorStateStore()
    store.get_list_state(OFFSETS).add(1)
    with pytest.raises(IncompatibleStateError):
        store.get_list_state(ListStateDescriptor("offsets", Types.STRING()))
    restored_store = OperatorStateStore()
    restored_store.restore(store.snapshot())
    with pytest.raises(IncompatibleStateError, match="offsets"):
        restored_store.get_list_state(ListStateDescriptor("offsets", Types.STRING()))


def test_ttl_is_keyed_only():
    d = ListStateDescriptor("l", Types.INT())
    d.enable_time_to_live(StateTtlConfig.new_builder(Time.seconds(1)).build())
    with pytest.raises(ValueError, match="keyed"):
        OperatorStateStore().get_list_state(d)


def test_snapshot_format_has_a_mode_column():
    store = OperatorStateStore("src")
    store.get_list_state(OFFSETS).update([1, 2])
    store.get_union_list_state(SPLITS).add("s")
    store.get_broadcast_state(RULES).put("r", 7)
    seen = {}
    for stream in store.snapshot():
        meta, table = read_stream(stream)
        assert table.schema.remove_metadata() == OPERATOR_SCHEMA
        assert set(table.column("mode").to_pylist()) == {meta.mode}
        assert table.column("key_group").null_count == table.num_rows
        seen[meta.state_name] = (meta.mode, meta.operator_id, table.num_rows)
    assert seen == {
        "offsets": (SPLIT_DISTRIBUTE, "src", 2),
        "splits": (UNION, "src", 1),
        "rules": (BROADCAST, "src", 1),
    }


def test_restored_but_undeclared_state_is_kept_in_snapshots():
    first = OperatorStateStore()
    first.get_list_state(OFFSETS).update([5, 6])
    first.get_broadcast_state(RULES).put("r", 1)
    middle = OperatorStateStore()
    middle.restore(first.snapshot())
    last = OperatorStateStore()
    last.restore(middle.snapshot())
    assert list(last.get_list_state(OFFSETS).get()) == [5, 6]
    assert dict(last.get_broadcast_state(RULES).items()) == {"r": 1}


def test_restore_after_declaration_appends():
    first = OperatorStateStore()
    first.get_list_state(OFFSETS).update([5, 6])
    second = OperatorStateStore()
    s = second.get_list_state(OFFSETS)
    second.restore(first.snapshot())
    assert list(s.get()) == [5, 6]


def test_keyed_streams_are_refused():
    from flowrun.state.backends import HashMapStateBackend
    from flowrun.state.descriptors import ValueStateDescriptor
    from flowrun.state.key_groups import KeyGroupRange

    b = HashMapStateBackend().create_keyed_backend("op", KeyGroupRange(0, 127), 128)
    b.get_state(ValueStateDescriptor("v", Types.INT()))
    with pytest.raises(StateMigrationError, match="keyed"):
        OperatorStateStore().restore(b.snapshot())
    with pytest.raises(StateMigrationError, match="keyed"):
        redistribute([b.snapshot()], 2)
