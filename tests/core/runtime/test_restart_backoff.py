"""Restart backoff strategies on an injected clock, and create_restart_strategy's config rules."""

from __future__ import annotations

import doctest
import importlib
import random

import pytest

from flowrun.core.config import Configuration, ConfigurationError
from flowrun.core.runtime.restart_backoff import (
    ExponentialDelayRestartBackoffTimeStrategy,
    FailureRateRestartBackoffTimeStrategy,
    FixedDelayRestartBackoffTimeStrategy,
    NoRestartBackoffTimeStrategy,
    create_restart_strategy,
    monotonic_ms,
)

MAX_INT = 2**31 - 1


class ManualClock:
    """Milliseconds that move only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms


def _decisions(strategy, failures: int, clock: ManualClock | None = None, step: float = 0):
    out = []
    for i in range(failures):
        strategy.notify_failure(RuntimeError(f"failure {i}"))
        out.append(strategy.can_restart())
        if clock is not None:
            clock.advance(step)
    return out


# -- no restart / fixed delay ---------------------------------------------------------------


def test_no_restart_never_restarts():
    strategy = NoRestartBackoffTimeStrategy()
    assert strategy.can_restart() is False
    strategy.notify_failure("boom")
    assert strategy.can_restart() is False


def test_fixed_delay_allows_exactly_the_configured_attempts_with_its_delay():
    strategy = FixedDelayRestartBackoffTimeStrategy(3, 250)
    assert strategy.can_restart() is True  # before any failure, as in Flink
    assert _decisions(strategy, 5) == [True, True, True, False, False]
    assert strategy.get_backoff_time() == 250


def test_fixed_delay_with_zero_attempts_fails_on_the_first_failure():
    strategy = FixedDelayRestartBackoffTimeStrategy(0, 0)
    assert _decisions(strategy, 1) == [False]


@pytest.mark.parametrize(
    "args,needle",
    [
        ((-1, 0), "restart attempts must be at least 0, got -1"),
        ((1, -5), "must be at least 0 ms, got -5"),
        ((True, 0), "restart attempts must be at least 0, got True"),
    ],
)
def test_fixed_delay_rejects_bad_arguments(args, needle):
    with pytest.raises(ValueError, match=needle):
        FixedDelayRestartBackoffTimeStrategy(*args)


# -- failure rate ---------------------------------------------------------------------------


def test_failure_rate_fails_when_the_limit_is_reached_within_the_interval():
    clock = ManualClock()
    strategy = FailureRateRestartBackoffTimeStrategy(3, 10_000, 500, clock=clock)
    # Flink counts the failure being handled: the third one inside 10 s fails the job.
    assert _decisions(strategy, 3, clock, step=1_000) == [True, True, False]
    assert strategy.get_backoff_time() == 500


def test_failure_rate_window_slides_with_the_clock():
    clock = ManualClock(1_000_000)
    strategy = FailureRateRestartBackoffTimeStrategy(2, 100, 0, clock=clock)
    strategy.notify_failure("t=0")
    clock.advance(50)
    strategy.notify_failure("t=50")
    assert strategy.can_restart() is False  # two failures within 100 ms
    clock.advance(50)  # t=100: oldest failure is exactly 100 ms old, not more
    assert strategy.can_restart() is False
    clock.advance(1)  # t=101: the failure at t=0 left the window
    assert strategy.can_restart() is True
    strategy.notify_failure("t=101")  # window now holds t=50 and t=101
    assert strategy.can_restart() is False
    clock.advance(50)  # t=151: 151 - 50 = 101 > 100
    assert strategy.can_restart() is True


def test_failure_rate_with_spaced_failures_restarts_forever():
    clock = ManualClock()
    strategy = FailureRateRestartBackoffTimeStrategy(1, 1, 0, clock=clock)
    for _ in range(5):
        assert strategy.can_restart() is True
        strategy.notify_failure("spaced")
        clock.advance(2)
    assert strategy.can_restart() is True


def test_failure_rate_default_limit_of_one_fails_on_a_failure_handled_at_once():
    # Flink 1.15's semantics of max-failures-per-interval=1 (the default): a failure is in
    # its own window, so with no time passing between notify and check, no restart.
    clock = ManualClock()
    strategy = create_restart_strategy(
        Configuration({"restart-strategy": "failure-rate"}), clock=clock
    )
    assert isinstance(strategy, FailureRateRestartBackoffTimeStrategy)
    assert _decisions(strategy, 1) == [False]


@pytest.mark.parametrize(
    "args,needle",
    [
        ((0, 100, 0), "failures per interval must be greater than 0, got 0"),
        ((1, 0, 0), "failures interval must be greater than 0 ms, got 0"),
        ((1, 100, -1), "backoff time must be at least 0 ms, got -1"),
    ],
)
def test_failure_rate_rejects_bad_arguments(args, needle):
    with pytest.raises(ValueError, match=needle):
        FailureRateRestartBackoffTimeStrategy(*args)


# -- exponential delay ----------------------------------------------------------------------


def _exponential(
    clock, initial=100, maximum=1_000, multiplier=2.0, threshold=10_000, jitter=0.0, rng=None
):
    return ExponentialDelayRestartBackoffTimeStrategy(
        initial, maximum, multiplier, threshold, jitter, clock=clock, rng=rng
    )


def test_exponential_delay_grows_by_the_multiplier_up_to_the_cap():
    clock = ManualClock()
    strategy = _exponential(clock)
    delays = []
    for _ in range(7):
        strategy.notify_failure("boom")
        assert strategy.can_restart() is True
        delays.append(strategy.get_backoff_time())
        clock.advance(10)
    assert delays == [100, 200, 400, 800, 1000, 1000, 1000]


def test_exponential_delay_truncates_to_whole_ms_like_java():
    clock = ManualClock()
    strategy = _exponential(clock, initial=3, maximum=100, multiplier=1.5)
    delays = []
    for _ in range(6):
        strategy.notify_failure("boom")
        delays.append(strategy.get_backoff_time())
    # 3 -> 4 (4.5) -> 6 -> 9 -> 13 (13.5) -> 19 (19.5)
    assert delays == [3, 4, 6, 9, 13, 19]


def test_exponential_delay_resets_after_threshold_plus_current_backoff():
    clock = ManualClock()
    strategy = _exponential(clock, threshold=10_000)
    strategy.notify_failure("1")  # 100
    strategy.notify_failure("2")  # 200
    assert strategy.get_backoff_time() == 200
    clock.advance(10_000 + 200 - 1)  # one ms short of threshold + current backoff
    strategy.notify_failure("3")
    assert strategy.get_backoff_time() == 400
    clock.advance(10_000 + 400)  # exactly threshold + current backoff: reset (>=)
    strategy.notify_failure("4")
    assert strategy.get_backoff_time() == 100
    assert strategy.current_backoff_ms == 100


def test_exponential_delay_first_failure_waits_the_initial_backoff_whatever_the_clock():
    for start in (0.0, 5.0, 1e12):
        strategy = _exponential(ManualClock(start), initial=70, maximum=700)
        strategy.notify_failure("first")
        assert strategy.get_backoff_time() == 70


def test_exponential_delay_jitter_stays_within_bounds_and_reaches_both_ends():
    clock = ManualClock()
    strategy = _exponential(clock, initial=200, maximum=10_000, jitter=0.1, rng=random.Random(7))
    strategy.notify_failure("first")
    samples = [strategy.get_backoff_time() for _ in range(3_000)]
    assert min(samples) == 180 and max(samples) == 220  # 200 +- int(200 * 0.1)
    assert len(set(samples)) == 41  # every ms in [180, 220]


def test_exponential_delay_jitter_never_exceeds_the_maximum():
    clock = ManualClock()
    strategy = _exponential(clock, initial=500, maximum=1_000, jitter=0.5, rng=random.Random(3))
    for _ in range(5):
        strategy.notify_failure("boom")
    assert strategy.current_backoff_ms == 1_000
    samples = [strategy.get_backoff_time() for _ in range(2_000)]
    assert all(500 <= d <= 1_000 for d in samples)  # 1000 +- 500, capped at 1000
    # every non-negative jitter (501 of 1001 values) lands on the cap: about half the samples
    assert 900 < samples.count(1_000) < 1_100


def test_exponential_delay_jitter_is_reproducible_with_a_seeded_rng():
    def run(seed):
        strategy = _exponential(ManualClock(), jitter=1.0, rng=random.Random(seed))
        strategy.notify_failure("boom")
        return [strategy.get_backoff_time() for _ in range(20)]

    assert run(11) == run(11)
    assert all(0 <= d <= 200 for d in run(11))


@pytest.mark.parametrize(
    "args,needle",
    [
        ((0, 10, 2.0, 10, 0.1), "initial_backoff must be at least 1 ms, got 0 ms"),
        ((10, 0, 2.0, 10, 0.1), "max_backoff must be at least 1 ms, got 0 ms"),
        (
            (20, 10, 2.0, 10, 0.1),
            r"initial_backoff \(20 ms\) cannot be higher than max_backoff \(10 ms\)",
        ),
        ((1, 10, 1.0, 10, 0.1), "backoff_multiplier must be greater than 1, got 1.0"),
        ((1, 10, 2.0, 0, 0.1), "reset_backoff_threshold must be at least 1 ms, got 0 ms"),
        ((1, 10, 2.0, 10, 1.5), r"jitter_factor must be within \[0, 1\], got 1.5"),
    ],
)
def test_exponential_delay_rejects_bad_arguments(args, needle):
    with pytest.raises(ValueError, match=needle):
        ExponentialDelayRestartBackoffTimeStrategy(*args)


def test_default_clock_is_monotonic_milliseconds():
    first = monotonic_ms()
    second = monotonic_ms()
    assert second >= first > 0
    strategy = FailureRateRestartBackoffTimeStrategy(2, 60_000, 0)
    assert _decisions(strategy, 2) == [True, False]


# -- create_restart_strategy ----------------------------------------------------------------


def test_unset_strategy_without_checkpointing_is_no_restart():
    assert isinstance(create_restart_strategy(Configuration()), NoRestartBackoffTimeStrategy)


def test_unset_strategy_with_checkpointing_is_fixed_delay_forever_every_second():
    strategy = create_restart_strategy(Configuration({"execution.checkpointing.interval": "10 s"}))
    assert isinstance(strategy, FixedDelayRestartBackoffTimeStrategy)
    assert (strategy.max_attempts, strategy.backoff_ms) == (MAX_INT, 1000)
    assert _decisions(strategy, 1000) == [True] * 1000


@pytest.mark.parametrize("name", ["none", "off", "disable", "NONE", " Off "])
def test_no_restart_names(name):
    conf = Configuration({"restart-strategy": name, "execution.checkpointing.interval": "1 s"})
    assert conf.get_string("restart-strategy") == "none"
    assert isinstance(create_restart_strategy(conf), NoRestartBackoffTimeStrategy)


@pytest.mark.parametrize("name", ["fixed-delay", "fixeddelay", "FixedDelay"])
def test_fixed_delay_from_config(name):
    conf = Configuration(
        {
            "restart-strategy": name,
            "restart-strategy.fixed-delay.attempts": "2",
            "restart-strategy.fixed-delay.delay": "1 min",
        }
    )
    strategy = create_restart_strategy(conf)
    assert isinstance(strategy, FixedDelayRestartBackoffTimeStrategy)
    assert strategy.get_backoff_time() == 60_000
    assert _decisions(strategy, 3) == [True, True, False]


def test_fixed_delay_defaults_are_flinks():
    strategy = create_restart_strategy(Configuration({"restart-strategy": "fixed-delay"}))
    assert (strategy.max_attempts, strategy.backoff_ms) == (1, 1000)


@pytest.mark.parametrize("name", ["failure-rate", "failurerate"])
def test_failure_rate_from_config_uses_the_injected_clock(name):
    clock = ManualClock()
    conf = Configuration(
        {
            "restart-strategy": name,
            "restart-strategy.failure-rate.max-failures-per-interval": "2",
            "restart-strategy.failure-rate.failure-rate-interval": "2 s",
            "restart-strategy.failure-rate.delay": "300 ms",
        }
    )
    strategy = create_restart_strategy(conf, clock=clock)
    assert isinstance(strategy, FailureRateRestartBackoffTimeStrategy)
    assert (strategy.max_failures_per_interval, strategy.interval_ms) == (2, 2000)
    assert strategy.get_backoff_time() == 300
    assert _decisions(strategy, 2, clock, step=1_000) == [True, False]
    clock.advance(1_001)  # now 3001 ms after the first failure, 2001 after the second
    assert strategy.can_restart() is True


def test_failure_rate_defaults_are_flinks():
    strategy = create_restart_strategy(Configuration({"restart-strategy": "failure-rate"}))
    assert (strategy.max_failures_per_interval, strategy.interval_ms, strategy.backoff_ms) == (
        1,
        60_000,
        1000,
    )


@pytest.mark.parametrize("name", ["exponential-delay", "exponentialdelay"])
def test_exponential_delay_from_config(name):
    clock = ManualClock()
    conf = Configuration(
        {
            "restart-strategy": name,
            "restart-strategy.exponential-delay.initial-backoff": "10 ms",
            "restart-strategy.exponential-delay.max-backoff": "1 s",
            "restart-strategy.exponential-delay.backoff-multiplier": "3",
            "restart-strategy.exponential-delay.reset-backoff-threshold": "1 min",
            "restart-strategy.exponential-delay.jitter-factor": "0",
        }
    )
    strategy = create_restart_strategy(conf, clock=clock)
    assert isinstance(strategy, ExponentialDelayRestartBackoffTimeStrategy)
    delays = []
    for _ in range(6):
        strategy.notify_failure("boom")
        delays.append(strategy.get_backoff_time())
    assert delays == [10, 30, 90, 270, 810, 1000]
    clock.advance(61_000)
    strategy.notify_failure("after a quiet minute")
    assert strategy.get_backoff_time() == 10


def test_exponential_delay_defaults_are_flinks():
    strategy = create_restart_strategy(Configuration({"restart-strategy": "exponential-delay"}))
    assert (
        strategy.initial_backoff_ms,
        strategy.max_backoff_ms,
        strategy.multiplier,
        strategy.reset_threshold_ms,
        strategy.jitter_factor,
    ) == (1000, 300_000, 2.0, 3_600_000, 0.1)


def test_exponential_delay_initial_above_maximum_names_both_keys():
    conf = Configuration(
        {
            "restart-strategy": "exponential-delay",
            "restart-strategy.exponential-delay.initial-backoff": "10 min",
        }
    )
    with pytest.raises(ConfigurationError) as info:
        create_restart_strategy(conf)
    assert str(info.value) == (
        "restart-strategy.exponential-delay.initial-backoff (600000 ms) cannot be higher than "
        "restart-strategy.exponential-delay.max-backoff (300000 ms)"
    )


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("restart-strategy", "sometimes", "unknown restart strategy 'sometimes'; accepted: none"),
        ("restart-strategy.fixed-delay.attempts", "-1", "must be within 0..2147483647, got -1"),
        ("restart-strategy.fixed-delay.attempts", "three", "invalid literal"),
        ("restart-strategy.fixed-delay.delay", "soon", "expected a duration"),
        ("restart-strategy.fixed-delay.delay", "-1 s", "must be at least 0 ms, got -1000 ms"),
        ("restart-strategy.failure-rate.max-failures-per-interval", "0", "must be within 1.."),
        ("restart-strategy.failure-rate.failure-rate-interval", "0", "must be at least 1 ms"),
        ("restart-strategy.exponential-delay.backoff-multiplier", "1", "must be within (1.0, inf)"),
        ("restart-strategy.exponential-delay.backoff-multiplier", "nan", "must be a finite number"),
        ("restart-strategy.exponential-delay.jitter-factor", "1.01", "must be within [0.0, 1.0]"),
        ("restart-strategy.exponential-delay.initial-backoff", "0 ms", "must be at least 1 ms"),
    ],
)
def test_bad_restart_values_are_rejected_naming_the_key(key, value, needle):
    with pytest.raises(ConfigurationError) as info:
        Configuration().set_string(key, value)
    assert str(info.value).startswith(f"invalid value for {key}: ")
    assert needle in str(info.value)


def test_values_set_from_code_are_typed_like_strings():
    from datetime import timedelta

    from flowrun.core.time import Duration

    conf = Configuration()
    conf.set("restart-strategy.fixed-delay.delay", timedelta(seconds=2))
    assert conf.get("restart-strategy.fixed-delay.delay") == 2000
    conf.set("restart-strategy.failure-rate.delay", Duration.of_millis(1500))
    assert conf.get("restart-strategy.failure-rate.delay") == 1500
    conf.set("restart-strategy.exponential-delay.backoff-multiplier", 3)
    assert conf.get("restart-strategy.exponential-delay.backoff-multiplier") == 3.0
    with pytest.raises(ConfigurationError, match="expected an integer, got 2.5"):
        conf.set("restart-strategy.fixed-delay.attempts", 2.5)
    with pytest.raises(ConfigurationError, match="expected a duration, got True"):
        conf.set("restart-strategy.fixed-delay.delay", True)


def test_create_restart_strategy_needs_a_configuration():
    with pytest.raises(TypeError, match="expects a Configuration, got"):
        create_restart_strategy({"restart-strategy": "none"})


def test_each_call_starts_a_fresh_failure_history():
    conf = Configuration({"restart-strategy": "fixed-delay"})
    first = create_restart_strategy(conf)
    assert _decisions(first, 2) == [True, False]
    assert _decisions(create_restart_strategy(conf), 1) == [True]


def test_docstring_examples():
    module = importlib.import_module("flowrun.core.runtime.restart_backoff")
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 10
