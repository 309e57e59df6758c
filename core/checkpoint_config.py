"""Checkpoint settings of a job: PyFlink's ``CheckpointConfig`` and checkpoint storages.

``env.get_checkpoint_config()`` returns a :class:`CheckpointConfig` that is a *live view*
of the environment's :class:`~flowrun.core.config.Configuration`: every setter writes
Flink's ``execution.checkpointing.*`` / ``state.checkpoints.*`` key and every getter reads
it. The runtime reads only that Configuration, so a job configured in code and one
configured with ``flowrun run -D execution.checkpointing.interval=10s`` are the same job.

Example::

    >>> from flowrun.core.config import Configuration
    >>> from flowrun.core.checkpoint_config import CheckpointConfig, CheckpointingMode
    >>> conf = Configuration()
    >>> checkpoints = CheckpointConfig(conf)
    >>> checkpoints.set_checkpoint_interval(5_000).set_min_pause_between_checkpoints(500)
    CheckpointConfig(interval=5000 ms, mode=EXACTLY_ONCE)
    >>> conf.get_string("execution.checkpointing.interval")
    '5000'
    >>> checkpoints.set_checkpoint_storage("file:///tmp/flowrun-ckp")
    CheckpointConfig(interval=5000 ms, mode=EXACTLY_ONCE)
    >>> conf.get_string("state.checkpoints.dir")
    '/tmp/flowrun-ckp'
"""

from __future__ import annotations

import os
from datetime import timedelta
from enum import Enum
from typing import Any

from . import config as cfg
from .config import Configuration, ConfigurationError
from .time import Duration

__all__ = [
    "CheckpointConfig",
    "CheckpointStorage",
    "CheckpointingMode",
    "ExternalizedCheckpointCleanup",
    "FileSystemCheckpointStorage",
    "JobManagerCheckpointStorage",
    "validate_checkpointing",
]


class CheckpointingMode(Enum):
    """Consistency of checkpoints (``pyflink.datastream.CheckpointingMode``).

    ``EXACTLY_ONCE`` aligns barriers, so every record affects the state exactly once after a
    recovery; ``AT_LEAST_ONCE`` does not align, so records between barriers may be replayed.
    """

    EXACTLY_ONCE = 0
    AT_LEAST_ONCE = 1


class ExternalizedCheckpointCleanup(Enum):
    """What happens to completed checkpoints when the job is *cancelled*.

    A job that fails always keeps them. ``NO_EXTERNALIZED_CHECKPOINTS`` (the default) deletes
    them when the job ends in any other way.
    """

    DELETE_ON_CANCELLATION = 0
    RETAIN_ON_CANCELLATION = 1
    NO_EXTERNALIZED_CHECKPOINTS = 2


