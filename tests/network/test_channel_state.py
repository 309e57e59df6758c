"""Channel state: the file format round-trips, and replay yields in-flight rows in order."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flowrun.network.channel_state import (
    CONSUMER,
    PENDING,
    PRODUCER,
    ChannelStateEntry,
    ChannelStateError,
    decode_entries,
    encode_entries,
    replay_batches,
)


def _stream(values: list[int]) -> bytes:
    batch = pa.record_batch({"v": pa.array(values, pa.int64())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def test_entries_round_trip_through_the_file_format() -> None:
    entries = [
        ChannelStateEntry(3, 1, 0, PENDING, buffers=[_stream([1, 2])]),
        ChannelStateEntry(3, 1, 2, CONSUMER, b"schema", [b"frag"], [b"a", b"bc"]),
        ChannelStateEntry(3, 1, 2, PRODUCER, buffers=[b"d"]),
    ]
    assert decode_entries(encode_entries(entries)) == entries


def test_pending_rows_replay_before_every_channel_of_their_consumer() -> None:
    # Rows decoded before the barrier were read before anything still queued in a channel.
    pending = ChannelStateEntry(0, 0, 0, PENDING, buffers=[_stream([1, 2, 3])])
    other = ChannelStateEntry(0, 1, 0, PENDING, buffers=[_stream([7])])
    empty_channel = ChannelStateEntry(0, 0, 5, CONSUMER)
    replayed = replay_batches([empty_channel, other, pending])
    rows = [(consumer, b.column(0).to_pylist()) for consumer, batches in replayed for b in batches]
    assert rows[:2] == [(1, [7]), (0, [1, 2, 3])]
    assert [consumer for consumer, _ in replayed][:2] == [1, 0]


def test_a_truncated_file_is_a_clear_error() -> None:
    data = encode_entries([ChannelStateEntry(0, 0, 0, PENDING, buffers=[_stream([1])])])
    with pytest.raises(ChannelStateError, match="truncated"):
        decode_entries(data[:-5])
