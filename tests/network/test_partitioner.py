"""Stream partitioners: exact keyed routing, per-channel order, balance, and clear errors."""

from __future__ import annotations

import pickle
import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

import flowrun.network.partitioner as partitioner_module
from flowrun.network.partitioner import (
    ArrowKeyGroupPartitioner,
    BroadcastPartitioner,
    CustomPartitionerWrapper,
    ForwardPartitioner,
    GlobalPartitioner,
    KeyColumnError,
    KeyGroupStreamPartitioner,
    KeySelectorError,
    RebalancePartitioner,
    RescalePartitioner,
    ShufflePartitioner,
    StreamPartitioner,
    split_batch_by_channel,
    split_rows_by_channel,
)
from flowrun.state.key_groups import (
    KeyGroupRange,
    assign_to_key_group,
    compute_operator_index_for_key_group,
    hash_arrow,
)


def _setup(partitioner: StreamPartitioner, channels: int, subtask: int = 0) -> StreamPartitioner:
    partitioner.setup(channels, subtask)
    return partitioner


def _expected_channel(key: object, max_parallelism: int, channels: int) -> int:
    group = assign_to_key_group(key, max_parallelism)
    return compute_operator_index_for_key_group(max_parallelism, channels, group)


def _assert_order_preserving_split(records: list, parts: list[list]) -> None:
    """Every part is a subsequence of the input, and together they hold each record once."""
    position = {id(r): i for i, r in enumerate(records)}
    for part in parts:
        indices = [position[id(r)] for r in part]
        assert indices == sorted(indices)
    assert sorted(position[id(r)] for part in parts for r in part) == list(range(len(records)))


def _keyed_records(count: int, seed: int = 0) -> list[tuple]:
    rng = random.Random(seed)
    words = ["apple", "pear", "fig", "", "été", "\U0001f600", "kiwi", "plum"]
    return [(rng.choice(words), rng.randint(-50, 50), i) for i in range(count)]


# ------------------------------------------------------------------------------------------
# Keyed rows
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("max_parallelism", [128, 200])
def test_keyed_rows_go_to_the_key_group_owner(channels: int, max_parallelism: int) -> None:
    records = _keyed_records(3000)
    for selector in (lambda r: r[0], lambda r: r[1], lambda r: (r[0], r[1])):
        partitioner = _setup(KeyGroupStreamPartitioner(selector, max_parallelism), channels)
        parts = partitioner.split_rows(records)
        assert len(parts) == channels
        for channel, part in enumerate(parts):
            for record in part:
                key = selector(record)
                assert _expected_channel(key, max_parallelism, channels) == channel
                group = assign_to_key_group(key, max_parallelism)
                assert KeyGroupRange.of_operator(max_parallelism, channels, channel).contains(group)
        _assert_order_preserving_split(records, parts)


def test_keyed_rows_keep_per_key_order_in_large_batches() -> None:
    # Larger than the internal split chunk, so chunked splitting is exercised too.
    records = _keyed_records(3 * partitioner_module._SPLIT_CHUNK + 17, seed=1)
    partitioner = _setup(KeyGroupStreamPartitioner(lambda r: r[0], 128), 5)
    parts = partitioner.split_rows(records)
    _assert_order_preserving_split(records, parts)
    for part in parts:
        by_key: dict[str, list[int]] = {}
        for word, _, seq in part:
            by_key.setdefault(word, []).append(seq)
        assert all(seqs == sorted(seqs) for seqs in by_key.values())


def test_keyed_rows_with_mixed_key_types() -> None:
    records = [1, "1", 1.0, True, None, b"1", (1, "1"), 1 << 70, -1]
    partitioner = _setup(KeyGroupStreamPartitioner(lambda r: r, 128), 4)
    parts = partitioner.split_rows(records)
    for channel, part in enumerate(parts):
        for record in part:
            assert _expected_channel(record, 128, 4) == channel
    _assert_order_preserving_split(records, parts)


def test_keyed_empty_batch() -> None:
    partitioner = _setup(KeyGroupStreamPartitioner(lambda r: r, 128), 3)
    assert partitioner.split_rows([]) == [[], [], []]
    empty = pa.RecordBatch.from_pydict({"k": pa.array([], pa.string())})
    assert partitioner.split_batch(empty) == [None, None, None]


