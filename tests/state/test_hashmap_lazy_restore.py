"""The HashMap backend decodes restored rows one key group at a time, on first access: every
way of reaching state (current key, prepared batches, bulk reads and writes, iteration,
snapshots, states declared mid-batch) sees exactly what an eager restore would."""

from __future__ import annotations

import pyarrow as pa

from flowrun.core.typeinfo import Types
from flowrun.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor
from flowrun.state.backends import HashMapStateBackend
from flowrun.state.key_groups import KeyBatch, KeyGroupRange, assign_to_key_group
from flowrun.state.ttl import StateTtlConfig, Time

MAX_P = 128
KEYS = list(range(2_000))


def _backend(key_groups: KeyGroupRange = KeyGroupRange(0, MAX_P - 1)):
    return HashMapStateBackend().create_keyed_backend("op", key_groups, MAX_P, Types.LONG(), None)


def _source_streams(ttl: bool = False) -> list[pa.Buffer]:
    source = _backend()
    descriptor = ValueStateDescriptor("v", Types.LONG())
    if ttl:
        descriptor.enable_time_to_live(StateTtlConfig.new_builder(Time.hours(1)).build())
    value = source.get_state(descriptor)
    items = source.get_list_state(ListStateDescriptor("l", Types.LONG()))
    entries = source.get_map_state(MapStateDescriptor("m", Types.STRING(), Types.LONG()))
    for key in KEYS:
        source.set_current_key(key)
        value.update(key * 7)
        items.add_all([key, -key])
        entries.put("a", key)
    streams = source.snapshot_async().result()
    source.dispose()
    return streams


def _rows(streams: list[pa.Buffer]) -> dict[str, list[tuple]]:
    """Every state's rows as sorted tuples (order within a stream does not matter)."""
    out = {}
    for stream in streams:
        table = pa.ipc.open_stream(stream).read_all()
        name = table.schema.metadata[b"flowrun.state_name"].decode()
        out[name] = sorted(zip(*(table.column(i).to_pylist() for i in range(4)), strict=True))
    return out


def _declare(backend):
    return (
        backend.get_state(ValueStateDescriptor("v", Types.LONG())),
        backend.get_list_state(ListStateDescriptor("l", Types.LONG())),
        backend.get_map_state(MapStateDescriptor("m", Types.STRING(), Types.LONG())),
    )


def test_untouched_key_groups_snapshot_exactly_what_was_restored():
    streams = _source_streams()
    restored = _backend()
    restored.restore(streams)
    _declare(restored)
    assert restored._unloaded  # nothing decoded yet
    again = restored.snapshot_async().result()
    assert _rows(again) == _rows(streams)
    assert restored._unloaded  # a snapshot does not decode either


def test_reads_writes_and_snapshots_after_partial_access():
    streams = _source_streams()
    restored = _backend()
    restored.restore(streams)
    value, items, entries = _declare(restored)
    touched = KEYS[:50]
    for key in touched:
        restored.set_current_key(key)
        assert value.value() == key * 7
        assert items.get() == [key, -key]
        assert dict(entries.items()) == {"a": key}
        value.update(key * 7 + 1)
        items.add(0)
    assert restored._unloaded  # only some key groups were touched
    reference = _backend()
    reference.restore(restored.snapshot_async().result())
    r_value, r_items, r_entries = _declare(reference)
    for key in KEYS:
        reference.set_current_key(key)
        bumped = key in touched
        assert r_value.value() == key * 7 + bumped
        assert r_items.get() == ([key, -key, 0] if bumped else [key, -key])
        assert dict(r_entries.items()) == {"a": key}
    assert sorted(restored.keys("v")) == KEYS
    assert restored.entry_count("v") == len(KEYS)
    assert not restored._unloaded


def test_prepared_batches_and_bulk_access_decode_their_key_groups():
    restored = _backend()
    restored.restore(_source_streams())
    value, items, _ = _declare(restored)
    batch = KeyBatch(KEYS[:300], MAX_P)
    tokens = restored.prepare_keys(batch)
    for key, group, token in zip(batch.keys, batch.group_list, tokens, strict=True):
        restored.set_prepared_key(key, group, token)
        assert value.value() == key * 7
    groups = {key: assign_to_key_group(key, MAX_P) for key in KEYS[300:600]}
    assert restored.read_values(value, groups) == {key: key * 7 for key in groups}
    restored.write_values(value, {key: 1 for key in groups}, groups)
    for key in KEYS[300:600]:
        restored.set_current_key(key)
        assert value.value() == 1 and items.get() == [key, -key]


