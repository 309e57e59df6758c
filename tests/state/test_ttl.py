"""StateTtlConfig (PyFlink's builder, defaults and enums), Time/Duration/Instant, TtlPolicy."""

from __future__ import annotations

import pickle
import time

import pytest

from flowrun.core.time import Duration, Instant
from flowrun.core.time import Time as CoreTime
from flowrun.core.typeinfo import Types
from flowrun.state import StateTtlConfig, Time, ValueStateDescriptor
from flowrun.state.ttl import TtlPolicy, processing_time_ms, ttl_policy_for

UpdateType = StateTtlConfig.UpdateType
StateVisibility = StateTtlConfig.StateVisibility
TtlTimeCharacteristic = StateTtlConfig.TtlTimeCharacteristic
CleanupStrategies = StateTtlConfig.CleanupStrategies
Strategies = CleanupStrategies.Strategies


# ------------------------------------------------------------------------------------------
# Time, Duration, Instant
# ------------------------------------------------------------------------------------------


def test_time_factories():
    assert Time.milliseconds(5).to_milliseconds() == 5
    assert Time.seconds(2).to_milliseconds() == 2_000
    assert Time.minutes(3).to_milliseconds() == 180_000
    assert Time.hours(1).to_milliseconds() == 3_600_000
    assert Time.days(2).to_milliseconds() == 172_800_000
    assert Time(7) == Time.milliseconds(7) and hash(Time(7)) == hash(Time.milliseconds(7))
    assert Time.hours(1) == Time.minutes(60) and Time(1) != Time(2) and Time(1) != 1
    assert pickle.loads(pickle.dumps(Time.seconds(1))) == Time.seconds(1)
    assert repr(Time.seconds(1)) == "Time.milliseconds(1000)"
    assert CoreTime is Time
    with pytest.raises(TypeError):
        Time(1.5)  # type: ignore[arg-type]


def test_duration():
    assert Duration.of_millis(1500).to_milliseconds() == 1500
    assert Duration.of_seconds(2).to_milliseconds() == 2000
    assert Duration.of_minutes(1).to_milliseconds() == 60_000
    assert Duration.of_hours(1).to_milliseconds() == 3_600_000
    assert Duration.of_days(30).to_milliseconds() == 30 * 86_400_000
    assert Duration.of_nanos(1_999_999).to_milliseconds() == 1
    assert Duration.of_nanos(5).to_nanos() == 5
    assert Duration.of_seconds(60) == Duration.of_minutes(1)
    assert hash(Duration.of_seconds(60)) == hash(Duration.of_minutes(1))
    assert Duration.of_seconds(1) != Duration.of_millis(1001) and Duration.of_seconds(1) != 1
    assert pickle.loads(pickle.dumps(Duration.of_days(1))) == Duration.of_days(1)
    assert repr(Duration.of_seconds(1)) == "Duration.of_millis(1000)"
    assert repr(Duration.of_nanos(5)) == "Duration.of_nanos(5)"
    with pytest.raises(TypeError):
        Duration.of_seconds(1.5)  # type: ignore[arg-type]