def test_keyed_partitioner_rejects_more_channels_than_key_groups() -> None:
    with pytest.raises(ValueError, match="max parallelism"):
        KeyGroupStreamPartitioner(lambda r: r, 4).setup(5, 0)
    with pytest.raises(ValueError, match="max parallelism"):
        ArrowKeyGroupPartitioner("k", 4).setup(5, 0)


# ------------------------------------------------------------------------------------------
# Key selector errors
# ------------------------------------------------------------------------------------------


def test_failing_key_selector_names_the_record() -> None:
    records = [{"k": "a"}, {"k": "b"}, {"wrong": 1}, {"k": "c"}]
    partitioner = _setup(KeyGroupStreamPartitioner(lambda r: r["k"], 128), 2)
    with pytest.raises(KeySelectorError) as info:
        partitioner.split_rows(records)
    error = info.value
    assert error.record is records[2]
    assert isinstance(error.cause, KeyError)
    assert error.__cause__ is error.cause
    assert "key selector" in str(error)
    assert "{'wrong': 1}" in str(error)
    # the selector runs as an itemgetter (field_getter), but the error is the user's own
    assert "<lambda>" in str(error)
    assert error.cause.__traceback__.tb_next is not None  # raised inside the lambda


def test_unhashable_key_names_the_record() -> None:
    records = [("ok", 1), ("bad", [1, 2]), ("ok", 2)]
    partitioner = _setup(KeyGroupStreamPartitioner(lambda r: r[1] if r[0] == "bad" else r, 128), 2)
    with pytest.raises(KeySelectorError) as info:
        partitioner.split_rows(records)
    error = info.value
    assert error.record is records[1]
    assert isinstance(error.cause, TypeError)
    assert "key selector" in str(error)
    assert "cannot be hashed" in str(error)
    assert "('bad', [1, 2])" in str(error)


def test_key_selector_error_truncates_huge_records_and_pickles() -> None:
    record = ["x" * 10_000, lambda: None]
    partitioner = _setup(KeyGroupStreamPartitioner(lambda r: r[5], 128), 2)
    with pytest.raises(KeySelectorError) as info:
        partitioner.split_rows([record])
    assert len(str(info.value)) < 600
    clone = pickle.loads(pickle.dumps(info.value))
    assert str(clone) == str(info.value)
    assert isinstance(clone.record, str)  # the unpicklable record travels as its repr


# ------------------------------------------------------------------------------------------
# Arrow keyed partitioning
# ------------------------------------------------------------------------------------------


def _arrow_batch(count: int, seed: int = 2) -> pa.RecordBatch:
    rng = random.Random(seed)
    words = ["apple", "pear", "été", "", None, "\U0001f600"]
    return pa.RecordBatch.from_pydict(
        {
            "word": pa.array([rng.choice(words) for _ in range(count)], pa.string()),
            "i64": pa.array([rng.randint(-(2**62), 2**62) for _ in range(count)], pa.int64()),
            "i32": pa.array([rng.randint(-(2**31), 2**31 - 1) for _ in range(count)], pa.int32()),
            "f64": pa.array([rng.choice([0.5, -0.0, float("nan"), 3.0]) for _ in range(count)]),
            "flag": pa.array([rng.random() < 0.5 for _ in range(count)]),
            "blob": pa.array(
                [bytes([rng.randrange(256)]) * rng.randint(0, 3) for _ in range(count)]
            ),
            "seq": pa.array(range(count), pa.int64()),
        }
    )


@pytest.mark.parametrize("column", ["word", "i64", "i32", "f64", "flag", "blob"])
@pytest.mark.parametrize("channels", [1, 3, 8])
def test_arrow_partitioner_agrees_with_row_partitioner(column: str, channels: int) -> None:
    batch = _arrow_batch(2000)
    arrow = _setup(ArrowKeyGroupPartitioner(column, 128), channels)
    rows = _setup(KeyGroupStreamPartitioner(lambda r: r[column], 128), channels)
    arrow_parts = arrow.split_batch(batch)
    row_parts = rows.split_rows(batch.to_pylist())
    assert len(arrow_parts) == channels
    for arrow_part, row_part in zip(arrow_parts, row_parts, strict=True):
        if arrow_part is None:
            assert row_part == []
            continue
        assert arrow_part.schema == batch.schema
        seqs = arrow_part.column("seq").to_pylist()
        assert seqs == [r["seq"] for r in row_part]
        assert seqs == sorted(seqs)  # input order within the channel
    assert sum(p.num_rows for p in arrow_parts if p is not None) == batch.num_rows
    # The generic row partitioner applied to a RecordBatch routes identically.
    generic_parts = rows.split_batch(batch)
    assert [_seqs(p) for p in generic_parts] == [_seqs(p) for p in arrow_parts]


