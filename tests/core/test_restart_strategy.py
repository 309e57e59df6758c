"""RestartStrategies configurations and env.set_restart_strategy / get_restart_strategy."""

from __future__ import annotations

import doctest
import importlib
from datetime import timedelta

import pytest

from flowrun.core import RestartStrategies, StreamExecutionEnvironment
from flowrun.core.config import Configuration, ConfigurationError
from flowrun.core.restart_strategy import (
    ExponentialDelayRestartStrategyConfiguration,
    FailureRateRestartStrategyConfiguration,
    FallbackRestartStrategyConfiguration,
    FixedDelayRestartStrategyConfiguration,
    NoRestartStrategyConfiguration,
)
from flowrun.core.runtime.restart_backoff import (
    ExponentialDelayRestartBackoffTimeStrategy,
    FailureRateRestartBackoffTimeStrategy,
    FixedDelayRestartBackoffTimeStrategy,
    NoRestartBackoffTimeStrategy,
    create_restart_strategy,
)
from flowrun.core.time import Duration


def test_factories_build_the_configurations_with_their_getters():
    fixed = RestartStrategies.fixed_delay_restart(3, 10_000)
    assert isinstance(fixed, FixedDelayRestartStrategyConfiguration)
    assert fixed.get_restart_attempts() == 3
    assert fixed.get_delay_between_attempts_interval() == timedelta(seconds=10)

    rate = RestartStrategies.failure_rate_restart(5, timedelta(minutes=5), 2_000)
    assert isinstance(rate, FailureRateRestartStrategyConfiguration)
    assert rate.get_max_failure_rate() == 5
    assert rate.get_failure_interval() == timedelta(minutes=5)
    assert rate.get_delay_between_attempts_interval() == timedelta(seconds=2)

    expo = RestartStrategies.exponential_delay_restart(
        Duration.of_millis(10), timedelta(minutes=2), 1.5, 3_600_000, 0.2
    )
    assert isinstance(expo, ExponentialDelayRestartStrategyConfiguration)
    assert expo.get_initial_backoff() == timedelta(milliseconds=10)
    assert expo.get_max_backoff() == timedelta(minutes=2)
    assert expo.get_backoff_multiplier() == 1.5
    assert expo.get_reset_backoff_threshold() == timedelta(hours=1)
    assert expo.get_jitter_factor() == 0.2

    assert isinstance(RestartStrategies.no_restart(), NoRestartStrategyConfiguration)
    assert isinstance(RestartStrategies.fall_back_restart(), FallbackRestartStrategyConfiguration)
    # PyFlink nests the classes in RestartStrategies
    assert RestartStrategies.FixedDelayRestartStrategyConfiguration is type(fixed)


def test_configurations_compare_and_hash_by_value():
    assert RestartStrategies.fixed_delay_restart(3, 1000) == RestartStrategies.fixed_delay_restart(
        3, timedelta(seconds=1)
    )
    assert RestartStrategies.fixed_delay_restart(3, 1000) != RestartStrategies.fixed_delay_restart(
        4, 1000
    )
    assert RestartStrategies.no_restart() == RestartStrategies.no_restart()
    assert RestartStrategies.no_restart() != RestartStrategies.fall_back_restart()
    assert RestartStrategies.failure_rate_restart(
        1, 10, 10
    ) != RestartStrategies.fixed_delay_restart(1, 10)
    configs = {
        RestartStrategies.failure_rate_restart(2, 60_000, 0),
        RestartStrategies.failure_rate_restart(2, timedelta(minutes=1), timedelta(0)),
        RestartStrategies.exponential_delay_restart(1, 2, 2.0, 3, 0.0),
        RestartStrategies.exponential_delay_restart(1, 2, 2, 3, 0),
    }
    assert len(configs) == 2


def test_descriptions():
    assert RestartStrategies.no_restart().get_description() == "Restart deactivated."
    assert (
        RestartStrategies.fall_back_restart().get_description()
        == "Cluster level default restart strategy"
    )
    assert RestartStrategies.fixed_delay_restart(3, 500).get_description() == (
        "Restart with fixed delay (500 ms). #3 restart attempts."
    )
    assert RestartStrategies.failure_rate_restart(2, 60_000, 100).get_description() == (
        "Failure rate restart with maximum of 2 failures within interval 60000 ms and fixed "
        "delay 100 ms."
    )
    assert RestartStrategies.exponential_delay_restart(
        10, 1000, 2.0, 5000, 0.1
    ).get_description() == (
        "Restart with exponential delay: starting at 10 ms, increasing by 2.0, with maximum "
        "1000 ms. Delay resets after 5000 ms with jitter 0.1."
    )


