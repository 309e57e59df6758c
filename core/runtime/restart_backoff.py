"""Restart decisions of the JobManager: Flink's ``RestartBackoffTimeStrategy`` family.

When a job fails, the JobManager asks its strategy two things, in this order::

    strategy.notify_failure(cause)          # record the failure (its time, the attempt count)
    if strategy.can_restart():
        wait strategy.get_backoff_time() ms, then restart from the latest checkpoint
    else:
        fail the job

The strategies hold no thread and never sleep: time comes from an injected ``clock``
(milliseconds; default a monotonic clock), so tests and the JobManager's own loop decide
when time passes. :func:`create_restart_strategy` builds the strategy a job's
:class:`~flowrun.core.config.Configuration` asks for, with Flink 1.15's fallback rule.

Example::

    >>> from flowrun.core.config import Configuration
    >>> conf = Configuration({"restart-strategy": "fixed-delay",
    ...                       "restart-strategy.fixed-delay.attempts": "2",
    ...                       "restart-strategy.fixed-delay.delay": "3 s"})
    >>> strategy = create_restart_strategy(conf)
    >>> decisions = []
    >>> for _ in range(3):
    ...     strategy.notify_failure(RuntimeError("boom"))
    ...     decisions.append(strategy.can_restart())
    >>> decisions, strategy.get_backoff_time()
    ([True, True, False], 3000)
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

from .. import config as cfg
from ..config import Configuration, ConfigurationError

__all__ = [
    "DEFAULT_RESTART_ATTEMPTS",
    "DEFAULT_RESTART_DELAY",
    "ExponentialDelayRestartBackoffTimeStrategy",
    "FailureRateRestartBackoffTimeStrategy",
    "FixedDelayRestartBackoffTimeStrategy",
    "NoRestartBackoffTimeStrategy",
    "RestartBackoffTimeStrategy",
    "create_restart_strategy",
    "monotonic_ms",
]

Clock = Callable[[], float]

# Flink's strategy when restart-strategy is unset and checkpointing is enabled.
DEFAULT_RESTART_ATTEMPTS = cfg.INTEGER_MAX_VALUE
DEFAULT_RESTART_DELAY = 1000


def monotonic_ms() -> float:
    """The default clock: milliseconds of a clock that never goes back."""
    return time.monotonic() * 1000.0


class RestartBackoffTimeStrategy:
    """Decides whether a failed job may restart and how long to wait before it does.

    Call :meth:`notify_failure` once per failure, then :meth:`can_restart`; if that is
    true, wait :meth:`get_backoff_time` ms and restart.
    """

    def notify_failure(self, cause: BaseException | str) -> None:
        """Record a failure (Flink's strategies look only at when it happened, not why)."""
        raise NotImplementedError

    def can_restart(self) -> bool:
        raise NotImplementedError

    def get_backoff_time(self) -> int:
        """Milliseconds to wait before the restart."""
        raise NotImplementedError


class NoRestartBackoffTimeStrategy(RestartBackoffTimeStrategy):
    """Every failure fails the job.

    Example::

        >>> NoRestartBackoffTimeStrategy().can_restart()
        False
    """

    def notify_failure(self, cause: BaseException | str) -> None:
        pass

    def can_restart(self) -> bool:
        return False

    def get_backoff_time(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "NoRestartBackoffTimeStrategy()"


class FixedDelayRestartBackoffTimeStrategy(RestartBackoffTimeStrategy):
    """At most ``max_attempts`` restarts over the job's life, ``backoff_ms`` before each.

    Example::

        >>> strategy = FixedDelayRestartBackoffTimeStrategy(1, 500)
        >>> strategy.notify_failure("first")
        >>> strategy.can_restart(), strategy.get_backoff_time()
        (True, 500)
        >>> strategy.notify_failure("second")
        >>> strategy.can_restart()
        False
    """

    def __init__(self, max_attempts: int, backoff_ms: int) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 0:
            raise ValueError(
                f"maximum number of restart attempts must be at least 0, got {max_attempts!r}"
            )
        if isinstance(backoff_ms, bool) or not isinstance(backoff_ms, int) or backoff_ms < 0:
            raise ValueError(
                f"backoff time between restart attempts must be at least 0 ms, got {backoff_ms!r}"
            )
        self.max_attempts = max_attempts
        self.backoff_ms = backoff_ms
        self._failures = 0

    def notify_failure(self, cause: BaseException | str) -> None:
        self._failures += 1

    def can_restart(self) -> bool:
        return self._failures <= self.max_attempts

    def get_backoff_time(self) -> int:
        return self.backoff_ms

    def __repr__(self) -> str:
        return (
            f"FixedDelayRestartBackoffTimeStrategy(max_attempts={self.max_attempts}, "
            f"backoff_ms={self.backoff_ms})"
        )


class FailureRateRestartBackoffTimeStrategy(RestartBackoffTimeStrategy):
    """Restart unless ``max_failures_per_interval`` failures fall within ``interval_ms``.

    Keeps the times of the latest ``max_failures_per_interval`` failures (Flink's sliding
    window). Once that many are recorded, a restart is allowed only if the oldest of them
    lies more than ``interval_ms`` before now. The failure being handled counts, so with a
    limit of 3 the third failure inside the interval fails the job, and with the default
    limit of 1 every failure does unless the clock has moved past the interval since.

    Example::

        >>> now = [0]
        >>> strategy = FailureRateRestartBackoffTimeStrategy(2, 60_000, 100, clock=lambda: now[0])
        >>> strategy.notify_failure("a"); strategy.can_restart()
        True
        >>> now[0] = 30_000; strategy.notify_failure("b"); strategy.can_restart()
        False
        >>> now[0] = 61_000; strategy.can_restart()
        True
    """

    def __init__(
        self,
        max_failures_per_interval: int,
        interval_ms: int,
        backoff_ms: int,
        clock: Clock | None = None,
    ) -> None:
        if (
            isinstance(max_failures_per_interval, bool)
            or not isinstance(max_failures_per_interval, int)
            or max_failures_per_interval < 1
        ):
            raise ValueError(
                f"maximum number of failures per interval must be greater than 0, "
                f"got {max_failures_per_interval!r}"
            )
        if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms < 1:
            raise ValueError(f"failures interval must be greater than 0 ms, got {interval_ms!r}")
        if isinstance(backoff_ms, bool) or not isinstance(backoff_ms, int) or backoff_ms < 0:
            raise ValueError(f"backoff time must be at least 0 ms, got {backoff_ms!r}")
        self.max_failures_per_interval = max_failures_per_interval
        self.interval_ms = interval_ms
        self.backoff_ms = backoff_ms
        self._clock = clock or monotonic_ms
        self._failure_times: deque[float] = deque(maxlen=max_failures_per_interval)

    def notify_failure(self, cause: BaseException | str) -> None:
        # deque(maxlen=n) drops the oldest time when full: the window holds the latest n.
        self._failure_times.append(self._clock())

    def can_restart(self) -> bool:
        if len(self._failure_times) < self.max_failures_per_interval:
            return True
        return self._clock() - self._failure_times[0] > self.interval_ms

    def get_backoff_time(self) -> int:
        return self.backoff_ms

    def __repr__(self) -> str:
        return (
            f"FailureRateRestartBackoffTimeStrategy(max_failures_per_interval="
            f"{self.max_failures_per_interval}, interval_ms={self.interval_ms}, "
            f"backoff_ms={self.backoff_ms})"
        )


class ExponentialDelayRestartBackoffTimeStrategy(RestartBackoffTimeStrategy):
    """Always restarts; the backoff grows by ``multiplier`` per failure up to ``max_backoff_ms``.

    Flink 1.15's rules: the first failure waits ``initial_backoff_ms``. A later failure
    resets the backoff to the initial value if at least ``reset_threshold_ms`` plus the
    current backoff passed since the previous failure (the job ran smoothly for the
    threshold after its restart); otherwise the backoff is multiplied (truncated to whole
    ms, as Java's ``long *= double``) and capped at ``max_backoff_ms``. Each
    :meth:`get_backoff_time` adds a uniform random jitter in
    ``[-j, +j]`` with ``j = int(current * jitter_factor)`` and caps the sum at
    ``max_backoff_ms``. ``rng`` makes the jitter reproducible in tests.

    Example::

        >>> now = [0]
        >>> strategy = ExponentialDelayRestartBackoffTimeStrategy(
        ...     100, 1_000, 2.0, 60_000, 0.0, clock=lambda: now[0])
        >>> delays = []
        >>> for _ in range(5):
        ...     strategy.notify_failure("boom")
        ...     delays.append(strategy.get_backoff_time())
        >>> delays
        [100, 200, 400, 800, 1000]
        >>> now[0] = 62_000; strategy.notify_failure("much later"); strategy.get_backoff_time()
        100
    """

    def __init__(
        self,
        initial_backoff_ms: int,
        max_backoff_ms: int,
        multiplier: float,
        reset_threshold_ms: int,
        jitter_factor: float,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        from ..restart_strategy import validate_exponential_delay

        validate_exponential_delay(
            initial_backoff_ms, max_backoff_ms, multiplier, reset_threshold_ms, jitter_factor
        )
        self.initial_backoff_ms = int(initial_backoff_ms)
        self.max_backoff_ms = int(max_backoff_ms)
        self.multiplier = float(multiplier)
        self.reset_threshold_ms = int(reset_threshold_ms)
        self.jitter_factor = float(jitter_factor)
        self._clock = clock or monotonic_ms
        self._rng = rng or random.Random()
        self._current_ms = self.initial_backoff_ms
        self._last_failure: float | None = None

    @property
    def current_backoff_ms(self) -> int:
        """The backoff before jitter (what the next restart waits, give or take the jitter)."""
        return self._current_ms

    def notify_failure(self, cause: BaseException | str) -> None:
        now = self._clock()
        # Flink starts with lastFailureTimestamp = 0 on a wall clock, so the first failure
        # always takes the reset branch; with a monotonic clock "no failure yet" says the same.
        if (
            self._last_failure is None
            or now - self._last_failure >= self.reset_threshold_ms + self._current_ms
        ):
            self._current_ms = self.initial_backoff_ms
        else:
            if self._current_ms < self.max_backoff_ms:
                self._current_ms = int(self._current_ms * self.multiplier)
            self._current_ms = max(
                self.initial_backoff_ms, min(self._current_ms, self.max_backoff_ms)
            )
        self._last_failure = now

    def can_restart(self) -> bool:
        return True

    def get_backoff_time(self) -> int:
        jitter = 0
        if self.jitter_factor > 0:
            bound = int(self._current_ms * self.jitter_factor)
            jitter = self._rng.randint(-bound, bound)
        return min(self._current_ms + jitter, self.max_backoff_ms)

    def __repr__(self) -> str:
        return (
            f"ExponentialDelayRestartBackoffTimeStrategy(initial_backoff_ms="
            f"{self.initial_backoff_ms}, max_backoff_ms={self.max_backoff_ms}, multiplier="
            f"{self.multiplier}, reset_threshold_ms={self.reset_threshold_ms}, jitter_factor="
            f"{self.jitter_factor}, current_backoff_ms={self._current_ms})"
        )


def is_checkpointing_enabled(config: Configuration) -> bool:
    """Flink's test: a positive ``execution.checkpointing.interval``."""
    return config.get(cfg.CHECKPOINTING_INTERVAL) > 0


def create_restart_strategy(
    config: Configuration, clock: Clock | None = None
) -> RestartBackoffTimeStrategy:
    """The restart strategy ``config`` asks for (Flink's RestartBackoffTimeStrategyFactoryLoader).

    ``restart-strategy`` picks the strategy and its ``restart-strategy.<name>.*`` keys
    parameterise it. Unset, Flink's rule applies: fixed-delay with ``Integer.MAX_VALUE``
    attempts and 1 s delay if checkpointing is enabled (``execution.checkpointing.interval``
    > 0), otherwise no restart. Call it once per job run: the strategy keeps the failure
    history of that run. Raises :class:`ConfigurationError` for parameters that only fail
    together (exponential-delay's initial backoff above its maximum).

    Example::

        >>> from flowrun.core.config import Configuration
        >>> create_restart_strategy(Configuration())
        NoRestartBackoffTimeStrategy()
        >>> create_restart_strategy(Configuration({"execution.checkpointing.interval": "5 s"}))
        FixedDelayRestartBackoffTimeStrategy(max_attempts=2147483647, backoff_ms=1000)
    """
    if not isinstance(config, Configuration):
        raise TypeError(f"create_restart_strategy expects a Configuration, got {config!r}")
    name = config.get(cfg.RESTART_STRATEGY)
    if name is None:
        if is_checkpointing_enabled(config):
            return FixedDelayRestartBackoffTimeStrategy(
                DEFAULT_RESTART_ATTEMPTS, DEFAULT_RESTART_DELAY
            )
        return NoRestartBackoffTimeStrategy()
    if name == "none":
        return NoRestartBackoffTimeStrategy()
    if name == "fixed-delay":
        return FixedDelayRestartBackoffTimeStrategy(
            config.get(cfg.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS),
            config.get(cfg.RESTART_STRATEGY_FIXED_DELAY_DELAY),
        )
    if name == "failure-rate":
        return FailureRateRestartBackoffTimeStrategy(
            config.get(cfg.RESTART_STRATEGY_FAILURE_RATE_MAX_FAILURES_PER_INTERVAL),
            config.get(cfg.RESTART_STRATEGY_FAILURE_RATE_FAILURE_RATE_INTERVAL),
            config.get(cfg.RESTART_STRATEGY_FAILURE_RATE_DELAY),
            clock=clock,
        )
    if name == "exponential-delay":
        initial = config.get(cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_INITIAL_BACKOFF)
        maximum = config.get(cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_MAX_BACKOFF)
        if initial > maximum:
            raise ConfigurationError(
                f"{cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_INITIAL_BACKOFF.key} ({initial} ms) "
                f"cannot be higher than {cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_MAX_BACKOFF.key} "
                f"({maximum} ms)"
            )
        return ExponentialDelayRestartBackoffTimeStrategy(
            initial,
            maximum,
            config.get(cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_BACKOFF_MULTIPLIER),
            config.get(cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_RESET_BACKOFF_THRESHOLD),
            config.get(cfg.RESTART_STRATEGY_EXPONENTIAL_DELAY_JITTER_FACTOR),
            clock=clock,
        )
    raise ConfigurationError(f"unknown restart strategy {name!r}")  # pragma: no cover