def _seqs(part: pa.RecordBatch | None) -> list[int]:
    return part.column("seq").to_pylist() if part is not None else []


def test_arrow_partitioner_on_rows_uses_the_column_name() -> None:
    batch = _arrow_batch(300)
    arrow = _setup(ArrowKeyGroupPartitioner("word", 128), 4)
    rows = batch.to_pylist()
    by_rows = arrow.split_rows(rows)
    by_batch = arrow.split_batch(batch)
    assert [_seqs(p) for p in by_batch] == [[r["seq"] for r in part] for part in by_rows]
    with pytest.raises(KeySelectorError, match="KeyError"):
        arrow.split_rows([{"other": 1}])


def test_arrow_partitioner_sliced_batch() -> None:
    batch = _arrow_batch(500).slice(123, 200)
    arrow = _setup(ArrowKeyGroupPartitioner("word", 128), 3)
    for channel, part in enumerate(arrow.split_batch(batch)):
        if part is None:
            continue
        for word in part.column("word").to_pylist():
            assert _expected_channel(word, 128, 3) == channel


def test_arrow_partitioner_routes_by_a_precomputed_hash_column() -> None:
    batch = _arrow_batch(400)
    codes = pa.array(hash_arrow(batch.column("word")))
    hashed = pa.RecordBatch.from_arrays([*batch.columns, codes], [*batch.schema.names, "h"])
    plain = _setup(ArrowKeyGroupPartitioner("word", 128), 3)
    with_codes = _setup(ArrowKeyGroupPartitioner("word", 128, hash_column="h"), 3)
    expected = [_seqs(p) for p in plain.split_batch(batch)]
    assert [_seqs(p) for p in with_codes.split_batch(hashed)] == expected
    assert [_seqs(p) for p in with_codes.split_batch(batch)] == expected  # column absent


def test_arrow_partitioner_missing_column_lists_the_schema() -> None:
    batch = _arrow_batch(5)
    arrow = _setup(ArrowKeyGroupPartitioner("user", 128), 2)
    with pytest.raises(KeyColumnError) as info:
        arrow.split_batch(batch)
    message = str(info.value)
    assert "'user'" in message
    for name in batch.schema.names:
        assert repr(name) in message


def test_arrow_partitioner_unsupported_column_type() -> None:
    batch = pa.RecordBatch.from_pydict({"k": pa.array([[1], [2]])})
    arrow = _setup(ArrowKeyGroupPartitioner("k", 128), 2)
    with pytest.raises(TypeError, match="Arrow column"):
        arrow.split_batch(batch)


# ------------------------------------------------------------------------------------------
# Round robin, shuffle, broadcast, forward, global
# ------------------------------------------------------------------------------------------


def test_rebalance_is_balanced_within_one_across_batches() -> None:
    partitioner = _setup(RebalancePartitioner(), 5, subtask=3)
    totals = Counter()
    seen: list[int] = []
    next_value = 0
    for size in [0, 1, 7, 3, 12, 0, 5, 101, 2]:
        records = list(range(next_value, next_value + size))
        next_value += size
        parts = partitioner.split_rows(records)
        _assert_order_preserving_split(records, parts)
        for channel, part in enumerate(parts):
            totals[channel] += len(part)
            seen.extend(part)
        counts = [totals[c] for c in range(5)]
        assert max(counts) - min(counts) <= 1
    assert sorted(seen) == list(range(next_value))


def test_rebalance_continues_round_robin_and_is_reproducible() -> None:
    def channel_sequence(subtask: int) -> list[int]:
        partitioner = _setup(RebalancePartitioner(), 4, subtask)
        sequence = []
        for batch in ([0, 1, 2], [3, 4], [5, 6, 7, 8, 9]):
            owner = {}
            for channel, part in enumerate(partitioner.split_rows(batch)):
                owner.update({r: channel for r in part})
            sequence.extend(owner[r] for r in batch)
        return sequence

    sequence = channel_sequence(2)
    assert all((b - a) % 4 == 1 for a, b in zip(sequence, sequence[1:], strict=False))
    assert sequence == channel_sequence(2)
    starts = {channel_sequence(s)[0] for s in range(16)}
    assert len(starts) > 1  # subtasks do not all start at the same channel


