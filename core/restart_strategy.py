"""Restart strategy configurations: ``pyflink.common.restart_strategy`` for flowrun.

A job says how it wants to recover from failures with a *configuration* object built by
:class:`RestartStrategies` and handed to ``env.set_restart_strategy``. The object is only a
description: ``set_restart_strategy`` writes it into the job's :class:`Configuration` under
Flink's ``restart-strategy.*`` keys, so a strategy chosen in code and one chosen with
``-D restart-strategy=fixed-delay`` reach the JobManager in the same form, and
``flowrun.core.runtime.restart_backoff.create_restart_strategy`` turns either into the
strategy that decides restarts at runtime.

Besides PyFlink's strategies there is :meth:`RestartStrategies.exponential_delay_restart`
(Java's ``exponentialDelayRestart``; PyFlink has no Python wrapper for it).

Durations are given as int milliseconds, ``datetime.timedelta`` or
:class:`flowrun.core.time.Duration`; getters return ``timedelta`` as PyFlink's do.
Configurations compare by value.

Example::

    >>> from datetime import timedelta
    >>> from flowrun.core.restart_strategy import RestartStrategies
    >>> conf = RestartStrategies.fixed_delay_restart(3, 10_000)
    >>> conf.get_restart_attempts(), conf.get_delay_between_attempts_interval()
    (3, datetime.timedelta(seconds=10))
    >>> conf == RestartStrategies.fixed_delay_restart(3, timedelta(seconds=10))
    True
    >>> conf.get_description()
    'Restart with fixed delay (10000 ms). #3 restart attempts.'
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from . import config as cfg
from .config import Configuration

__all__ = [
    "ExponentialDelayRestartStrategyConfiguration",
    "FailureRateRestartStrategyConfiguration",
    "FallbackRestartStrategyConfiguration",
    "FixedDelayRestartStrategyConfiguration",
    "NoRestartStrategyConfiguration",
    "RestartStrategies",
    "RestartStrategyConfiguration",
]

# Every key a restart strategy configuration may write; "fall back" restores all of them.
RESTART_STRATEGY_KEYS: tuple[str, ...] = tuple(
    key for key in cfg.OPTIONS if key == "restart-strategy" or key.startswith("restart-strategy.")
)


def _millis(value: Any, what: str) -> int:
    """Int ms of a duration argument; PyFlink accepts int ms and ``timedelta``."""
    if isinstance(value, bool):
        raise TypeError(
            f"{what} must be int milliseconds, a timedelta or a Duration, got {value!r}"
        )
    if isinstance(value, int):
        ms = value
    elif isinstance(value, timedelta):
        ms = value // timedelta(milliseconds=1)
    elif callable(getattr(value, "to_milliseconds", None)):
        ms = int(value.to_milliseconds())
    else:
        raise TypeError(
            f"{what} must be int milliseconds, a timedelta or a Duration, "
            f"got {type(value).__name__} {value!r}"
        )
    return ms


def _count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    if not minimum <= value <= cfg.INTEGER_MAX_VALUE:
        raise ValueError(f"{what} must be within {minimum}..{cfg.INTEGER_MAX_VALUE}, got {value}")
    return value


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class RestartStrategyConfiguration:
    """Base of every restart strategy configuration (compare by value, hashable).

    Subclasses know which ``restart-strategy.*`` keys they stand for
    (:meth:`to_config_entries`), which is how ``env.set_restart_strategy`` stores them.
    """

    def get_description(self) -> str:
        """A one-line, human-readable summary (Flink shows it in its web UI)."""
        raise NotImplementedError

    def to_config_entries(self) -> dict[str, Any]:
        """flowrun extension: the configuration keys and values this strategy stands for."""
        raise NotImplementedError

    def _values(self) -> tuple:
        return ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values() == self._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_description()!r})"


class NoRestartStrategyConfiguration(RestartStrategyConfiguration):
    """A failure fails the job: no restart."""

    def get_description(self) -> str:
        return "Restart deactivated."

    def to_config_entries(self) -> dict[str, Any]:
        return {cfg.RESTART_STRATEGY.key: "none"}


class FallbackRestartStrategyConfiguration(RestartStrategyConfiguration):
    """Use the cluster-level choice: whatever ``restart-strategy`` the context configuration
    (``-D``/``flowrun run``) sets, else Flink's default (fixed delay when checkpointing is
    enabled, no restart otherwise)."""

    def get_description(self) -> str:
        return "Cluster level default restart strategy"

    def to_config_entries(self) -> dict[str, Any]:
        return {}


class FixedDelayRestartStrategyConfiguration(RestartStrategyConfiguration):
    """Restart up to ``restart_attempts`` times, waiting a fixed delay before each restart."""

    def __init__(self, restart_attempts: int, delay_between_attempts_interval: Any) -> None:
        self._attempts = _count(restart_attempts, "restart_attempts", 0)
        self._delay_ms = _millis(delay_between_attempts_interval, "delay_between_attempts")
        _require(
            self._delay_ms >= 0,
            f"delay_between_attempts must be at least 0 ms, got {self._delay_ms} ms",
        )

    def get_restart_attempts(self) -> int:
        return self._attempts

    def get_delay_between_attempts_interval(self) -> timedelta:
        return timedelta(milliseconds=self._delay_ms)

    def get_description(self) -> str:
        return (
            f"Restart with fixed delay ({self._delay_ms} ms). #{self._attempts} restart attempts."
        )

    def to_config_entries(self) -> dict[str, Any]:
        return {
            cfg.RESTART_STRATEGY.key: "fixed-delay",
            cfg.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS.key: self._attempts,
            cfg.RESTART_STRATEGY_FIXED_DELAY_DELAY.key: self._delay_ms,
        }

    def _values(self) -> tuple:
        return (self._attempts, self._delay_ms)


class FailureRateRestartStrategyConfiguration(RestartStrategyConfiguration):
    """Restart after a fixed delay unless ``max_failure_rate`` failures fall in one interval.

    As in Flink the count includes the failure being handled: with ``max_failure_rate=3`` the
    third failure within ``failure_interval`` fails the job.
    """

    def __init__(
        self,
        max_failure_rate: int,
        failure_interval: Any,
        delay_between_attempts_interval: Any,
    ) -> None:
        self._max_failures = _count(max_failure_rate, "max_failure_rate", 1)
        self._interval_ms = _millis(failure_interval, "failure_interval")
        self._delay_ms = _millis(delay_between_attempts_interval, "delay_interval")
        _require(
            self._interval_ms >= 1,
            f"failure_interval must be at least 1 ms, got {self._interval_ms} ms",
        )
        _require(
            self._delay_ms >= 0, f"delay_interval must be at least 0 ms, got {self._delay_ms} ms"
        )

    def get_max_failure_rate(self) -> int:
        return self._max_failures

    def get_failure_interval(self) -> timedelta:
        return timedelta(milliseconds=self._interval_ms)

    def get_delay_between_attempts_interval(self) -> timedelta:
        return timedelta(milliseconds=self._delay_ms)

    def get_description(self) -> str:
        return (
            f"Failure rate restart with maximum of {self._max_failures} failures within interval "
            f"{self._interval_ms} ms and fixed delay {self._delay_ms} ms."
        )

    def to_config_entries(self) -> dict[str, Any]:
        return {
            cfg.RESTART_STRATEGY.key: "failure-rate",
            cfg.RESTART_STRATEGY_FAILURE_RATE_MAX_FAILURES_PER_INTERVAL.key: self._max_failures,
            cfg.RESTART_STRATEGY_FAILURE_RATE_FAILURE_RATE_INTERVAL.key: self._interval_ms,
            cfg.RESTART_STRATEGY_FAILURE_RATE_DELAY.key: self._delay_ms,
        }

    def _values(self) -> tuple:
        return (self._max_failures, self._interval_ms, self._delay_ms)


class ExponentialDelayRestartStrategyConfiguration(RestartStrategyConfiguration):
    """Restart forever, the delay growing by ``backoff_multiplier`` up to ``max_backoff``.

    After ``reset_backoff_threshold`` without a failure the delay starts again at
    ``initial_backoff``; every delay varies randomly by up to ``jitter_factor`` of itself.
    """

    def __init__(
        self,
        initial_backoff: Any,
        max_backoff: Any,
        backoff_multiplier: float,
        reset_backoff_threshold: Any,
        jitter_factor: float,
    ) -> None:
        self._initial_ms = _millis(initial_backoff, "initial_backoff")
        self._max_ms = _millis(max_backoff, "max_backoff")
        self._threshold_ms = _millis(reset_backoff_threshold, "reset_backoff_threshold")
        for name, number in (
            ("backoff_multiplier", backoff_multiplier),
            ("jitter_factor", jitter_factor),
        ):
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(number).__name__} {number!r}")
        self._multiplier = float(backoff_multiplier)
        self._jitter = float(jitter_factor)
        validate_exponential_delay(
            self._initial_ms, self._max_ms, self._multiplier, self._threshold_ms, self._jitter
        )

    def get_initial_backoff(self) -> timedelta:
        return timedelta(milliseconds=self._initial_ms)

    def get_max_backoff(self) -> timedelta:
        return timedelta(milliseconds=self._max_ms)

    def get_backoff_multiplier(self) -> float:
        return self._multiplier

    def get_reset_backoff_threshold(self) -> timedelta:
        return timedelta(milliseconds=self._threshold_ms)

    def get_jitter_factor(self) -> float:
        return self._jitter

    def get_description(self) -> str:
        return (
            f"Restart with exponential delay: starting at {self._initial_ms} ms, increasing by "
            f"{self._multiplier}, with maximum {self._max_ms} ms. Delay resets after "
            f"{self._threshold_ms} ms with jitter {self._jitter}."
        )

    def to_config_entries(self) -> dict[str, Any]:
        return {
            cfg.RESTART_STRATEGY.key: "exponential-delay",
            cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_INITIAL_BACKOFF.key: self._initial_ms,
            cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_MAX_BACKOFF.key: self._max_ms,
            cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_BACKOFF_MULTIPLIER.key: self._multiplier,
            cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_RESET_BACKOFF_THRESHOLD.key: self._threshold_ms,
            cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_JITTER_FACTOR.key: self._jitter,
        }

    def _values(self) -> tuple:
        return (self._initial_ms, self._max_ms, self._multiplier, self._threshold_ms, self._jitter)


def validate_exponential_delay(
    initial_ms: int, max_ms: int, multiplier: float, threshold_ms: int, jitter: float
) -> None:
    """Flink's checks of the exponential-delay parameters, with messages naming the value."""
    _require(initial_ms >= 1, f"initial_backoff must be at least 1 ms, got {initial_ms} ms")
    _require(max_ms >= 1, f"max_backoff must be at least 1 ms, got {max_ms} ms")
    _require(
        initial_ms <= max_ms,
        f"initial_backoff ({initial_ms} ms) cannot be higher than max_backoff ({max_ms} ms)",
    )
    _require(
        math.isfinite(multiplier) and multiplier > 1,
        f"backoff_multiplier must be greater than 1, got {multiplier}",
    )
    _require(
        threshold_ms >= 1, f"reset_backoff_threshold must be at least 1 ms, got {threshold_ms} ms"
    )
    _require(0 <= jitter <= 1, f"jitter_factor must be within [0, 1], got {jitter}")


