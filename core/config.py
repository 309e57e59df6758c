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
import math
import os
import re
import tempfile
import urllib.parse
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
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


# Flink's TimeUtils unit labels (singular and plural); a bare number is milliseconds.
_DURATION_UNITS = {
    "": 1,
    "ms": 1,
    "milli": 1,
    "millis": 1,
    "millisecond": 1,
    "milliseconds": 1,
    "s": 1000,
    "sec": 1000,
    "secs": 1000,
    "second": 1000,
    "seconds": 1000,
    "m": 60_000,
    "min": 60_000,
    "mins": 60_000,
    "minute": 60_000,
    "minutes": 60_000,
    "h": 3_600_000,
    "hour": 3_600_000,
    "hours": 3_600_000,
    "d": 86_400_000,
    "day": 86_400_000,
    "days": 86_400_000,
}


def _parse_duration_ms(text: str | int) -> int:
    """Parse ``100``, ``100 ms``, ``2 s``, ``1 min``, ``1 h``, ``1 d`` into milliseconds."""
    if isinstance(text, int):
        return text
    stripped = text.strip().lower().replace(" ", "")
    digits = stripped.lstrip("-").rstrip("abcdefghijklmnopqrstuvwxyz")
    sign = -1 if stripped.startswith("-") else 1
    unit = stripped.lstrip("-")[len(digits) :]
    if not digits.isdigit() or unit not in _DURATION_UNITS:
        raise ValueError(f"expected a duration such as 100, 100ms, 2s, 1min or 1h, got {text!r}")
    return sign * int(digits) * _DURATION_UNITS[unit]