def test_rebalance_batches_match_rows() -> None:
    rows_partitioner = _setup(RebalancePartitioner(), 3, 1)
    batch_partitioner = _setup(RebalancePartitioner(), 3, 1)
    for size in (5, 0, 1, 4):
        batch = pa.RecordBatch.from_pydict({"x": list(range(size))})
        by_rows = rows_partitioner.split_rows(list(range(size)))
        by_batch = batch_partitioner.split_batch(batch)
        assert [p.column("x").to_pylist() if p else [] for p in by_batch] == by_rows


def test_rescale_starts_at_first_channel_and_is_pointwise() -> None:
    partitioner = _setup(RescalePartitioner(), 3, subtask=5)
    assert partitioner.is_pointwise and not partitioner.is_broadcast
    assert partitioner.split_rows(list(range(7))) == [[0, 3, 6], [1, 4], [2, 5]]
    assert partitioner.split_rows([7, 8]) == [[], [7], [8]]


def test_shuffle_keeps_every_record_in_order_and_spreads_them() -> None:
    records = list(range(20_000))
    partitioner = _setup(ShufflePartitioner(), 4, subtask=1)
    parts = partitioner.split_rows(records)
    _assert_order_preserving_split(records, parts)
    assert all(4000 < len(part) < 6000 for part in parts)
    again = _setup(ShufflePartitioner(), 4, subtask=1).split_rows(records)
    assert again == parts
    batch = pa.RecordBatch.from_pydict({"x": records})
    batch_parts = _setup(ShufflePartitioner(), 4, subtask=1).split_batch(batch)
    assert [p.column("x").to_pylist() for p in batch_parts] == parts


def test_broadcast_gives_every_channel_everything() -> None:
    partitioner = _setup(BroadcastPartitioner(), 3)
    assert partitioner.is_broadcast
    records = [1, 2, 3]
    parts = partitioner.split_rows(records)
    assert len(parts) == 3 and all(part == records for part in parts)
    batch = pa.RecordBatch.from_pydict({"x": records})
    assert partitioner.split_batch(batch) == [batch, batch, batch]
    empty = batch.slice(0, 0)
    assert partitioner.split_batch(empty) == [None, None, None]


def test_forward_requires_one_channel() -> None:
    partitioner = ForwardPartitioner()
    assert partitioner.is_pointwise
    with pytest.raises(ValueError, match="exactly one"):
        partitioner.setup(2, 0)
    partitioner.setup(1, 4)
    records = [3, 1, 2]
    assert partitioner.split_rows(records) == [records]
    batch = pa.RecordBatch.from_pydict({"x": records})
    assert partitioner.split_batch(batch) == [batch]


def test_global_sends_everything_to_channel_zero() -> None:
    partitioner = _setup(GlobalPartitioner(), 3, subtask=2)
    assert partitioner.split_rows([1, 2]) == [[1, 2], [], []]
    batch = pa.RecordBatch.from_pydict({"x": [1, 2]})
    assert partitioner.split_batch(batch) == [batch, None, None]


def test_names_and_flags_match_flink() -> None:
    assert [
        str(p)
        for p in (
            ForwardPartitioner(),
            RebalancePartitioner(),
            RescalePartitioner(),
            ShufflePartitioner(),
            BroadcastPartitioner(),
            GlobalPartitioner(),
            KeyGroupStreamPartitioner(lambda r: r, 128),
            ArrowKeyGroupPartitioner("k", 128),
            CustomPartitionerWrapper(lambda k, n: 0, lambda r: r),
        )
    ] == [
        "FORWARD",
        "REBALANCE",
        "RESCALE",
        "SHUFFLE",
        "BROADCAST",
        "GLOBAL",
        "HASH",
        "HASH",
        "CUSTOM",
    ]
    assert not RebalancePartitioner().is_pointwise


def test_use_before_setup_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        RebalancePartitioner().split_rows([1])
    with pytest.raises(ValueError):
        RebalancePartitioner().setup(0, 0)


# ------------------------------------------------------------------------------------------
# Custom partitioner
# ------------------------------------------------------------------------------------------