def test_a_state_declared_in_the_middle_of_a_batch_sees_its_restored_rows():
    restored = _backend()
    restored.restore(_source_streams())
    batch = KeyBatch(KEYS[:500], MAX_P)
    tokens = restored.prepare_keys(batch)
    value = None
    for key, group, token in zip(batch.keys, batch.group_list, tokens, strict=True):
        restored.set_prepared_key(key, group, token)
        if value is None:  # declared while processing the first record, as user code may
            value = restored.get_state(ValueStateDescriptor("v", Types.LONG()))
        assert value.value() == key * 7


def test_a_state_declared_after_its_key_was_set_sees_its_restored_rows():
    restored = _backend()
    restored.restore(_source_streams())
    restored.set_current_key(KEYS[5])
    value = restored.get_state(ValueStateDescriptor("v", Types.LONG()))
    assert value.value() == KEYS[5] * 7


def test_rescaled_restore_keeps_only_its_key_groups_and_decodes_them_on_access():
    streams = _source_streams()
    own = KeyGroupRange(30, 90)
    restored = _backend(own)
    restored.restore(streams)
    value, _, _ = _declare(restored)
    mine = [k for k in KEYS if own.start <= assign_to_key_group(k, MAX_P) <= own.end]
    assert sorted(restored.keys("v")) == mine
    for key in mine:
        restored.set_current_key(key)
        assert value.value() == key * 7


def test_ttl_state_is_decoded_at_declaration():
    restored = _backend()
    restored.restore(_source_streams(ttl=True))
    descriptor = ValueStateDescriptor("v", Types.LONG())
    descriptor.enable_time_to_live(StateTtlConfig.new_builder(Time.hours(1)).build())
    value = restored.get_state(descriptor)
    assert not restored._pending.get("v")
    restored.set_current_key(KEYS[3])
    assert value.value() == KEYS[3] * 7


def test_a_restore_into_declared_states_overwrites_their_keys_in_every_key_group():
    streams = _source_streams()
    backend = _backend()
    value, items, entries = _declare(backend)
    backend.set_current_key(-1)
    value.update(5)  # not in the snapshot: stays
    backend.set_current_key(3)
    value.update(1)  # in the snapshot: the restored row wins
    backend.restore(streams)
    backend.set_current_key(-1)
    assert value.value() == 5
    for key in KEYS:
        backend.set_current_key(key)
        assert (value.value(), items.get(), entries.get("a")) == (key * 7, [key, -key], key)
    assert backend.entry_count("v") == len(KEYS) + 1


def test_restored_key_groups_grow_and_shrink_like_any_dict():
    streams = _source_streams()
    backend = _backend()
    backend.restore(streams)
    value, _, _ = _declare(backend)
    expected = {key: key * 7 for key in KEYS}
    for key in range(-3 * len(KEYS), 0):  # three times as many keys into the same key groups
        backend.set_current_key(key)
        value.update(key)
        expected[key] = key
    for key in KEYS[::3]:
        backend.set_current_key(key)
        value.clear()
        del expected[key]
    assert sorted(backend.keys("v")) == sorted(expected)
    for key, want in expected.items():
        backend.set_current_key(key)
        assert value.value() == want
    after = _backend()
    after.restore(backend.snapshot_async().result())
    _declare(after)
    assert after.entry_count("v") == len(expected)


def test_presized_dicts_are_plain_dicts_freed_with_their_last_reference():
    import gc
    import weakref

    from flowrun.state.backends.hashmap import _presized_dict

    class Value:
        pass

    table = _presized_dict(100_000)
    assert type(table) is dict and not table
    value = Value()
    alive = weakref.ref(value)
    table[1] = value
    del value, table
    gc.collect()
    assert alive() is None  # no reference left behind by the C call that made the dict