def _duration_value(value: Any) -> int:
    """Milliseconds of a non-string duration: int ms, ``timedelta``, ``Duration`` or ``Time``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, timedelta):
        return value // timedelta(milliseconds=1)
    to_ms = getattr(value, "to_milliseconds", None)
    if callable(to_ms):
        return int(to_ms())
    raise ValueError(
        f"expected int milliseconds, a timedelta, a Duration or a string such as '2 s', "
        f"got {value!r}"
    )


def _int_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _float_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _bool_value(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected True or False, got {value!r}")
    return value


def _enum_name(value: Any) -> str:
    """An Enum member (e.g. ``CheckpointingMode.EXACTLY_ONCE``) is stored by its name."""
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return name
    raise ValueError(f"expected a name such as EXACTLY_ONCE, got {value!r}")


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in allowed:
            return None
        return f"must be one of {', '.join(allowed)}, got {value!r}"

    return check


_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def parse_storage_location(text: str) -> str:
    """A checkpoint or savepoint location: an absolute local path or an ``s3://`` URI.

    Accepts what Flink users write: ``file:///data/ckp`` (stored as the local path
    ``/data/ckp``), ``s3://bucket/prefix`` (``s3a://`` too; kept as a URI, without a trailing
    slash) and plain paths; a relative path is made absolute against the current directory
    of the process that sets it (the client), since subtasks run in other directories.
    Other schemes (``hdfs://``, ``gs://``) are rejected here, before a job starts, instead
    of when the first checkpoint is written.

    Example::

        >>> parse_storage_location("file:///tmp/ckp/")
        '/tmp/ckp'
        >>> parse_storage_location("s3://bucket/flink/ckp/")
        's3://bucket/flink/ckp'
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a path or URI string, got {text!r}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("must not be empty; give a path, a file:// URI or an s3:// URI")
    match = _URI_SCHEME.match(stripped)
    if match is None and stripped.startswith("file:"):  # Hadoop-style file:/abs/path
        stripped = "file://" + stripped[len("file:") :]
        match = _URI_SCHEME.match(stripped)
    if match is None:
        path = os.path.normpath(os.path.abspath(stripped))
    else:
        scheme = match.group(1).lower()
        parsed = urllib.parse.urlsplit(stripped)
        if parsed.query or parsed.fragment:
            raise ValueError(f"query strings and fragments are not supported, got {text!r}")
        if scheme in ("s3", "s3a"):
            if not parsed.netloc:
                raise ValueError(f"an s3:// URI must name a bucket, got {text!r}")
            return stripped.rstrip("/")
        if scheme != "file":
            raise ValueError(
                f"unsupported file system scheme {scheme!r} in {text!r}: use a local path, "
                f"file:// or s3://"
            )
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(
                f"a file:// URI must name a local path (file:///abs/path), got {text!r}"
            )
        path = urllib.parse.unquote(parsed.path)
        if not path.startswith("/"):
            raise ValueError(f"a file:// URI needs an absolute path, got {text!r}")
        path = os.path.normpath(path)
    if path in ("/", "//"):
        raise ValueError(f"cannot use the root directory, got {text!r}")
    return path


def _path_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        return parse_storage_location(os.fspath(value))
    return parse_storage_location(value)


@dataclass(frozen=True)
class ConfigOption:
    """One configuration key: its name, default, parser and a one-line reason.

    ``parse`` turns a string (``-D`` value, ``set_string``) into the typed value;
    ``coerce`` does the same for values set from code (ints, ``timedelta``, enums), so
    that both routes store the same type; ``check`` validates the typed value.
    """

    key: str
    default: Any
    parse: Callable[[str], Any]
    description: str
    check: Callable[[Any], str | None] | None = None
    coerce: Callable[[Any], Any] | None = None
    deprecated_keys: tuple[str, ...] = ()

    def convert(self, raw: Any) -> Any:
        try:
            if isinstance(raw, str):
                value = self.parse(raw)
            elif self.coerce is not None:
                value = self.coerce(raw)
            else:
                value = raw
        except ValueError as exc:
            raise ConfigurationError(f"invalid value for {self.key}: {exc}") from None
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
# Old key -> current key (Flink's ``withDeprecatedKeys``); reading or writing an old key warns.
DEPRECATED_KEYS: dict[str, str] = {}


def _option(
    key: str,
    default: Any,
    parse: Callable[[str], Any],
    description: str,
    check: Callable[[Any], str | None] | None = None,
    coerce: Callable[[Any], Any] | None = None,
    deprecated_keys: tuple[str, ...] = (),
) -> ConfigOption:
    if deprecated_keys:
        description += f" (Deprecated key: {', '.join(deprecated_keys)}.)"
    option = ConfigOption(key, default, parse, description, check, coerce, deprecated_keys)
    OPTIONS[key] = option
    for old in deprecated_keys:
        DEPRECATED_KEYS[old] = key
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
ARROW_SOURCE_BATCH_SIZE = _option(
    "flowrun.source.arrow-batch-size",
    65536,
    int,
    "Rows an Arrow source hands to its chain per step at most (a step also aims at ~1 MiB of "
    "output); larger batches let batch-wise work such as a keyed count's local pre-aggregation "
    "fold more rows at once.",
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
#: Subtask processes copy blocks larger than this many bytes with non-temporal
#: (cache-bypassing) stores: glibc's ``glibc.cpu.x86_non_temporal_threshold``, set in
#: the fork server's environment unless ``GLIBC_TUNABLES`` already sets it (that is
#: how to change or disable it: a huge value turns it off). Why: the large copies of
#: a subtask are Arrow writing batches into shared memory, which the consumer reads,
#: not the producer. glibc derives its own threshold from the L3 size (hundreds of
#: MiB on big servers, so never), and every 1 MiB batch then went through the
#: producer's L2 and evicted the interpreter's working set: the 1 MiB channel
#: benchmark was ~20% slower per batch. 0 leaves glibc's default.
NON_TEMPORAL_COPY_THRESHOLD = 128 * 1024
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


# --- checkpointing (Flink's ExecutionCheckpointingOptions / CheckpointingOptions) ---------
MINIMAL_CHECKPOINT_TIME = 10  # ms; Flink's lower bound of checkpoint interval and timeout
INTEGER_MAX_VALUE = 2**31 - 1  # Java's Integer.MAX_VALUE, Flink's "unlimited" for counts


def _ms_at_least(minimum: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if value >= minimum else f"must be at least {minimum} ms, got {value} ms"

    return check


def _int_within(low: int, high: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be within {low}..{high}, got {value}"

    return check


def _checkpoint_interval_check(value: int) -> str | None:
    if value == -1 or value >= MINIMAL_CHECKPOINT_TIME:
        return None
    return (
        f"must be at least {MINIMAL_CHECKPOINT_TIME} ms (or -1 to disable checkpointing), "
        f"got {value} ms"
    )


def _upper_name(text: str) -> str:
    return text.strip().upper()


def _none_or_name(value: Any) -> str | None:
    """Values set from code for name-valued options: only None (unset) is not a string."""
    if value is None:
        return None
    raise ValueError(f"expected a name, got {value!r}")


def _optional_path_check(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else f"expected a path, got {value!r}"


CHECKPOINTING_INTERVAL = _option(
    "execution.checkpointing.interval",
    -1,
    _parse_duration_ms,
    "ms between periodic checkpoints; -1 disables checkpointing (at least 10 ms when set).",
    _checkpoint_interval_check,
    _duration_value,
)
CHECKPOINTING_MODE = _option(
    "execution.checkpointing.mode",
    "EXACTLY_ONCE",
    _upper_name,
    "EXACTLY_ONCE (barriers are aligned) or AT_LEAST_ONCE (no alignment, duplicates on recovery).",
    _one_of("EXACTLY_ONCE", "AT_LEAST_ONCE"),
    _enum_name,
)
CHECKPOINTING_TIMEOUT = _option(
    "execution.checkpointing.timeout",
    10 * 60 * 1000,
    _parse_duration_ms,
    "ms after which an unfinished checkpoint is aborted.",
    _ms_at_least(MINIMAL_CHECKPOINT_TIME),
    _duration_value,
)
MIN_PAUSE_BETWEEN_CHECKPOINTS = _option(
    "execution.checkpointing.min-pause",
    0,
    _parse_duration_ms,
    "Minimal ms between the end of one checkpoint and the start of the next.",
    _ms_at_least(0),
    _duration_value,
)
MAX_CONCURRENT_CHECKPOINTS = _option(
    "execution.checkpointing.max-concurrent-checkpoints",
    1,
    int,
    "Checkpoints that may be in progress at the same time.",
    _int_within(1, INTEGER_MAX_VALUE),
    _int_value,
)
TOLERABLE_FAILED_CHECKPOINTS = _option(
    "execution.checkpointing.tolerable-failed-checkpoints",
    0,
    int,
    "Consecutive checkpoint failures tolerated before the job fails over.",
    _int_within(0, INTEGER_MAX_VALUE),
    _int_value,
)
ENABLE_UNALIGNED = _option(
    "execution.checkpointing.unaligned",
    False,
    _parse_bool,
    "Unaligned checkpoints: barriers overtake queued buffers, which become part of the "
    "checkpoint (EXACTLY_ONCE only).",
    None,
    _bool_value,
)
FORCE_UNALIGNED = _option(
    "execution.checkpointing.unaligned.forced",
    False,
    _parse_bool,
    "Keep unaligned checkpoints even where flowrun would otherwise align (e.g. custom "
    "partitioners).",
    None,
    _bool_value,
)
ALIGNED_CHECKPOINT_TIMEOUT = _option(
    "execution.checkpointing.aligned-checkpoint-timeout",
    0,
    _parse_duration_ms,
    "With unaligned checkpoints: start aligned and switch to unaligned after this many ms; "
    "0 starts unaligned at once.",
    _ms_at_least(0),
    _duration_value,
    deprecated_keys=("execution.checkpointing.alignment-timeout",),
)
EXTERNALIZED_CHECKPOINT = _option(
    "execution.checkpointing.externalized-checkpoint-retention",
    "NO_EXTERNALIZED_CHECKPOINTS",
    _upper_name,
    "What happens to completed checkpoints when the job is cancelled: "
    "NO_EXTERNALIZED_CHECKPOINTS, DELETE_ON_CANCELLATION or RETAIN_ON_CANCELLATION.",
    _one_of("NO_EXTERNALIZED_CHECKPOINTS", "DELETE_ON_CANCELLATION", "RETAIN_ON_CANCELLATION"),
    _enum_name,
)
CHECKPOINT_STORAGE = _option(
    "state.checkpoint-storage",
    None,
    lambda v: v.strip().lower(),
    "jobmanager (job's working dir, deleted with the job, unless state.checkpoints.dir is "
    "set) or filesystem (state.checkpoints.dir); unset = filesystem iff the dir is set.",
    lambda v: (
        None
        if v in (None, "jobmanager", "filesystem")
        else (f"must be jobmanager or filesystem, got {v!r}")
    ),
    _none_or_name,
)
CHECKPOINTS_DIRECTORY = _option(
    "state.checkpoints.dir",
    None,
    parse_storage_location,
    "Directory of checkpoints (path, file:// or s3:// URI); unset = inside the job's working dir.",
    _optional_path_check,
    _path_value,
)
SAVEPOINT_DIRECTORY = _option(
    "state.savepoints.dir",
    None,
    parse_storage_location,
    "Default directory (path, file:// or s3:// URI) of savepoints triggered without a target.",
    _optional_path_check,
    _path_value,
)
MAX_RETAINED_CHECKPOINTS = _option(
    "state.checkpoints.num-retained",
    1,
    int,
    "Completed checkpoints kept; older ones are deleted.",
    _int_within(1, INTEGER_MAX_VALUE),
    _int_value,
)
SAVEPOINT_PATH = _option(
    "execution.savepoint.path",
    None,
    parse_storage_location,
    "Savepoint or retained checkpoint (path, file:// or s3:// URI) to restore the job from.",
    _optional_path_check,
    _path_value,
)
LMDB_NATIVE_CHECKPOINTS = _option(
    "flowrun.state.lmdb.native-checkpoints",
    True,
    _parse_bool,
    "Checkpoints of LMDB state are compacted copies of the environment (taken in C on a "
    "thread); false writes backend-neutral Arrow rows as savepoints always do.",
    None,
    _bool_value,
)
SAVEPOINT_IGNORE_UNCLAIMED_STATE = _option(
    "execution.savepoint.ignore-unclaimed-state",
    False,
    _parse_bool,
    "Restore even if the savepoint holds state of an operator the job no longer has.",
    None,
    _bool_value,
)

# --- restarts (Flink's RestartStrategyOptions) -------------------------------------------
_RESTART_STRATEGY_NAMES = {
    "none": "none",
    "off": "none",
    "disable": "none",
    "fixeddelay": "fixed-delay",
    "fixed-delay": "fixed-delay",
    "failurerate": "failure-rate",
    "failure-rate": "failure-rate",
    "exponentialdelay": "exponential-delay",
    "exponential-delay": "exponential-delay",
}


def _parse_restart_strategy(text: str) -> str:
    name = _RESTART_STRATEGY_NAMES.get(text.strip().lower())
    if name is None:
        raise ValueError(
            f"unknown restart strategy {text!r}; accepted: none (off, disable), fixed-delay "
            f"(fixeddelay), failure-rate (failurerate), exponential-delay (exponentialdelay)"
        )
    return name


def _float_check(low: float, high: float | None, low_open: bool = False) -> Callable:
    def check(value: float) -> str | None:
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high):
            left = "(" if low_open else "["
            right = f"{high}]" if high is not None else "inf)"
            return f"must be within {left}{low}, {right}, got {value}"
        return None

    return check


RESTART_STRATEGY = _option(
    "restart-strategy",
    None,
    _parse_restart_strategy,
    "none, fixed-delay, failure-rate or exponential-delay (Flink's aliases accepted, stored by "
    "these names); unset = fixed-delay with Integer.MAX_VALUE attempts and 1 s delay if "
    "checkpointing is enabled, else none.",
    None,
    _none_or_name,
)
RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS = _option(
    "restart-strategy.fixed-delay.attempts",
    1,
    int,
    "fixed-delay: restarts before the job is declared failed.",
    _int_within(0, INTEGER_MAX_VALUE),
    _int_value,
)
RESTART_STRATEGY_FIXED_DELAY_DELAY = _option(
    "restart-strategy.fixed-delay.delay",
    1000,
    _parse_duration_ms,
    "fixed-delay: ms between a failure and the restart.",
    _ms_at_least(0),
    _duration_value,
)
RESTART_STRATEGY_FAILURE_RATE_MAX_FAILURES_PER_INTERVAL = _option(
    "restart-strategy.failure-rate.max-failures-per-interval",
    1,
    int,
    "failure-rate: the job fails when this many failures fall within one interval.",
    _int_within(1, INTEGER_MAX_VALUE),
    _int_value,
)
RESTART_STRATEGY_FAILURE_RATE_FAILURE_RATE_INTERVAL = _option(
    "restart-strategy.failure-rate.failure-rate-interval",
    60_000,
    _parse_duration_ms,
    "failure-rate: ms of the sliding window in which failures are counted.",
    _ms_at_least(1),
    _duration_value,
)
RESTART_STRATEGY_FAILURE_RATE_DELAY = _option(
    "restart-strategy.failure-rate.delay",
    1000,
    _parse_duration_ms,
    "failure-rate: ms between a failure and the restart.",
    _ms_at_least(0),
    _duration_value,
)
RESTART_STRATEGY_EXPONENTIAL_DELAY_INITIAL_BACKOFF = _option(
    "restart-strategy.exponential-delay.initial-backoff",
    1000,
    _parse_duration_ms,
    "exponential-delay: ms before the first restart (and after a reset).",
    _ms_at_least(1),
    _duration_value,
)
RESTART_STRATEGY_EXPONENTIAL_DELAY_MAX_BACKOFF = _option(
    "restart-strategy.exponential-delay.max-backoff",
    5 * 60_000,
    _parse_duration_ms,
    "exponential-delay: upper bound of the backoff in ms.",
    _ms_at_least(1),
    _duration_value,
)
RESTART_STRATEGY_EXPONENTIAL_DELAY_BACKOFF_MULTIPLIER = _option(
    "restart-strategy.exponential-delay.backoff-multiplier",
    2.0,
    float,
    "exponential-delay: factor applied to the backoff after each failure (> 1).",
    _float_check(1.0, None, low_open=True),
    _float_value,
)
RESTART_STRATEGY_EXPONENTIAL_DELAY_RESET_BACKOFF_THRESHOLD = _option(
    "restart-strategy.exponential-delay.reset-backoff-threshold",
    3_600_000,
    _parse_duration_ms,
    "exponential-delay: after this many ms without a failure the backoff starts again at the "
    "initial value.",
    _ms_at_least(1),
    _duration_value,
)
RESTART_STRATEGY_EXPONENTIAL_DELAY_JITTER_FACTOR = _option(
    "restart-strategy.exponential-delay.jitter-factor",
    0.1,
    float,
    "exponential-delay: each backoff varies randomly by up to this fraction (0..1), so that "
    "restarts of many jobs do not line up.",
    _float_check(0.0, 1.0),
    _float_value,
)
FAILOVER_STRATEGY = _option(
    "jobmanager.execution.failover-strategy",
    "region",
    lambda v: v.strip().lower(),
    "On a task failure restart its pipelined region (region) or the whole job (full).",
    _one_of("region", "full"),
)

# --- REST endpoint -------------------------------------------------------------------
REST_PORT = _option(
    "rest.port",
    8081,
    int,
    "Port of the JobManager's REST endpoint; 0 picks a free port.",
    _int_within(0, 65535),
    _int_value,
)
REST_ADDRESS = _option(
    "rest.address",
    "127.0.0.1",
    lambda v: v.strip(),
    "Address the REST endpoint binds to.",
    lambda v: None if isinstance(v, str) and v else "must be a non-empty host name or address",
)


_MISSING = object()


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
            current = DEPRECATED_KEYS.get(key)
            if current is not None:
                warnings.warn(
                    f"configuration key {key!r} is deprecated, use {current!r}",
                    DeprecationWarning,
                    stacklevel=3,
                )
                return OPTIONS[current]
            close = difflib.get_close_matches(key, list(OPTIONS), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigurationError(
                f"unknown configuration key {key!r}.{hint} "
                f"Run 'flowrun config' to list every key with its default."
            )
        return option

    def set(self, key: str, value: Any) -> Configuration:
        option = self._option(key)
        self._values[option.key] = option.convert(value)
        return self

    def set_string(self, key: str, value: str) -> Configuration:
        return self.set(key, value)

    def get(self, option: ConfigOption | str) -> Any:
        if isinstance(option, str):
            option = self._option(option)
        return self._values.get(option.key, option.default)

    def get_string(self, key: str, default_value: str | None = None) -> str | None:
        option = self._option(key)
        if option.key in self._values and self._values[option.key] is not None:
            return str(self._values[option.key])
        if default_value is not None:
            return default_value
        return None if option.default is None else str(option.default)

    def contains_key(self, key: str) -> bool:
        if key not in OPTIONS and key in DEPRECATED_KEYS:
            key = DEPRECATED_KEYS[key]
        return key in self._values

    def remove_config(self, key: str) -> bool:
        """Drop an explicitly set value (the default applies again); True if one was set."""
        option = self._option(key)
        return self._values.pop(option.key, _MISSING) is not _MISSING

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