def test_instant():
    assert Instant.of_epoch_milli(1_700_000_000_123) == Instant(1_700_000_000, 123_000_000)
    assert Instant.of_epoch_milli(-1) == Instant(-1, 999_000_000)
    for millis in [0, 1, -1, -999, -1000, -1001, 1_700_000_000_123, -(2**40)]:
        assert Instant.of_epoch_milli(millis).to_epoch_milli() == millis
    assert Instant(-1, 500_000_000).to_epoch_milli() == -500
    assert Instant(1, 1_500_000_000) == Instant(2, 500_000_000)
    assert Instant(0, -1) == Instant(-1, 999_999_999)
    assert hash(Instant(1, 2)) == hash(Instant(1, 2)) and Instant(1, 2) != Instant(1, 3)
    assert Instant(1, 2) != (1, 2)
    assert repr(Instant(1, 2)) == "Instant<1, 2>"
    assert pickle.loads(pickle.dumps(Instant(3, 4))) == Instant(3, 4)
    with pytest.raises(TypeError):
        Instant(1.0, 0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# StateTtlConfig
# ------------------------------------------------------------------------------------------


def test_enums_match_pyflink():
    assert [(m.name, m.value) for m in UpdateType] == [
        ("Disabled", 0),
        ("OnCreateAndWrite", 1),
        ("OnReadAndWrite", 2),
    ]
    assert [(m.name, m.value) for m in StateVisibility] == [
        ("ReturnExpiredIfNotCleanedUp", 0),
        ("NeverReturnExpired", 1),
    ]
    assert [(m.name, m.value) for m in TtlTimeCharacteristic] == [("ProcessingTime", 0)]
    assert [(m.name, m.value) for m in Strategies] == [
        ("FULL_STATE_SCAN_SNAPSHOT", 0),
        ("INCREMENTAL_CLEANUP", 1),
        ("ROCKSDB_COMPACTION_FILTER", 2),
    ]
    assert isinstance(CleanupStrategies.EMPTY_STRATEGY, CleanupStrategies.EmptyCleanupStrategy)
    for cls in (
        CleanupStrategies.EmptyCleanupStrategy,
        CleanupStrategies.IncrementalCleanupStrategy,
        CleanupStrategies.RocksdbCompactFilterCleanupStrategy,
    ):
        assert issubclass(cls, CleanupStrategies.CleanupStrategy)
    assert repr(UpdateType.OnReadAndWrite) == "<UpdateType.OnReadAndWrite: 2>"


def test_builder_defaults():
    config = StateTtlConfig.new_builder(Time.seconds(10)).build()
    assert isinstance(StateTtlConfig.new_builder(Time.seconds(1)), StateTtlConfig.Builder)
    assert config.get_ttl() == Time.seconds(10)
    assert config.get_update_type() is UpdateType.OnCreateAndWrite
    assert config.get_state_visibility() is StateVisibility.NeverReturnExpired
    assert config.get_ttl_time_characteristic() is TtlTimeCharacteristic.ProcessingTime
    assert config.is_enabled()
    strategies = config.get_cleanup_strategies()
    assert strategies.is_cleanup_in_background()
    assert not strategies.in_full_snapshot()
    incremental = strategies.get_incremental_cleanup_strategy()
    assert (incremental.get_cleanup_size(), incremental.run_cleanup_for_every_record()) == (
        5,
        False,
    )
    compact = strategies.get_rocksdb_compact_filter_cleanup_strategy()
    assert compact.get_query_time_after_num_entries() == 1000
    assert compact.get_periodic_compaction_time() == Duration.of_days(30)
    assert strategies.get_lmdb_compact_filter_cleanup_strategy() == compact


def test_every_builder_method_is_chainable_and_takes_effect():
    b = StateTtlConfig.new_builder(Time.seconds(1))
    assert b.set_update_type(UpdateType.OnReadAndWrite) is b
    assert b.build().get_update_type() is UpdateType.OnReadAndWrite
    assert b.update_ttl_on_create_and_write() is b
    assert b.build().get_update_type() is UpdateType.OnCreateAndWrite
    assert b.update_ttl_on_read_and_write() is b
    assert b.build().get_update_type() is UpdateType.OnReadAndWrite
    assert b.set_update_type(UpdateType.Disabled).build().is_enabled() is False
    b.update_ttl_on_read_and_write()

    assert b.set_state_visibility(StateVisibility.ReturnExpiredIfNotCleanedUp) is b
    assert b.build().get_state_visibility() is StateVisibility.ReturnExpiredIfNotCleanedUp
    assert b.never_return_expired() is b
    assert b.build().get_state_visibility() is StateVisibility.NeverReturnExpired
    assert b.return_expired_if_not_cleaned_up() is b
    assert b.build().get_state_visibility() is StateVisibility.ReturnExpiredIfNotCleanedUp

    assert b.set_ttl_time_characteristic(TtlTimeCharacteristic.ProcessingTime) is b
    assert b.use_processing_time() is b
    assert b.build().get_ttl_time_characteristic() is TtlTimeCharacteristic.ProcessingTime

    assert b.set_ttl(Time.minutes(2)) is b
    assert b.build().get_ttl() == Time.minutes(2)

    assert b.cleanup_full_snapshot() is b
    assert b.build().get_cleanup_strategies().in_full_snapshot()

    assert b.cleanup_incrementally(10, True) is b
    inc = b.build().get_cleanup_strategies().get_incremental_cleanup_strategy()
    assert (inc.get_cleanup_size(), inc.run_cleanup_for_every_record()) == (10, True)

    assert b.cleanup_in_rocksdb_compact_filter(500) is b
    cf = b.build().get_cleanup_strategies().get_rocksdb_compact_filter_cleanup_strategy()
    assert cf.get_query_time_after_num_entries() == 500
    assert cf.get_periodic_compaction_time() == Duration.of_days(30)
    b.cleanup_in_rocksdb_compact_filter(400, Duration.of_days(1))
    cf = b.build().get_cleanup_strategies().get_rocksdb_compact_filter_cleanup_strategy()
    assert cf.get_periodic_compaction_time() == Duration.of_days(1)

    assert b.cleanup_in_lmdb_compact_filter(200) is b
    strategies = b.build().get_cleanup_strategies()
    lmdb = strategies.get_lmdb_compact_filter_cleanup_strategy()
    assert type(lmdb) is CleanupStrategies.RocksdbCompactFilterCleanupStrategy
    assert lmdb.get_query_time_after_num_entries() == 200
    assert strategies.get_rocksdb_compact_filter_cleanup_strategy() is lmdb
    assert strategies._strategies[Strategies.ROCKSDB_COMPACTION_FILTER] is lmdb

    assert b.disable_cleanup_in_background() is b
    config = b.build()
    assert isinstance(config, StateTtlConfig)
    assert not config.get_cleanup_strategies().is_cleanup_in_background()
    # explicitly configured strategies survive disable_cleanup_in_background()
    assert config.get_cleanup_strategies().get_incremental_cleanup_strategy() == inc
    assert config.get_cleanup_strategies().get_lmdb_compact_filter_cleanup_strategy() == lmdb


def test_disabling_background_cleanup_drops_the_defaults():
    strategies = (
        StateTtlConfig.new_builder(Time.seconds(1))
        .disable_cleanup_in_background()
        .build()
        .get_cleanup_strategies()
    )
    assert strategies.get_incremental_cleanup_strategy() is None
    assert strategies.get_rocksdb_compact_filter_cleanup_strategy() is None
    assert not strategies.in_full_snapshot()


def test_full_snapshot_uses_the_empty_strategy():
    strategies = (
        StateTtlConfig.new_builder(Time.seconds(1)).cleanup_full_snapshot().build()
    ).get_cleanup_strategies()
    assert strategies._strategies[Strategies.FULL_STATE_SCAN_SNAPSHOT] is (
        CleanupStrategies.EMPTY_STRATEGY
    )


def test_config_validation():
    b = StateTtlConfig.new_builder(Time.seconds(1))
    with pytest.raises(TypeError, match="UpdateType"):
        b.set_update_type("OnReadAndWrite")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="StateVisibility"):
        b.set_state_visibility(UpdateType.Disabled)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TtlTimeCharacteristic"):
        b.set_ttl_time_characteristic(0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        StateTtlConfig.new_builder(Time.milliseconds(0)).build()
    with pytest.raises(TypeError, match="Time"):
        StateTtlConfig.new_builder(1000).build()  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        b.cleanup_incrementally("5", False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        b.cleanup_incrementally(-1, False)
    with pytest.raises(TypeError):
        b.cleanup_in_rocksdb_compact_filter(1.5)  # type: ignore[arg-type]
    # a Duration works as the ttl too (PyFlink 2.x spells it that way)
    assert (
        StateTtlConfig.new_builder(Duration.of_seconds(3)).build().get_ttl().to_milliseconds()
        == 3000
    )


def test_config_equality_pickle_and_repr():
    def make():
        return (
            StateTtlConfig.new_builder(Time.minutes(1))
            .update_ttl_on_read_and_write()
            .cleanup_incrementally(7, True)
            .cleanup_full_snapshot()
            .build()
        )

    a, b = make(), make()
    assert a == b and hash(a) == hash(b)
    assert a != StateTtlConfig.new_builder(Time.minutes(1)).build()
    assert a != StateTtlConfig.new_builder(Time.minutes(2)).update_ttl_on_read_and_write().build()
    back = pickle.loads(pickle.dumps(a))
    assert back == a and back.get_update_type() is UpdateType.OnReadAndWrite
    assert "OnReadAndWrite" in repr(a) and "Time.milliseconds(60000)" in repr(a)
    assert "INCREMENTAL_CLEANUP" in repr(a.get_cleanup_strategies())
    direct = StateTtlConfig(
        UpdateType.OnCreateAndWrite,
        StateVisibility.NeverReturnExpired,
        TtlTimeCharacteristic.ProcessingTime,
        Time.seconds(1),
        CleanupStrategies({}, True),
    )
    assert direct == StateTtlConfig.new_builder(Time.seconds(1)).build()


# ------------------------------------------------------------------------------------------
# TtlPolicy
# ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: int = 1_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def policy(update=UpdateType.OnCreateAndWrite, visibility=StateVisibility.NeverReturnExpired):
    clock = Clock()
    config = (
        StateTtlConfig.new_builder(Time.milliseconds(100))
        .set_update_type(update)
        .set_state_visibility(visibility)
        .build()
    )
    return TtlPolicy(config, clock=clock), clock


def test_wrap_and_unwrap():
    p, clock = policy()
    stored = p.wrap(b"user")
    assert stored == (1000).to_bytes(8, "big") + b"user"
    ts, user = p.unwrap(stored)
    assert ts == 1000 and isinstance(user, memoryview) and bytes(user) == b"user"
    assert p.unwrap(p.wrap(b"", timestamp=-5)) == (-5, memoryview(b""))
    assert p.wrap(memoryview(b"mv"), timestamp=7)[8:] == b"mv"
    assert p.on_write(b"x") == p.wrap(b"x")
    clock.now = 2_000
    assert p.unwrap(p.on_write(b"x"))[0] == 2_000
    with pytest.raises(ValueError, match="8-byte timestamp"):
        p.unwrap(b"short")
    with pytest.raises(ValueError, match="8-byte timestamp"):
        p.on_read(b"short")
    with pytest.raises(ValueError, match="8-byte timestamp"):
        p.on_read_all([p.wrap(b"ok"), b"short"])
    # reads slice what they are given: bytes stay bytes, views stay views
    fresh = p.on_write(b"x")
    assert type(p.on_read(fresh)[0]) is bytes
    assert type(p.on_read(memoryview(fresh))[0]) is memoryview


def test_is_expired_boundary():
    p, clock = policy()
    assert not p.is_expired(1000, now=1099)
    assert p.is_expired(1000, now=1100)
    clock.now = 1099
    assert not p.is_expired(1000)
    clock.now = 1100
    assert p.is_expired(1000)
    assert p.is_expired_entry(p.wrap(b"v", timestamp=1000))
    assert not p.is_expired_entry(p.wrap(b"v", timestamp=1000), now=1050)


def test_on_create_and_write_never_return_expired():
    p, clock = policy(UpdateType.OnCreateAndWrite, StateVisibility.NeverReturnExpired)
    stored = p.on_write(b"v")
    clock.now = 1099
    value, write_back = p.on_read(stored)
    assert bytes(value) == b"v" and write_back is None  # reads do not prolong
    clock.now = 1100
    assert p.on_read(stored) == (None, TtlPolicy.DELETE)
    assert TtlPolicy.DELETE == b""


def test_on_create_and_write_return_expired():
    p, clock = policy(UpdateType.OnCreateAndWrite, StateVisibility.ReturnExpiredIfNotCleanedUp)
    stored = p.on_write(b"v")
    clock.now = 5000
    value, write_back = p.on_read(stored)
    assert bytes(value) == b"v" and write_back == TtlPolicy.DELETE


def test_on_read_and_write_refreshes_on_read():
    p, clock = policy(UpdateType.OnReadAndWrite, StateVisibility.NeverReturnExpired)
    stored = p.on_write(b"v")
    value, write_back = p.on_read(stored)
    assert bytes(value) == b"v" and write_back is None  # same instant: nothing to refresh
    clock.now = 1090
    value, write_back = p.on_read(stored)
    assert bytes(value) == b"v" and p.unwrap(write_back) == (1090, memoryview(b"v"))
    clock.now = 1150  # the old bytes have expired, the refreshed ones have not
    assert p.on_read(stored) == (None, TtlPolicy.DELETE)
    value, write_back = p.on_read(write_back)
    assert bytes(value) == b"v" and p.unwrap(write_back)[0] == 1150
    clock.now = 1250
    assert p.on_read(write_back) == (None, TtlPolicy.DELETE)


def test_on_read_and_write_return_expired():
    p, clock = policy(UpdateType.OnReadAndWrite, StateVisibility.ReturnExpiredIfNotCleanedUp)
    stored = p.on_write(b"v")
    clock.now = 1100
    value, write_back = p.on_read(stored)
    assert bytes(value) == b"v" and write_back == TtlPolicy.DELETE  # no refresh of expired


def test_disabled_update_type_never_expires():
    p, clock = policy(UpdateType.Disabled)
    assert not p.enabled
    stored = p.on_write(b"v")
    clock.now = 10**12
    assert not p.is_expired(0)
    value, write_back = p.on_read(stored)
    assert bytes(value) == b"v" and write_back is None
    values, keep = p.on_read_all([stored, stored])
    assert [bytes(v) for v in values] == [b"v", b"v"] and keep is None


def test_on_read_all_per_element():
    p, clock = policy(UpdateType.OnCreateAndWrite, StateVisibility.NeverReturnExpired)
    old = p.wrap(b"old", timestamp=900)
    new = p.wrap(b"new", timestamp=1050)
    clock.now = 1010
    values, keep = p.on_read_all([old, new])
    assert [bytes(v) for v in values] == [b"new"]
    assert keep == [new]
    values, keep = p.on_read_all([new])
    assert [bytes(v) for v in values] == [b"new"] and keep is None
    clock.now = 2000
    assert p.on_read_all([old, new]) == ([], [])  # everything expired: clear the list
    assert p.on_read_all([]) == ([], None)


def test_on_read_all_return_expired_and_refresh():
    p, clock = policy(UpdateType.OnReadAndWrite, StateVisibility.ReturnExpiredIfNotCleanedUp)
    old = p.wrap(b"old", timestamp=800)
    new = p.wrap(b"new", timestamp=1000)
    clock.now = 1050
    values, keep = p.on_read_all([old, new])
    assert [bytes(v) for v in values] == [b"old", b"new"]  # expired still returned
    assert len(keep) == 1 and p.unwrap(keep[0]) == (1050, memoryview(b"new"))  # refreshed


def test_cleanup_flags():
    p, _ = policy()
    assert (p.full_snapshot, p.incremental, p.compact_filter) == (False, (5, False), 1000)
    config = (
        StateTtlConfig.new_builder(Time.seconds(1))
        .cleanup_full_snapshot()
        .cleanup_incrementally(20, True)
        .cleanup_in_lmdb_compact_filter(50)
        .build()
    )
    p = TtlPolicy(config)
    assert (p.full_snapshot, p.incremental, p.compact_filter) == (True, (20, True), 50)
    p = TtlPolicy(
        StateTtlConfig.new_builder(Time.seconds(1)).disable_cleanup_in_background().build()
    )
    assert (p.full_snapshot, p.incremental, p.compact_filter) == (False, None, None)
    assert p.ttl_ms == 1000 and p.config.get_ttl() == Time.seconds(1)
    assert p.update_type is UpdateType.OnCreateAndWrite
    assert p.visibility is StateVisibility.NeverReturnExpired
    assert "ttl_ms=1000" in repr(p)


def test_default_clock_is_epoch_milliseconds():
    before = int(time.time() * 1000)
    now = processing_time_ms()
    after = int(time.time() * 1000)
    assert before - 1 <= now <= after + 1
    p = TtlPolicy(StateTtlConfig.new_builder(Time.seconds(1)).build())
    assert p.clock is processing_time_ms
    assert before - 1 <= p.unwrap(p.on_write(b""))[0] <= int(time.time() * 1000) + 1


def test_policy_needs_a_config():
    with pytest.raises(TypeError, match="StateTtlConfig"):
        TtlPolicy(Time.seconds(1))  # type: ignore[arg-type]


def test_ttl_policy_for_descriptors():
    d = ValueStateDescriptor("v", Types.INT())
    assert ttl_policy_for(d) is None
    clock = Clock(5)
    d.enable_time_to_live(StateTtlConfig.new_builder(Time.seconds(1)).build())
    p = ttl_policy_for(d, clock)
    assert isinstance(p, TtlPolicy) and p.clock is clock and p.ttl_ms == 1000
    d.enable_time_to_live(
        StateTtlConfig.new_builder(Time.seconds(1)).set_update_type(UpdateType.Disabled).build()
    )
    assert ttl_policy_for(d) is None