def test_custom_partitioner_routes_by_function() -> None:
    partitioner = _setup(CustomPartitionerWrapper(lambda key, n: key % n, lambda r: r[0]), 3)
    records = [(i, str(i)) for i in range(10)]
    parts = partitioner.split_rows(records)
    assert parts == [[r for r in records if r[0] % 3 == c] for c in range(3)]
    batch = pa.RecordBatch.from_pylist([{"k": i} for i in range(10)])
    batch_partitioner = _setup(
        CustomPartitionerWrapper(lambda key, n: key % n, lambda r: r["k"]), 3
    )
    assert [p.column("k").to_pylist() for p in batch_partitioner.split_batch(batch)] == [
        [r[0] for r in part] for part in parts
    ]


def test_custom_partitioner_out_of_range_is_a_clear_error() -> None:
    partitioner = _setup(CustomPartitionerWrapper(lambda key, n: key, lambda r: r), 3)
    with pytest.raises(ValueError) as info:
        partitioner.split_rows([0, 1, 5, 2])
    message = str(info.value)
    assert "returned channel 5" in message and "num_partitions=3" in message
    with pytest.raises(ValueError, match="returned channel -1"):
        partitioner.split_rows([-1])


def test_custom_partitioner_non_int_result_is_a_clear_error() -> None:
    partitioner = _setup(CustomPartitionerWrapper(lambda key, n: key, lambda r: r), 3)
    with pytest.raises(TypeError, match="must return an int"):
        partitioner.split_rows([0, "1"])
    with pytest.raises(TypeError, match="must return an int"):
        partitioner.split_rows([0.5])


