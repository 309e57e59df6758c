"""CollectionSource, NumberSequenceSource, DataGeneratorSource and the rate limiter."""

from __future__ import annotations

import cloudpickle
import pytest

from flowrun.core.connectors import (
    CollectionSource,
    DataGeneratorSource,
    NumberSequenceSource,
    RateLimiterStrategy,
)
from flowrun.core.connectors.collection import CollectionSplit
from flowrun.core.connectors.datagen import GeneratorSplit
from flowrun.core.connectors.number_seq import NumberSequenceSplit, split_range


def drain(reader, max_records=1000):
    reader.open()
    out = []
    while (got := reader.poll(max_records)) is not None:
        assert len(got) <= max_records
        out.extend(got)
    reader.close()
    return out


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- collection ---------------------------------------------------------------------------


def test_collection_slices_and_snapshot():
    items = ["a", 1, None, (2, 3), {"k": "v"}]
    source = CollectionSource(items)
    assert source.max_parallelism() == 1 and source.is_bounded() and not source.produces_arrow()
    reader = source.create_reader(0, 1)
    reader.open()
    assert reader.snapshot_state(1) == [CollectionSplit(0)]
    assert reader.poll(2) == ["a", 1]
    assert reader.snapshot_state(2) == [CollectionSplit(2)]
    assert reader.poll(2) == [None, (2, 3)]
    assert reader.poll(2) == [{"k": "v"}]
    assert reader.snapshot_state(3) == []
    assert reader.poll(2) is None
    assert drain(CollectionSource([]).create_reader(0, 1)) == []


def test_collection_copies_input_and_refuses_parallelism():
    items = [1, 2]
    source = CollectionSource(items)
    items.append(3)
    assert drain(source.create_reader(0, 1)) == [1, 2]
    with pytest.raises(ValueError, match="parallelism 1"):
        source.create_reader(0, 2)


# --- number sequence ----------------------------------------------------------------------


def test_split_range_matches_flink_rule():
    # 10 numbers over 3 readers: 4, 3, 3 (the first n % p readers get one more)
    assert [split_range(0, 10, 3, i) for i in range(3)] == [range(0, 4), range(4, 7), range(7, 10)]
    assert [split_range(0, 2, 4, i) for i in range(4)] == [
        range(0, 1),
        range(1, 2),
        range(2, 2),
        range(2, 2),
    ]


@pytest.mark.parametrize("parallelism", range(1, 8))
def test_number_sequence_inclusive_contiguous_ordered(parallelism):
    source = NumberSequenceSource(-3, 20)
    outputs = [drain(source.create_reader(i, parallelism), 5) for i in range(parallelism)]
    assert [n for out in outputs for n in out] == list(range(-3, 21))
    for out in outputs:
        assert out == sorted(out) and all(type(n) is int for n in out)
        if out:
            assert out == list(range(out[0], out[-1] + 1))


def test_number_sequence_details():
    assert drain(NumberSequenceSource(7, 7).create_reader(0, 1)) == [7]
    assert drain(NumberSequenceSource(1, 2).create_reader(2, 3)) == []
    big = NumberSequenceSource(0, 999_999).create_reader(0, 1)
    big.open()
    assert big.poll(300_000) == list(range(300_000))
    assert big.snapshot_state(1) == [NumberSequenceSplit(300_000, 1_000_000)]
    with pytest.raises(ValueError, match="start"):
        NumberSequenceSource(5, 4)
    source = NumberSequenceSource(1, 10)
    assert (source.get_from(), source.get_to()) == (1, 10)
    assert source.max_parallelism() is None and source.is_bounded()


# --- data generator -----------------------------------------------------------------------


@pytest.mark.parametrize("parallelism", range(1, 8))
def test_bounded_generator_contiguous_ranges(parallelism):
    source = DataGeneratorSource(lambda i: f"e{i}", 23)
    outputs = [drain(source.create_reader(i, parallelism), 4) for i in range(parallelism)]
    assert [x for out in outputs for x in out] == [f"e{i}" for i in range(23)]
    assert [len(out) for out in outputs] == [
        len(split_range(0, 23, parallelism, i)) for i in range(parallelism)
    ]


def test_unbounded_generator_strides_and_snapshot():
    source = DataGeneratorSource(lambda i: i * 10, None)
    assert not source.is_bounded()
    readers = [source.create_reader(i, 3) for i in range(3)]
    for r in readers:
        r.open()
    assert [r.poll(4) for r in readers] == [[0, 30, 60, 90], [10, 40, 70, 100], [20, 50, 80, 110]]
    assert readers[1].snapshot_state(1) == [GeneratorSplit(13, None, 3, 1 / 3)]
    assert readers[1].next_wakeup() is None


def test_generator_count_zero_and_validation():
    assert drain(DataGeneratorSource(str, 0).create_reader(0, 1)) == []
    with pytest.raises(ValueError):
        DataGeneratorSource(str, -1)
    source = DataGeneratorSource(str, 3, type_info="STRING")
    assert source.get_produced_type() == "STRING"


def test_rate_limited_generator_with_injected_clock():
    clock = FakeClock(100.0)
    strategy = RateLimiterStrategy.per_second(20, clock=clock)
    source = DataGeneratorSource(lambda i: i, 10, strategy)
    reader = source.create_reader(0, 2)  # 10/s for this reader; indices 0..4
    reader.open()
    assert reader.poll(100) == [0]  # the first record is due at once
    assert reader.poll(100) == []
    assert reader.next_wakeup() == pytest.approx(100.1)
    clock.now = 100.099
    assert reader.poll(100) == []
    clock.now = 100.1
    assert reader.poll(100) == [1]
    clock.now = 100.35
    assert reader.poll(1) == [2]  # max_records still applies
    assert reader.poll(100) == [3]  # due at 100.3
    assert reader.next_wakeup() == pytest.approx(100.4)
    clock.now = 105.0
    assert reader.poll(100) == [4]
    assert reader.poll(100) is None
    assert reader.next_wakeup() is None


def test_rate_limiter_average_rate_and_burst_cap():
    clock = FakeClock(0.0)
    limiter = RateLimiterStrategy.per_second(1000, clock=clock).create_rate_limiter(4)
    granted = 0
    for step in range(1001):  # 10 seconds in 10 ms steps at 250/s per reader
        clock.now = step * 0.01
        granted += limiter.acquire(10_000)
    assert granted == 2501  # the first permit at t=0 plus 250 per second
    clock.now = 1000.0  # a long stall: at most one second's worth comes out at once
    assert limiter.acquire(10_000) == 250
    assert limiter.acquire(10_000) == 0
    assert limiter.next_available() == pytest.approx(1000.004)
    clock.now = 1000.004
    assert limiter.acquire(10_000) == 1


def test_rate_limiter_strategies():
    unlimited = RateLimiterStrategy.no_op().create_rate_limiter(3)
    assert unlimited.acquire(12345) == 12345 and unlimited.next_available() is None
    with pytest.raises(ValueError):
        RateLimiterStrategy.per_second(0)
    slow = RateLimiterStrategy.per_second(1, clock=FakeClock(0.0)).create_rate_limiter(4)
    assert slow.acquire(5) == 1 and slow.next_available() == pytest.approx(4.0)


def test_sources_survive_pickling():
    for source in (
        CollectionSource([1, 2]),
        NumberSequenceSource(1, 2),
        DataGeneratorSource(lambda i: -i, 2, RateLimiterStrategy.per_second(1000)),
    ):
        clone = cloudpickle.loads(cloudpickle.dumps(source))
        assert drain(clone.create_reader(0, 1)) == drain(source.create_reader(0, 1))