class RestartStrategies:
    """Factories of restart strategy configurations (PyFlink's ``RestartStrategies``).

    Example::

        >>> RestartStrategies.failure_rate_restart(3, 60_000, 1_000).get_max_failure_rate()
        3
        >>> RestartStrategies.no_restart() == RestartStrategies.no_restart()
        True
    """

    # PyFlink nests the configuration classes in RestartStrategies.
    RestartStrategyConfiguration = RestartStrategyConfiguration
    NoRestartStrategyConfiguration = NoRestartStrategyConfiguration
    FallbackRestartStrategyConfiguration = FallbackRestartStrategyConfiguration
    FixedDelayRestartStrategyConfiguration = FixedDelayRestartStrategyConfiguration
    FailureRateRestartStrategyConfiguration = FailureRateRestartStrategyConfiguration
    ExponentialDelayRestartStrategyConfiguration = ExponentialDelayRestartStrategyConfiguration

    @staticmethod
    def no_restart() -> NoRestartStrategyConfiguration:
        return NoRestartStrategyConfiguration()

    @staticmethod
    def fall_back_restart() -> FallbackRestartStrategyConfiguration:
        return FallbackRestartStrategyConfiguration()

    @staticmethod
    def fixed_delay_restart(
        restart_attempts: int, delay_between_attempts: Any
    ) -> FixedDelayRestartStrategyConfiguration:
        """``restart_attempts`` restarts, ``delay_between_attempts`` (int ms or timedelta) apart."""
        return FixedDelayRestartStrategyConfiguration(restart_attempts, delay_between_attempts)

    @staticmethod
    def failure_rate_restart(
        failure_rate: int, failure_interval: Any, delay_interval: Any
    ) -> FailureRateRestartStrategyConfiguration:
        """Fail the job when ``failure_rate`` failures fall within ``failure_interval``."""
        return FailureRateRestartStrategyConfiguration(
            failure_rate, failure_interval, delay_interval
        )

    @staticmethod
    def exponential_delay_restart(
        initial_backoff: Any,
        max_backoff: Any,
        backoff_multiplier: float,
        reset_backoff_threshold: Any,
        jitter_factor: float,
    ) -> ExponentialDelayRestartStrategyConfiguration:
        """Restart forever with a growing, capped, jittered delay (Java's ``exponentialDelayRestart``).

        Example::

            >>> conf = RestartStrategies.exponential_delay_restart(1_000, 60_000, 2.0, 3_600_000, 0.1)
            >>> conf.get_max_backoff()
            datetime.timedelta(seconds=60)
        """
        return ExponentialDelayRestartStrategyConfiguration(
            initial_backoff, max_backoff, backoff_multiplier, reset_backoff_threshold, jitter_factor
        )

    @staticmethod
    def from_configuration(configuration: Configuration) -> RestartStrategyConfiguration:
        """The configuration object the ``restart-strategy.*`` keys describe.

        ``restart-strategy`` unset gives :class:`FallbackRestartStrategyConfiguration`, which is
        what ``env.get_restart_strategy()`` returns for a job that never chose one.

        Example::

            >>> from flowrun.core.config import Configuration
            >>> conf = Configuration().set_string("restart-strategy", "fixeddelay")
            >>> RestartStrategies.from_configuration(conf)
            FixedDelayRestartStrategyConfiguration('Restart with fixed delay (1000 ms). #1 restart attempts.')
        """
        name = configuration.get(cfg.RESTART_STRATEGY)
        if name is None:
            return FallbackRestartStrategyConfiguration()
        if name == "none":
            return NoRestartStrategyConfiguration()
        if name == "fixed-delay":
            return FixedDelayRestartStrategyConfiguration(
                configuration.get(cfg.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS),
                configuration.get(cfg.RESTART_STRATEGY_FIXED_DELAY_DELAY),
            )
        if name == "failure-rate":
            return FailureRateRestartStrategyConfiguration(
                configuration.get(cfg.RESTART_STRATEGY_FAILURE_RATE_MAX_FAILURES_PER_INTERVAL),
                configuration.get(cfg.RESTART_STRATEGY_FAILURE_RATE_FAILURE_RATE_INTERVAL),
                configuration.get(cfg.RESTART_STRATEGY_FAILURE_RATE_DELAY),
            )
        if name == "exponential-delay":
            try:
                return ExponentialDelayRestartStrategyConfiguration(
                    configuration.get(cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_INITIAL_BACKOFF),
                    configuration.get(cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_MAX_BACKOFF),
                    configuration.get(cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_BACKOFF_MULTIPLIER),
                    configuration.get(
                        cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_RESET_BACKOFF_THRESHOLD
                    ),
                    configuration.get(cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_JITTER_FACTOR),
                )
            except ValueError as exc:
                raise cfg.ConfigurationError(
                    f"invalid exponential-delay restart strategy "
                    f"({cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_INITIAL_BACKOFF.key}, "
                    f"{cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_MAX_BACKOFF.key}, ...): {exc}"
                ) from None
        raise cfg.ConfigurationError(f"unknown restart strategy {name!r}")  # pragma: no cover