def test_custom_partitioner_key_selector_error() -> None:
    partitioner = _setup(CustomPartitionerWrapper(lambda key, n: 0, lambda r: 1 // r), 2)
    with pytest.raises(KeySelectorError) as info:
        partitioner.split_rows([1, 0])
    assert info.value.record == 0
    assert isinstance(info.value.cause, ZeroDivisionError)


# ------------------------------------------------------------------------------------------
# Split helpers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 9, 300])
def test_split_helpers_are_stable(channels: int) -> None:
    rng = np.random.default_rng(channels)
    size = 2 * partitioner_module._SPLIT_CHUNK + 5
    records = [(i,) for i in range(size)]
    ids = rng.integers(0, channels, size).astype(np.int32)
    parts = split_rows_by_channel(records, ids, channels)
    for channel, part in enumerate(parts):
        assert part == [records[i] for i in np.flatnonzero(ids == channel)]
    batch = pa.RecordBatch.from_pydict({"i": list(range(size))})
    batch_parts = split_batch_by_channel(batch, ids, channels)
    for channel, part in enumerate(batch_parts):
        expected = np.flatnonzero(ids == channel).tolist()
        assert (part.column("i").to_pylist() if part else []) == expected


def test_split_rows_keeps_records_that_are_sequences_whole() -> None:
    records = [[1, 2], (3, 4), np.array([5, 6]), "ab", {"k": 1}]
    parts = split_rows_by_channel(records, np.array([1, 0, 1, 0, 1], np.int32), 2)
    assert parts[0] == [(3, 4), "ab"]
    assert parts[1][0] == [1, 2] and parts[1][2] == {"k": 1}
    assert parts[1][1] is records[2]


# ------------------------------------------------------------------------------------------
# Keyed rows serialised once (split_encoded)
# ------------------------------------------------------------------------------------------


class _Word(str):
    """A str subclass: hashed like a str, but not an exact str."""


@pytest.mark.parametrize("channels", [1, 2, 5])
@pytest.mark.parametrize(
    ("type_info", "records", "selector"),
    [
        # the key is a field's value itself: its Arrow column is hashed
        ("pair", [(w, i) for i, w in enumerate(["a", "été", "", "\U0001f600", "kiwi"] * 40)], 0),
        ("pair", [(f"w{i % 13}", i % 7 - 3) for i in range(300)], 1),
        ("pair", [(None if i % 5 == 0 else f"w{i % 9}", i) for i in range(300)], 0),
        # keys the string column holds but hash otherwise, or computed keys: keys hashed
        ("pair", [(_Word(f"w{i % 9}"), i) for i in range(300)], 0),
        ("pair", [(f"w{i % 9}", i) for i in range(300)], "upper"),
        ("pair", [(f"w{i % 9}", i) for i in range(300)], "both"),
        ("string", [f"w{i % 11}" for i in range(300)], "self"),
        ("row", "rows", 0),
    ],
    ids=[
        "str-field",
        "int-field",
        "none-keys",
        "str-subclass",
        "computed",
        "tuple",
        "scalar",
        "row-with-kinds",
    ],
)
def test_split_encoded_routes_like_split_rows(
    channels: int, type_info: str, records: list, selector: object
) -> None:
    from flowrun.core.records import serializer_for
    from flowrun.core.row import Row, RowKind
    from flowrun.core.typeinfo import Types

    if records == "rows":  # the row kind column travels with the rows through the take
        records = [Row(f"w{i % 9}", i) for i in range(300)]
        for row in records[::7]:
            row.set_row_kind(RowKind.UPDATE_AFTER)
    types = {
        "pair": Types.TUPLE([Types.STRING(), Types.LONG()]),
        "string": Types.STRING(),
        "row": Types.ROW([Types.STRING(), Types.LONG()]),
    }
    select = {
        0: lambda r: r[0],
        1: lambda r: r[1],
        "upper": lambda r: r[0].upper(),
        "both": lambda r: (r[0], r[1]),
        "self": lambda r: r,
    }[selector]
    serializer = serializer_for(types[type_info])
    expected = _setup(KeyGroupStreamPartitioner(select, 128), channels).split_rows(records)
    parts = _setup(KeyGroupStreamPartitioner(select, 128), channels).split_encoded(
        records, serializer.encode
    )
    assert len(parts) == channels
    for want, got in zip(expected, parts, strict=True):
        assert (got is None) == (not want)
        if want:  # the same records in the same order (compared as serialised)
            assert got.equals(serializer.encode(want)[0])


def test_split_encoded_bytes_in_a_string_field_is_a_type_error() -> None:
    """PyFlink's string coder rejects bytes; they are not silently decoded to str."""
    from flowrun.core.records import RecordTypeError, serializer_for
    from flowrun.core.typeinfo import Types

    serializer = serializer_for(Types.TUPLE([Types.STRING(), Types.LONG()]))
    records = [("w1", 1), (b"w2", 2)]
    partitioner = _setup(KeyGroupStreamPartitioner(lambda r: r[0], 128), 2)
    with pytest.raises(RecordTypeError, match="expected str, got bytes") as info:
        partitioner.split_encoded(records, serializer.encode)
    assert info.value.index == 1 and info.value.field == "f0"


def test_split_encoded_key_selector_error_comes_before_encoding() -> None:
    def encode(records: list) -> None:
        raise AssertionError("encoded before the keys were extracted")

    partitioner = _setup(KeyGroupStreamPartitioner(lambda r: r[5], 128), 2)
    with pytest.raises(KeySelectorError, match="IndexError"):
        partitioner.split_encoded([("a", 1)], encode)
    assert partitioner.split_encoded([], encode) == [None, None]


def test_split_encoded_field_selector_error_comes_before_the_type_error() -> None:
    """A selector ``r[j]`` takes its keys from the encoded column; when encoding fails on a
    record the selector also fails on, the selector's error is the one raised."""
    from flowrun.core.records import serializer_for
    from flowrun.core.typeinfo import Types

    encode = serializer_for(Types.TUPLE([Types.STRING(), Types.LONG()])).encode
    partitioner = _setup(KeyGroupStreamPartitioner(lambda r: r[1], 128), 2)
    with pytest.raises(KeySelectorError, match="IndexError"):
        partitioner.split_encoded([("a", 1), ("b",)], encode)


@pytest.mark.parametrize("records", [[["a", 1], ["b", 2]] * 50, [("a", 1), ["b", 2]] * 50])
def test_split_encoded_field_selector_on_lists(records: list) -> None:
    """Lists are positional records too: their field column holds the selector's keys."""
    from flowrun.core.records import serializer_for
    from flowrun.core.typeinfo import Types

    serializer = serializer_for(Types.TUPLE([Types.STRING(), Types.LONG()]))
    expected = _setup(KeyGroupStreamPartitioner(lambda r: r[0], 128), 2).split_rows(records)
    parts = _setup(KeyGroupStreamPartitioner(lambda r: r[0], 128), 2).split_encoded(
        records, serializer.encode
    )
    for want, got in zip(expected, parts, strict=True):
        assert (got is None) == (not want)
        if want:
            assert got.equals(serializer.encode(want)[0])
