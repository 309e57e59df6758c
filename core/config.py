"""Every configuration key flowrun understands, with its default, in one place.

Keys use Flink's names where Flink has the concept, so that ``-D`` flags and
``flink-conf.yaml`` habits carry over. Anything that is not listed here is
rejected by :meth:`Configuration.set_string` with a message naming the closest
known keys, because a typo in a tuning flag that is silently ignored costs
users hours.

Example::

    >>> from flowrun.core.config import Configuration, BUFFER_TIMEOUT
    >>> conf = Configuration()
    >>> conf.get(BUFFER_TIMEOUT)
    100
    >>> conf.set_string("execution.buffer-timeout", "0").get(BUFFER_TIMEOUT)
    0
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ConfigOption",
    "Configuration",
    "ConfigurationError",
    "OPTIONS",
]


class ConfigurationError(ValueError):
    """A configuration key is unknown or its value cannot be parsed."""


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}


def parse_memory_size(text: str | int) -> int:
    """Parse Flink-style memory sizes: ``65536``, ``64kb``, ``32 mb``, ``1gib``."""
    if isinstance(text, int):
        return text
    stripped = text.strip().lower().replace(" ", "")
    digits = stripped.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = stripped[len(digits) :]
    if not digits or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a memory size such as 65536, 64kb or 1mb, got {text!r}")
    return int(digits) * _SIZE_UNITS[unit]


def _parse_duration_ms(text: str | int) -> int:
    """Parse ``100``, ``100 ms``, ``2 s``, ``1 min`` into milliseconds."""
    if isinstance(text, int):
        return text
    stripped = text.strip().lower().replace(" ", "")
    digits = stripped.lstrip("-").rstrip("abcdefghijklmnopqrstuvwxyz")
    sign = -1 if stripped.startswith("-") else 1
    unit = stripped.lstrip("-")[len(digits) :]
    scale = {"": 1, "ms": 1, "s": 1000, "sec": 1000, "min": 60_000, "m": 60_000, "h": 3_600_000}
    if not digits or unit not in scale:
        raise ValueError(f"expected a duration such as 100, 100ms or 2s, got {text!r}")
    return sign * int(digits) * scale[unit]


@dataclass(frozen=True)
class ConfigOption:
    """One configuration key: its name, default, parser and a one-line reason."""

    key: str
    default: Any
    parse: Callable[[str], Any]
    description: str
    check: Callable[[Any], str | None] | None = None

    def convert(self, raw: Any) -> Any:
        if isinstance(raw, str):
            try:
                value = self.parse(raw)
            except ValueError as exc:
                raise ConfigurationError(f"invalid value for {self.key}: {exc}") from None
        else:
            value = raw
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigurationError(f"invalid value for {self.key}: {problem}")
        return value


def _positive(value: int) -> str | None:
    return None if value >= 1 else f"must be >= 1, got {value}"


def _at_least(minimum: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if value >= minimum else f"must be >= {minimum}, got {value}"

    return check


def _max_parallelism_check(value: int) -> str | None:
    if value == -1 or 1 <= value <= 32768:
        return None
    return f"must be -1 (derive from parallelism) or within 1..32768, got {value}"


def _segment_check(value: int) -> str | None:
    if value < 4096 or value % 4096:
        return f"must be a multiple of 4096 bytes and at least 4096, got {value}"
    return None


OPTIONS: dict[str, ConfigOption] = {}


def _option(
    key: str,
    default: Any,
    parse: Callable[[str], Any],
    description: str,
    check: Callable[[Any], str | None] | None = None,
) -> ConfigOption:
    option = ConfigOption(key, default, parse, description, check)
    OPTIONS[key] = option
    return option


# --- job / execution -------------------------------------------------------
PARALLELISM = _option(
    "parallelism.default", 1, int, "Default parallelism of every operator.", _positive
)
MAX_PARALLELISM = _option(
    "pipeline.max-parallelism",
    -1,
    int,
    "Number of key groups; -1 derives it from the parallelism as Flink does.",
    _max_parallelism_check,
)
OPERATOR_CHAINING = _option(
    "pipeline.operator-chaining", True, _parse_bool, "Fuse forward-connected operators."
)
BUFFER_TIMEOUT = _option(
    "execution.buffer-timeout",
    100,
    _parse_duration_ms,
    "Flush partly filled buffers after this many ms; 0 flushes after every emit; -1 only when full.",
    _at_least(-1),
)
SOURCE_BATCH_SIZE = _option(
    "flowrun.source.batch-size",
    4096,
    int,
    "Records a source hands to its chain per step (rows API); larger amortises per-call cost.",
    _positive,
)

# --- state -------------------------------------------------------------------
STATE_BACKEND = _option(
    "state.backend",
    "lmdb",
    lambda v: v.strip().lower(),
    "Where keyed state lives: lmdb (embedded, on disk, larger than memory) or hashmap (heap).",
    lambda v: None if v in ("lmdb", "hashmap") else f"must be lmdb or hashmap, got {v!r}",
)

# --- network stack -----------------------------------------------------------
SEGMENT_SIZE = _option(
    "taskmanager.memory.segment-size",
    256 * 1024,
    parse_memory_size,
    "Size of one network buffer (chosen by bench/test_channel_throughput.py; 1 MiB for batches "
    ">= 256 KiB).",
    _segment_check,
)
BUFFERS_PER_CHANNEL = _option(
    "taskmanager.network.memory.buffers-per-channel",
    2,
    int,
    "Exclusive credits of every input channel.",
    _positive,
)
FLOATING_BUFFERS_PER_GATE = _option(
    "taskmanager.network.memory.floating-buffers-per-gate",
    8,
    int,
    "Floating credits of every input gate, given to the channels with the largest backlog.",
    _at_least(0),
)
MAX_BUFFERS_PER_CHANNEL = _option(
    "taskmanager.network.memory.max-buffers-per-channel",
    10,
    int,
    "Buffers in the LocalBufferPool of one result subpartition (bounds memory under backpressure).",
    _at_least(2),
)

# --- processes -------------------------------------------------------------
PROCESS_START_METHOD = _option(
    "flowrun.process.start-method",
    "forkserver",
    str,
    "How subtask processes start: forkserver (pyarrow/numpy preloaded) or spawn.",
    lambda v: None if v in ("forkserver", "spawn") else "must be forkserver or spawn",
)
WORKING_DIR = _option(
    "io.tmp.dirs",
    tempfile.gettempdir(),
    str,
    "Parent directory of every job's private working directory.",
)
CANCEL_TIMEOUT = _option(
    "task.cancellation.timeout",
    5000,
    _parse_duration_ms,
    "ms a subtask gets to exit after cancel before it is killed.",
    _at_least(0),
)
HEARTBEAT_INTERVAL = _option(
    "flowrun.jobmanager.poll-interval",
    50,
    _parse_duration_ms,
    "ms between JobManager checks of process liveness (deaths are also seen at once via sentinels).",
    _positive,
)


class Configuration:
    """A set of configuration values on top of :data:`OPTIONS`' defaults.

    Mirrors the getters of PyFlink's ``Configuration`` that flowrun needs and
    adds typed access through :class:`ConfigOption`.
    """

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = {}
        for key, value in (values or {}).items():
            self.set(key, value)

    @staticmethod
    def _option(key: str) -> ConfigOption:
        option = OPTIONS.get(key)
        if option is None:
            close = difflib.get_close_matches(key, list(OPTIONS), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigurationError(
                f"unknown configuration key {key!r}.{hint} "
                f"Run 'flowrun config' to list every key with its default."
            )
        return option

    def set(self, key: str, value: Any) -> Configuration:
        option = self._option(key)
        self._values[key] = option.convert(value)
        return self

    def set_string(self, key: str, value: str) -> Configuration:
        return self.set(key, value)

    def get(self, option: ConfigOption | str) -> Any:
        if isinstance(option, str):
            option = self._option(option)
        return self._values.get(option.key, option.default)

    def get_string(self, key: str, default_value: str | None = None) -> str | None:
        if key in self._values:
            return str(self._values[key])
        return default_value if default_value is not None else str(self._option(key).default)

    def contains_key(self, key: str) -> bool:
        return key in self._values

    def key_set(self) -> set[str]:
        return set(self._values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def update(self, pairs: Iterable[tuple[str, Any]]) -> Configuration:
        for key, value in pairs:
            self.set(key, value)
        return self

    def copy(self) -> Configuration:
        clone = Configuration()
        clone._values = dict(self._values)
        return clone

    def __repr__(self) -> str:
        return f"Configuration({self._values!r})"


def parse_dynamic_properties(pairs: Iterable[str]) -> Configuration:
    """Parse ``-D key=value`` strings from the command line into a Configuration."""
    conf = Configuration()
    for pair in pairs:
        if "=" not in pair:
            raise ConfigurationError(f"-D expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        conf.set_string(key.strip(), value.strip())
    return conf


def default_working_root() -> str:
    return os.environ.get("FLOWRUN_TMP", tempfile.gettempdir())