def _path_arg(path: Any, what: str) -> str:
    """An absolute local path or ``s3://`` URI from a path, ``file://``/``s3://`` URI or PathLike."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"{what} must be a path or a file:// or s3:// URI, got {path!r}")
    try:
        return cfg.parse_storage_location(path)
    except ValueError as exc:
        raise ValueError(f"invalid {what}: {exc}") from None


def _int_arg(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    return value


class CheckpointStorage:
    """Where completed checkpoints are written (base of the storage classes)."""

    def _entries(self) -> dict[str, Any]:
        """The configuration keys this storage stands for."""
        raise NotImplementedError

    def _matches(self, config: Configuration) -> bool:
        raise NotImplementedError

    def get_checkpoint_path(self) -> str | None:
        raise NotImplementedError

    def get_savepoint_path(self) -> str | None:
        """Flink's storages may carry a default savepoint directory; flowrun's never do
        (use ``state.savepoints.dir`` / ``env.set_default_savepoint_directory``)."""
        return None

    def _values(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values() == self._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))


class JobManagerCheckpointStorage(CheckpointStorage):
    """Checkpoints that live only as long as the job: for failover restarts, not for resuming.

    Flink keeps these checkpoints in the JobManager's memory. flowrun writes them into the
    job's private working directory (under ``io.tmp.dirs``), which is deleted with the job, so
    they survive a subtask crash and serve restarts but cannot be resumed from later. With a
    ``checkpoint_path`` (or ``state.checkpoints.dir`` set in the configuration) they are
    written there instead, as Flink then persists checkpoint metadata there, and retention
    follows ``execution.checkpointing.externalized-checkpoint-retention``.

    ``max_state_size`` (bytes, default 5 MiB) is Flink's per-state limit of this storage; it is
    recorded here and not enforced by flowrun.

    Example::

        >>> JobManagerCheckpointStorage().get_checkpoint_path() is None
        True
        >>> JobManagerCheckpointStorage(max_state_size=0)
        Traceback (most recent call last):
        ...
        ValueError: max_state_size must be > 0, got 0
    """

    DEFAULT_MAX_STATE_SIZE = 5 * 1024 * 1024

    def __init__(
        self, checkpoint_path: str | None = None, max_state_size: int | None = None
    ) -> None:
        self._path = (
            None if checkpoint_path is None else _path_arg(checkpoint_path, "checkpoint_path")
        )
        if max_state_size is None:
            max_state_size = self.DEFAULT_MAX_STATE_SIZE
        if _int_arg(max_state_size, "max_state_size") <= 0:
            raise ValueError(f"max_state_size must be > 0, got {max_state_size}")
        self._max_state_size = max_state_size

    def get_checkpoint_path(self) -> str | None:
        return self._path

    def get_max_state_size(self) -> int:
        return self._max_state_size

    def _entries(self) -> dict[str, Any]:
        entries: dict[str, Any] = {cfg.CHECKPOINT_STORAGE.key: "jobmanager"}
        if self._path is not None:
            entries[cfg.CHECKPOINTS_DIRECTORY.key] = self._path
        return entries

    def _matches(self, config: Configuration) -> bool:
        return config.get(cfg.CHECKPOINT_STORAGE) == "jobmanager" and (
            self._path is None or self._path == config.get(cfg.CHECKPOINTS_DIRECTORY)
        )

    def _values(self) -> tuple:
        return (self._path, self._max_state_size)

    def __repr__(self) -> str:
        return f"JobManagerCheckpointStorage(checkpoint_path={self._path!r})"


class FileSystemCheckpointStorage(CheckpointStorage):
    """Checkpoints written to a directory that outlives the job (``state.checkpoints.dir``).

    ``checkpoint_path`` is a local path (relative ones are made absolute), a ``file://`` URI
    or an ``s3://`` URI; other schemes (``hdfs://``) are rejected. Every checkpoint gets a
    ``<job id>/chk-<n>`` directory below it.
    ``file_state_size_threshold`` and ``write_buffer_size`` are Flink's tuning knobs of small
    state files (threshold at most 1 MiB, -1/None meaning Flink's defaults); they are
    validated and kept for API compatibility, flowrun's snapshot format does not use them.

    Example::

        >>> FileSystemCheckpointStorage("file:///data/ckp").get_checkpoint_path()
        '/data/ckp'
        >>> FileSystemCheckpointStorage("")
        Traceback (most recent call last):
        ...
        ValueError: invalid checkpoint_path: must not be empty; give a path, a file:// URI or an s3:// URI
    """

    MAX_FILE_STATE_THRESHOLD = 1024 * 1024
    _DEFAULT_FILE_STATE_THRESHOLD = 20 * 1024  # Flink 1.15's state.storage.fs.memory-threshold
    _DEFAULT_WRITE_BUFFER_SIZE = 4096

    def __init__(
        self,
        checkpoint_path: str | None = None,
        file_state_size_threshold: int | None = None,
        write_buffer_size: int = -1,
    ) -> None:
        if checkpoint_path is None:
            raise ValueError(
                "checkpoint_path must not be None: give a path, a file:// or an s3:// URI"
            )
        self._path = _path_arg(checkpoint_path, "checkpoint_path")
        threshold = -1 if file_state_size_threshold is None else file_state_size_threshold
        if (
            not -1
            <= _int_arg(threshold, "file_state_size_threshold")
            <= self.MAX_FILE_STATE_THRESHOLD
        ):
            raise ValueError(
                f"file_state_size_threshold must be within -1..{self.MAX_FILE_STATE_THRESHOLD} "
                f"(-1 = default), got {threshold}"
            )
        if _int_arg(write_buffer_size, "write_buffer_size") < -1:
            raise ValueError(
                f"write_buffer_size must be -1 (default) or >= 0, got {write_buffer_size}"
            )
        self._threshold = threshold
        self._write_buffer_size = write_buffer_size

    def get_checkpoint_path(self) -> str:
        return self._path

    def get_min_file_size_threshold(self) -> int:
        return self._threshold if self._threshold >= 0 else self._DEFAULT_FILE_STATE_THRESHOLD

    def get_write_buffer_size(self) -> int:
        if self._write_buffer_size >= 0:
            return self._write_buffer_size
        return max(self._DEFAULT_WRITE_BUFFER_SIZE, self.get_min_file_size_threshold())

    def _entries(self) -> dict[str, Any]:
        return {cfg.CHECKPOINT_STORAGE.key: "filesystem", cfg.CHECKPOINTS_DIRECTORY.key: self._path}

    def _matches(self, config: Configuration) -> bool:
        return config.get(cfg.CHECKPOINT_STORAGE) in (None, "filesystem") and (
            config.get(cfg.CHECKPOINTS_DIRECTORY) == self._path
        )

    def _values(self) -> tuple:
        return (self._path, self._threshold, self._write_buffer_size)

    def __repr__(self) -> str:
        return f"FileSystemCheckpointStorage(checkpoint_path={self._path!r})"


def _duration_ms(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a Duration, timedelta or int ms, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, timedelta):
        return value // timedelta(milliseconds=1)
    if isinstance(value, Duration):
        return value.to_milliseconds()
    raise TypeError(
        f"{what} must be a Duration, timedelta or int ms, got {type(value).__name__} {value!r}"
    )


class CheckpointConfig:
    """Live view of the checkpoint settings in a :class:`Configuration` (setters return self).

    Obtain it with ``env.get_checkpoint_config()``; ``CheckpointConfig(conf)`` wraps any
    Configuration (a fresh one when omitted). Values are checked as Flink checks them
    (interval and timeout at least 10 ms, ...), and errors name the key and the value.
    """

    DEFAULT_MODE = CheckpointingMode.EXACTLY_ONCE
    DEFAULT_TIMEOUT: int = cfg.CHECKPOINTING_TIMEOUT.default
    DEFAULT_MIN_PAUSE_BETWEEN_CHECKPOINTS: int = cfg.MIN_PAUSE_BETWEEN_CHECKPOINTS.default
    DEFAULT_MAX_CONCURRENT_CHECKPOINTS: int = cfg.MAX_CONCURRENT_CHECKPOINTS.default

    def __init__(self, configuration: Configuration | None = None) -> None:
        self._config = configuration if configuration is not None else Configuration()
        self._storage: CheckpointStorage | None = None

    def get_configuration(self) -> Configuration:
        """flowrun extension: the Configuration this view reads and writes."""
        return self._config

    # -- interval and mode -------------------------------------------------------
    def is_checkpointing_enabled(self) -> bool:
        return self._config.get(cfg.CHECKPOINTING_INTERVAL) > 0

    def get_checkpoint_interval(self) -> int:
        """Milliseconds between checkpoints; -1 when checkpointing is off."""
        return self._config.get(cfg.CHECKPOINTING_INTERVAL)

    def set_checkpoint_interval(self, checkpoint_interval: int) -> CheckpointConfig:
        """Checkpoint every ``checkpoint_interval`` ms (at least 10, as in Flink)."""
        self._config.set(cfg.CHECKPOINTING_INTERVAL.key, self._check_interval(checkpoint_interval))
        return self

    @staticmethod
    def _check_interval(checkpoint_interval: Any) -> int:
        if _int_arg(checkpoint_interval, "checkpoint_interval") < cfg.MINIMAL_CHECKPOINT_TIME:
            raise ValueError(
                f"checkpoint interval must be at least {cfg.MINIMAL_CHECKPOINT_TIME} ms, "
                f"got {checkpoint_interval} ms"
            )
        return checkpoint_interval

    def get_checkpointing_mode(self) -> CheckpointingMode:
        return CheckpointingMode[self._config.get(cfg.CHECKPOINTING_MODE)]

    def set_checkpointing_mode(self, checkpointing_mode: CheckpointingMode) -> CheckpointConfig:
        if not isinstance(checkpointing_mode, CheckpointingMode):
            raise TypeError(
                f"checkpointing_mode must be a CheckpointingMode, got {checkpointing_mode!r}"
            )
        if (
            checkpointing_mode is CheckpointingMode.AT_LEAST_ONCE
            and self.is_unaligned_checkpoints_enabled()
        ):
            raise ValueError(_UNALIGNED_NEEDS_EXACTLY_ONCE)
        self._config.set(cfg.CHECKPOINTING_MODE.key, checkpointing_mode.name)
        return self

    # -- timing limits ------------------------------------------------------------
    def get_checkpoint_timeout(self) -> int:
        return self._config.get(cfg.CHECKPOINTING_TIMEOUT)

    def set_checkpoint_timeout(self, checkpoint_timeout: int) -> CheckpointConfig:
        """Abort a checkpoint that has not completed after this many ms (at least 10)."""
        self._config.set(
            cfg.CHECKPOINTING_TIMEOUT.key, _int_arg(checkpoint_timeout, "checkpoint_timeout")
        )
        return self

    def get_min_pause_between_checkpoints(self) -> int:
        return self._config.get(cfg.MIN_PAUSE_BETWEEN_CHECKPOINTS)

    def set_min_pause_between_checkpoints(
        self, min_pause_between_checkpoints: int
    ) -> CheckpointConfig:
        """Leave at least this many ms between the end of a checkpoint and the next start."""
        self._config.set(
            cfg.MIN_PAUSE_BETWEEN_CHECKPOINTS.key,
            _int_arg(min_pause_between_checkpoints, "min_pause_between_checkpoints"),
        )
        return self

    def get_max_concurrent_checkpoints(self) -> int:
        return self._config.get(cfg.MAX_CONCURRENT_CHECKPOINTS)

    def set_max_concurrent_checkpoints(self, max_concurrent_checkpoints: int) -> CheckpointConfig:
        self._config.set(
            cfg.MAX_CONCURRENT_CHECKPOINTS.key,
            _int_arg(max_concurrent_checkpoints, "max_concurrent_checkpoints"),
        )
        return self

    # -- failures -------------------------------------------------------------------
    def is_fail_on_checkpointing_errors(self) -> bool:
        """Deprecated: True when no failed checkpoint is tolerated."""
        return self.get_tolerable_checkpoint_failure_number() == 0

    def set_fail_on_checkpointing_errors(
        self, fail_on_checkpointing_errors: bool
    ) -> CheckpointConfig:
        """Deprecated: True = tolerate no failed checkpoint (0), False = tolerate any number."""
        if not isinstance(fail_on_checkpointing_errors, bool):
            raise TypeError(
                f"fail_on_checkpointing_errors must be a bool, got {fail_on_checkpointing_errors!r}"
            )
        tolerable = 0 if fail_on_checkpointing_errors else cfg.INTEGER_MAX_VALUE
        self._config.set(cfg.TOLERABLE_FAILED_CHECKPOINTS.key, tolerable)
        return self

    def get_tolerable_checkpoint_failure_number(self) -> int:
        return self._config.get(cfg.TOLERABLE_FAILED_CHECKPOINTS)

    def set_tolerable_checkpoint_failure_number(
        self, tolerable_checkpoint_failure_number: int
    ) -> CheckpointConfig:
        """Consecutive failed checkpoints tolerated before the job fails over (default 0)."""
        self._config.set(
            cfg.TOLERABLE_FAILED_CHECKPOINTS.key,
            _int_arg(tolerable_checkpoint_failure_number, "tolerable_checkpoint_failure_number"),
        )
        return self

    # -- retention --------------------------------------------------------------------
    def enable_externalized_checkpoints(
        self, cleanup_mode: ExternalizedCheckpointCleanup
    ) -> CheckpointConfig:
        """Deprecated since Flink 1.15: use :meth:`set_externalized_checkpoint_cleanup`."""
        return self.set_externalized_checkpoint_cleanup(cleanup_mode)

    def set_externalized_checkpoint_cleanup(
        self, cleanup_mode: ExternalizedCheckpointCleanup
    ) -> CheckpointConfig:
        """Keep (``RETAIN_ON_CANCELLATION``) or delete completed checkpoints on cancel."""
        if not isinstance(cleanup_mode, ExternalizedCheckpointCleanup):
            raise TypeError(
                f"cleanup_mode must be an ExternalizedCheckpointCleanup, got {cleanup_mode!r}"
            )
        self._config.set(cfg.EXTERNALIZED_CHECKPOINT.key, cleanup_mode.name)
        return self

    def get_externalized_checkpoint_cleanup(self) -> ExternalizedCheckpointCleanup:
        return ExternalizedCheckpointCleanup[self._config.get(cfg.EXTERNALIZED_CHECKPOINT)]

    def is_externalized_checkpoints_enabled(self) -> bool:
        return (
            self.get_externalized_checkpoint_cleanup()
            is not ExternalizedCheckpointCleanup.NO_EXTERNALIZED_CHECKPOINTS
        )

    # -- unaligned checkpoints -----------------------------------------------------------
    def is_unaligned_checkpoints_enabled(self) -> bool:
        return bool(self._config.get(cfg.ENABLE_UNALIGNED))

    def enable_unaligned_checkpoints(self, enabled: bool = True) -> CheckpointConfig:
        """Let barriers overtake queued buffers (EXACTLY_ONCE only), so checkpoints finish
        under backpressure; the overtaken buffers become part of the checkpoint."""
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {enabled!r}")
        if enabled and self.get_checkpointing_mode() is CheckpointingMode.AT_LEAST_ONCE:
            raise ValueError(_UNALIGNED_NEEDS_EXACTLY_ONCE)
        self._config.set(cfg.ENABLE_UNALIGNED.key, enabled)
        return self

    def disable_unaligned_checkpoints(self) -> CheckpointConfig:
        return self.enable_unaligned_checkpoints(False)

    def set_aligned_checkpoint_timeout(
        self, aligned_checkpoint_timeout: Duration | int
    ) -> CheckpointConfig:
        """With unaligned checkpoints: start aligned, switch to unaligned after this long
        (``Duration``, ``timedelta`` or int ms; 0 = unaligned from the start)."""
        self._config.set(
            cfg.ALIGNED_CHECKPOINT_TIMEOUT.key,
            _duration_ms(aligned_checkpoint_timeout, "aligned_checkpoint_timeout"),
        )
        return self

    def get_aligned_checkpoint_timeout(self) -> Duration:
        return Duration.of_millis(self._config.get(cfg.ALIGNED_CHECKPOINT_TIMEOUT))

    def set_alignment_timeout(self, alignment_timeout: Duration | int) -> CheckpointConfig:
        """Deprecated name of :meth:`set_aligned_checkpoint_timeout`."""
        return self.set_aligned_checkpoint_timeout(alignment_timeout)

    def get_alignment_timeout(self) -> Duration:
        """Deprecated name of :meth:`get_aligned_checkpoint_timeout`."""
        return self.get_aligned_checkpoint_timeout()

    def set_force_unaligned_checkpoints(
        self, force_unaligned_checkpoints: bool = True
    ) -> CheckpointConfig:
        if not isinstance(force_unaligned_checkpoints, bool):
            raise TypeError(
                f"force_unaligned_checkpoints must be a bool, got {force_unaligned_checkpoints!r}"
            )
        self._config.set(cfg.FORCE_UNALIGNED.key, force_unaligned_checkpoints)
        return self

    def is_force_unaligned_checkpoints(self) -> bool:
        return bool(self._config.get(cfg.FORCE_UNALIGNED))

    # -- storage ---------------------------------------------------------------------------
    def set_checkpoint_storage(
        self, storage: CheckpointStorage | str | os.PathLike
    ) -> CheckpointConfig:
        """Where checkpoints go: a :class:`CheckpointStorage`, or a directory (``file://`` URI
        or ``s3://`` URI, or a local path) meaning ``FileSystemCheckpointStorage(directory)``."""
        if isinstance(storage, (str, os.PathLike)):
            storage = FileSystemCheckpointStorage(storage)  # type: ignore[arg-type]
        if not isinstance(storage, CheckpointStorage):
            raise TypeError(
                f"set_checkpoint_storage() expects a CheckpointStorage or a directory, got {storage!r}"
            )
        for key, value in storage._entries().items():
            self._config.set(key, value)
        self._storage = storage
        return self

    def set_checkpoint_storage_dir(self, checkpoint_path: str) -> CheckpointConfig:
        """Shorthand of ``set_checkpoint_storage(FileSystemCheckpointStorage(checkpoint_path))``."""
        return self.set_checkpoint_storage(FileSystemCheckpointStorage(checkpoint_path))

    def get_checkpoint_storage(self) -> CheckpointStorage | None:
        """The storage set with :meth:`set_checkpoint_storage`, or the one the configuration
        describes (``state.checkpoint-storage`` / ``state.checkpoints.dir``); None if neither."""
        if self._storage is not None and self._storage._matches(self._config):
            return self._storage
        kind = self._config.get(cfg.CHECKPOINT_STORAGE)
        directory = self._config.get(cfg.CHECKPOINTS_DIRECTORY)
        if kind == "jobmanager":
            return JobManagerCheckpointStorage(directory)
        if directory is not None:
            return FileSystemCheckpointStorage(directory)
        return None

    def __repr__(self) -> str:
        return (
            f"CheckpointConfig(interval={self.get_checkpoint_interval()} ms, "
            f"mode={self.get_checkpointing_mode().name})"
        )


_UNALIGNED_NEEDS_EXACTLY_ONCE = (
    "unaligned checkpoints are supported only in EXACTLY_ONCE checkpointing mode "
    f"({cfg.ENABLE_UNALIGNED.key}=true cannot be combined with "
    f"{cfg.CHECKPOINTING_MODE.key}=AT_LEAST_ONCE)"
)


def validate_checkpointing(config: Configuration) -> None:
    """Checks that span several keys, made when a job starts (as Flink makes them).

    Single keys are checked when they are set; this catches combinations that only ``-D``
    flags or ``env.configure`` can produce: unaligned checkpoints with AT_LEAST_ONCE, and
    ``state.checkpoint-storage=filesystem`` without ``state.checkpoints.dir``.

    Example::

        >>> conf = Configuration({"execution.checkpointing.unaligned": "true",
        ...                       "execution.checkpointing.mode": "AT_LEAST_ONCE"})
        >>> validate_checkpointing(conf)
        Traceback (most recent call last):
        ...
        flowrun.core.config.ConfigurationError: unaligned checkpoints are supported only in EXACTLY_ONCE checkpointing mode (execution.checkpointing.unaligned=true cannot be combined with execution.checkpointing.mode=AT_LEAST_ONCE)
    """
    if config.get(cfg.ENABLE_UNALIGNED) and config.get(cfg.CHECKPOINTING_MODE) == "AT_LEAST_ONCE":
        raise ConfigurationError(_UNALIGNED_NEEDS_EXACTLY_ONCE)
    if (
        config.get(cfg.CHECKPOINT_STORAGE) == "filesystem"
        and config.get(cfg.CHECKPOINTS_DIRECTORY) is None
    ):
        raise ConfigurationError(
            f"{cfg.CHECKPOINT_STORAGE.key}=filesystem needs a directory: set "
            f"{cfg.CHECKPOINTS_DIRECTORY.key} (a path, a file:// or an s3:// URI)"
        )