@pytest.mark.parametrize(
    "build,error,needle",
    [
        (
            lambda: RestartStrategies.fixed_delay_restart(-1, 0),
            ValueError,
            "restart_attempts must be within 0..",
        ),
        (
            lambda: RestartStrategies.fixed_delay_restart(1.5, 0),
            TypeError,
            "restart_attempts must be an int, got float 1.5",
        ),
        (
            lambda: RestartStrategies.fixed_delay_restart(1, "1 s"),
            TypeError,
            "delay_between_attempts must be int milliseconds, a timedelta or a Duration, got str '1 s'",
        ),
        (
            lambda: RestartStrategies.fixed_delay_restart(1, -1),
            ValueError,
            "delay_between_attempts must be at least 0 ms, got -1 ms",
        ),
        (
            lambda: RestartStrategies.fixed_delay_restart(2**31, 0),
            ValueError,
            "restart_attempts must be within 0..2147483647, got 2147483648",
        ),
        (
            lambda: RestartStrategies.failure_rate_restart(0, 1, 1),
            ValueError,
            "max_failure_rate must be within 1..",
        ),
        (
            lambda: RestartStrategies.failure_rate_restart(1, 0, 1),
            ValueError,
            "failure_interval must be at least 1 ms, got 0 ms",
        ),
        (
            lambda: RestartStrategies.failure_rate_restart(1, 1, None),
            TypeError,
            "delay_interval must be int milliseconds",
        ),
        (
            lambda: RestartStrategies.exponential_delay_restart(5, 1, 2.0, 1, 0.1),
            ValueError,
            r"initial_backoff \(5 ms\) cannot be higher than max_backoff \(1 ms\)",
        ),
        (
            lambda: RestartStrategies.exponential_delay_restart(1, 5, 0.5, 1, 0.1),
            ValueError,
            "backoff_multiplier must be greater than 1, got 0.5",
        ),
        (
            lambda: RestartStrategies.exponential_delay_restart(1, 5, 2.0, 1, -0.1),
            ValueError,
            r"jitter_factor must be within \[0, 1\], got -0.1",
        ),
        (
            lambda: RestartStrategies.exponential_delay_restart(1, 5, "2", 1, 0.1),
            TypeError,
            "backoff_multiplier must be a number, got str '2'",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(build, error, needle):
    with pytest.raises(error, match=needle):
        build()


def test_env_default_restart_strategy_is_fallback():
    env = StreamExecutionEnvironment.get_execution_environment()
    assert env.get_restart_strategy() == RestartStrategies.fall_back_restart()
    assert env.get_configuration().get("restart-strategy") is None


@pytest.mark.parametrize(
    "strategy,entries",
    [
        (RestartStrategies.no_restart(), {"restart-strategy": "none"}),
        (
            RestartStrategies.fixed_delay_restart(4, timedelta(seconds=3)),
            {
                "restart-strategy": "fixed-delay",
                "restart-strategy.fixed-delay.attempts": 4,
                "restart-strategy.fixed-delay.delay": 3000,
            },
        ),
        (
            RestartStrategies.failure_rate_restart(3, 120_000, 50),
            {
                "restart-strategy": "failure-rate",
                "restart-strategy.failure-rate.max-failures-per-interval": 3,
                "restart-strategy.failure-rate.failure-rate-interval": 120_000,
                "restart-strategy.failure-rate.delay": 50,
            },
        ),
        (
            RestartStrategies.exponential_delay_restart(20, 2_000, 1.5, 60_000, 0.25),
            {
                "restart-strategy": "exponential-delay",
                "restart-strategy.exponential-delay.initial-backoff": 20,
                "restart-strategy.exponential-delay.max-backoff": 2000,
                "restart-strategy.exponential-delay.backoff-multiplier": 1.5,
                "restart-strategy.exponential-delay.reset-backoff-threshold": 60_000,
                "restart-strategy.exponential-delay.jitter-factor": 0.25,
            },
        ),
    ],
)
def test_set_restart_strategy_writes_flinks_keys_and_reads_back_equal(strategy, entries):
    env = StreamExecutionEnvironment.get_execution_environment()
    assert env.set_restart_strategy(strategy) is None  # PyFlink returns None
    assert env.get_configuration().to_dict() == entries
    assert env.get_restart_strategy() == strategy


def test_strategy_set_in_code_equals_the_same_strategy_given_as_flags():
    in_code = StreamExecutionEnvironment.get_execution_environment()
    in_code.set_restart_strategy(RestartStrategies.failure_rate_restart(3, 60_000, 250))
    flags = Configuration(
        {
            "restart-strategy": "failurerate",
            "restart-strategy.failure-rate.max-failures-per-interval": "3",
            "restart-strategy.failure-rate.failure-rate-interval": "1 min",
            "restart-strategy.failure-rate.delay": "250 ms",
        }
    )
    from_flags = StreamExecutionEnvironment.get_execution_environment(flags)
    assert in_code.get_configuration().to_dict() == from_flags.get_configuration().to_dict()
    assert in_code.get_restart_strategy() == from_flags.get_restart_strategy()
    strategy = create_restart_strategy(from_flags.get_configuration())
    assert isinstance(strategy, FailureRateRestartBackoffTimeStrategy)
    assert (strategy.max_failures_per_interval, strategy.interval_ms, strategy.backoff_ms) == (
        3,
        60_000,
        250,
    )


@pytest.mark.parametrize(
    "strategy,runtime_type",
    [
        (RestartStrategies.no_restart(), NoRestartBackoffTimeStrategy),
        (RestartStrategies.fixed_delay_restart(1, 1), FixedDelayRestartBackoffTimeStrategy),
        (RestartStrategies.failure_rate_restart(1, 1, 1), FailureRateRestartBackoffTimeStrategy),
        (
            RestartStrategies.exponential_delay_restart(1, 2, 2.0, 3, 0.0),
            ExponentialDelayRestartBackoffTimeStrategy,
        ),
    ],
)
def test_the_runtime_builds_the_strategy_the_env_set(strategy, runtime_type):
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_restart_strategy(strategy)
    assert type(create_restart_strategy(env.get_configuration())) is runtime_type


def test_code_overrides_flags_and_fall_back_restores_the_flags():
    flags = Configuration(
        {"restart-strategy": "fixed-delay", "restart-strategy.fixed-delay.attempts": "7"}
    )
    env = StreamExecutionEnvironment.get_execution_environment(flags)
    assert env.get_restart_strategy() == RestartStrategies.fixed_delay_restart(7, 1000)
    env.set_restart_strategy(RestartStrategies.exponential_delay_restart(1, 2, 2.0, 3, 0.0))
    env.set_restart_strategy(RestartStrategies.fall_back_restart())
    assert env.get_configuration().to_dict() == {
        "restart-strategy": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": 7,
    }
    assert env.get_restart_strategy() == RestartStrategies.fixed_delay_restart(7, 1000)


def test_fall_back_without_flags_unsets_the_strategy():
    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(1000)
    env.set_restart_strategy(RestartStrategies.no_restart())
    env.set_restart_strategy(RestartStrategies.fall_back_restart())
    assert env.get_restart_strategy() == RestartStrategies.fall_back_restart()
    # cluster default with checkpointing: fixed delay, Integer.MAX_VALUE attempts, 1 s
    strategy = create_restart_strategy(env.get_configuration())
    assert (strategy.max_attempts, strategy.backoff_ms) == (2**31 - 1, 1000)


def test_set_restart_strategy_rejects_other_objects():
    env = StreamExecutionEnvironment.get_execution_environment()
    with pytest.raises(TypeError, match="expects a configuration from RestartStrategies"):
        env.set_restart_strategy("fixed-delay")


def test_from_configuration_reports_inconsistent_exponential_keys_at_job_build():
    conf = Configuration(
        {
            "restart-strategy": "exponential-delay",
            "restart-strategy.exponential-delay.max-backoff": "10 ms",
        }
    )
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.from_collection([1, 2]).print()
    with pytest.raises(ConfigurationError, match=r"initial_backoff \(1000 ms\) cannot be higher"):
        env.get_execution_plan()


def test_docstring_examples():
    for name in ("flowrun.core.restart_strategy", "flowrun.core.environment"):
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0 and result.attempted > 0, name
