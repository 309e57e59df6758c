"""Keyed timers: dedup, order, deletion, and snapshots that restore at another parallelism."""

from __future__ import annotations

from flowrun.core.functions import TimeDomain
from flowrun.core.runtime.timer_service import InternalTimerService
from flowrun.state.key_groups import KeyGroupRange, assign_to_key_group
from flowrun.state.serializers import key_serializer_for

MAX_P = 128


def _service_with(keys, ts_of):
    service = InternalTimerService(lambda: 0)
    for key in keys:
        kg = assign_to_key_group(key, MAX_P)
        service.register(TimeDomain.EVENT_TIME, ts_of(key), key, kg)
        service.register(TimeDomain.PROCESSING_TIME, ts_of(key) + 1, key, kg)
    return service


def test_fire_in_timestamp_order_once_and_deleted_timers_never():
    service = InternalTimerService(lambda: 0)
    for ts in (30, 10, 20, 10):
        service.register(TimeDomain.EVENT_TIME, ts, "k", 5)
    service.delete(TimeDomain.EVENT_TIME, 20, "k", 5)
    fired = []
    service.advance_watermark(25, lambda ts, key, kg, d: fired.append(ts))
    assert fired == [10]
    service.advance_watermark(100, lambda ts, key, kg, d: fired.append(ts))
    assert fired == [10, 30]
    assert len(service) == 0


def test_timer_snapshot_of_p3_restores_into_p2_and_p5():
    keys = [f"key-{i}" for i in range(500)] + list(range(300))
    ser = key_serializer_for(None)
    old = []
    for i in range(3):
        rng = KeyGroupRange.of_operator(MAX_P, 3, i)
        mine = [k for k in keys if assign_to_key_group(k, MAX_P) in rng]
        old.append(_service_with(mine, lambda k: len(str(k)) * 7).snapshot(ser))
    all_batches = [b for batches in old for b in batches]
    for new_p in (2, 5):
        restored = {}
        for i in range(new_p):
            rng = KeyGroupRange.of_operator(MAX_P, new_p, i)
            service = InternalTimerService(lambda: 0)
            service.restore(all_batches, ser, rng)
            got: list = []

            def collect(ts, key, kg, d, got=got):
                got.append((key, ts, d))

            service.advance_watermark(10**9, collect)
            service.fire_processing_time(10**9, collect)
            for key, ts, d in got:
                assert assign_to_key_group(key, MAX_P) in rng
                restored.setdefault(key, set()).add((ts, d))
        assert restored == {
            k: {
                (len(str(k)) * 7, TimeDomain.EVENT_TIME),
                (len(str(k)) * 7 + 1, TimeDomain.PROCESSING_TIME),
            }
            for k in keys
        }
