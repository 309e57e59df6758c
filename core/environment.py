"""StreamExecutionEnvironment: where a job is defined and from where it is run.

``execute()`` turns the recorded transformations into a JobGraph and hands it
to a JobManager in this process, which starts one OS process per subtask.
``flowrun run job.py -p 4 -D key=value`` runs the same script with a context
configuration, exactly as ``flink run`` does for PyFlink programs.

Example::

    >>> from flowrun.core import StreamExecutionEnvironment
    >>> env = StreamExecutionEnvironment.get_execution_environment()
    >>> env.set_parallelism(2).get_parallelism()
    2
"""

from __future__ import annotations

import queue
import signal
import threading
from enum import Enum
from typing import TYPE_CHECKING, Any

from . import config as cfg
from .config import Configuration
from .datastream import DataStream
from .graph.job_graph import JobGraph
from .graph.stream_graph import StreamGraph
from .graph.transformations import SourceTransformation, Transformation
from .runtime import operators as ops

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint_config import CheckpointConfig, CheckpointingMode
    from .restart_strategy import RestartStrategyConfiguration

__all__ = [
    "StreamExecutionEnvironment",
    "JobExecutionResult",
    "RuntimeExecutionMode",
    "CloseableIterator",
]


class RuntimeExecutionMode(Enum):
    STREAMING = 0
    BATCH = 1
    AUTOMATIC = 2


class JobExecutionResult:
    """What ``execute()`` returns: the job id and net runtime (and our per-subtask metrics)."""

    def __init__(self, job_id: str, net_runtime_ms: int, metrics: dict | None = None) -> None:
        self._job_id = job_id
        self._net_runtime = net_runtime_ms
        self._metrics = metrics or {}

    def get_job_id(self) -> str:
        return self._job_id

    def get_net_runtime(self) -> int:
        """Milliseconds from deployment to the end of the job."""
        return self._net_runtime

    def is_job_execution_result(self) -> bool:
        return True

    def get_job_execution_result(self) -> JobExecutionResult:
        return self

    def get_accumulator_result(self, accumulator_name: str) -> Any:
        return None

    def get_all_accumulator_results(self) -> dict:
        return {}

    def get_subtask_metrics(self) -> dict[int, dict]:
        """flowrun extension: per-subtask counters (records, buffers, backpressure time)."""
        return self._metrics

    def to_string(self) -> str:
        return f"JobExecutionResult(job_id={self._job_id}, net_runtime={self._net_runtime} ms)"

    __str__ = to_string


class _Context:
    """Set by ``flowrun run``: configuration from -p/-D, and plan-only mode."""

    config: Configuration | None = None
    plan_only: bool = False
    plans: list[str] = []
    job_graphs: list[JobGraph] = []  #: the plans' JobGraphs (flowrun savepoint diff)
    results: list[JobExecutionResult] = []
    job_managers: list[Any] = []


class CloseableIterator:
    """Iterator over a running job's collected records; ``close()`` cancels the job."""

    def __init__(self, job_manager: Any, records: queue.Queue, thread: threading.Thread) -> None:
        self._jm = job_manager
        self._queue = records
        self._thread = thread
        self._buffer: list = []
        self._done = False

    def __iter__(self) -> CloseableIterator:
        return self

    def __next__(self) -> Any:
        while not self._buffer:
            if self._done:
                raise StopIteration
            item = self._queue.get()
            if isinstance(item, _End):
                self._done = True
                self._thread.join()
                if item.error is not None:
                    raise item.error
                raise StopIteration
            self._buffer = list(reversed(item))
        return self._buffer.pop()

    def next(self) -> Any:
        return self.__next__()

    def close(self) -> None:
        if not self._done:
            self._jm.cancel("closed by the client")
            while not self._done:
                item = self._queue.get()
                if isinstance(item, _End):
                    self._done = True
            self._thread.join()

    def __enter__(self) -> CloseableIterator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _End:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class StreamExecutionEnvironment:
    """Entry point of a job; obtain it with :meth:`get_execution_environment`."""

    def __init__(self, configuration: Configuration | None = None) -> None:
        base = _Context.config.copy() if _Context.config is not None else Configuration()
        if configuration is not None:
            for key, value in configuration.to_dict().items():
                base.set(key, value)
        self._config = base
        self._transformations: list[Transformation] = []
        self._parallelism = base.get(cfg.PARALLELISM)
        self._job_parameters: dict[str, str] = {}
        self._state_backend = None
        # What the environment started from (context -D flags + constructor argument):
        # RestartStrategies.fall_back_restart() returns the restart keys to these values.
        self._initial_config = base.copy()
        self._checkpoint_config: Any = None

    @staticmethod
    def get_execution_environment(
        configuration: Configuration | None = None,
    ) -> StreamExecutionEnvironment:
        return StreamExecutionEnvironment(configuration)

    # -- settings -----------------------------------------------------------------
    def set_parallelism(self, parallelism: int) -> StreamExecutionEnvironment:
        if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
            raise ValueError(f"parallelism must be a positive integer, got {parallelism!r}")
        self._parallelism = parallelism
        return self

    def get_parallelism(self) -> int:
        return self._parallelism

    def set_max_parallelism(self, max_parallelism: int) -> StreamExecutionEnvironment:
        self._config.set(cfg.MAX_PARALLELISM.key, max_parallelism)
        return self

    def get_max_parallelism(self) -> int:
        return self._config.get(cfg.MAX_PARALLELISM)

    def set_buffer_timeout(self, timeout_millis: int) -> StreamExecutionEnvironment:
        self._config.set(cfg.BUFFER_TIMEOUT.key, timeout_millis)
        return self

    def get_buffer_timeout(self) -> int:
        return self._config.get(cfg.BUFFER_TIMEOUT)

    def disable_operator_chaining(self) -> StreamExecutionEnvironment:
        self._config.set(cfg.OPERATOR_CHAINING.key, False)
        return self

    def is_chaining_enabled(self) -> bool:
        return bool(self._config.get(cfg.OPERATOR_CHAINING))

    def set_runtime_mode(self, execution_mode: RuntimeExecutionMode) -> StreamExecutionEnvironment:
        if execution_mode != RuntimeExecutionMode.STREAMING:
            raise NotImplementedError("flowrun runs jobs in STREAMING mode")
        return self

    def configure(self, configuration: Configuration) -> None:
        for key, value in configuration.to_dict().items():
            self._config.set(key, value)
        if configuration.contains_key(cfg.PARALLELISM.key):
            self._parallelism = self._config.get(cfg.PARALLELISM)

    def get_configuration(self) -> Configuration:
        """flowrun extension: the effective configuration of this environment."""
        return self._config

    def set_state_backend(self, state_backend: Any) -> StreamExecutionEnvironment:
        """Where keyed state lives: ``HashMapStateBackend()`` or ``EmbeddedLmdbStateBackend()``.

        Without a call, ``state.backend`` decides (``-D state.backend=hashmap``; LMDB default).
        """
        if not hasattr(state_backend, "create_keyed_backend"):
            raise TypeError(
                f"set_state_backend() expects a state backend such as HashMapStateBackend() or "
                f"EmbeddedLmdbStateBackend(), got {type(state_backend).__name__}"
            )
        self._state_backend = state_backend
        return self

    def get_state_backend(self) -> Any:
        return self._state_backend

    def set_global_job_parameters(self, parameters: dict[str, str]) -> StreamExecutionEnvironment:
        self._job_parameters = dict(parameters)
        return self

    # -- checkpointing and restarts -------------------------------------------------
    def enable_checkpointing(
        self, interval: int, mode: CheckpointingMode | None = None
    ) -> StreamExecutionEnvironment:
        """Checkpoint every ``interval`` ms (at least 10); ``mode`` defaults to EXACTLY_ONCE.

        Writes ``execution.checkpointing.interval`` (and ``.mode``) into the environment's
        configuration, exactly what ``-D execution.checkpointing.interval=...`` sets.

        Example::

            >>> from flowrun.core.checkpoint_config import CheckpointingMode
            >>> env = StreamExecutionEnvironment.get_execution_environment()
            >>> env.enable_checkpointing(1000, CheckpointingMode.AT_LEAST_ONCE).get_checkpoint_interval()
            1000
            >>> env.get_checkpointing_mode()
            <CheckpointingMode.AT_LEAST_ONCE: 1>
        """
        checkpoints = self.get_checkpoint_config()
        checkpoints._check_interval(interval)  # before the mode, so a bad call changes nothing
        if mode is not None:
            checkpoints.set_checkpointing_mode(mode)
        checkpoints.set_checkpoint_interval(interval)
        return self

    def get_checkpoint_config(self) -> CheckpointConfig:
        """The live view of this environment's checkpoint settings (always the same object)."""
        from .checkpoint_config import CheckpointConfig

        if self._checkpoint_config is None:
            self._checkpoint_config = CheckpointConfig(self._config)
        return self._checkpoint_config

    def get_checkpoint_interval(self) -> int:
        """Milliseconds between checkpoints; -1 when checkpointing is off."""
        return self.get_checkpoint_config().get_checkpoint_interval()

    def get_checkpointing_mode(self) -> CheckpointingMode:
        return self.get_checkpoint_config().get_checkpointing_mode()

    def is_unaligned_checkpoints_enabled(self) -> bool:
        return self.get_checkpoint_config().is_unaligned_checkpoints_enabled()

    def is_force_unaligned_checkpoints(self) -> bool:
        return self.get_checkpoint_config().is_force_unaligned_checkpoints()

    def set_default_savepoint_directory(self, directory: str) -> StreamExecutionEnvironment:
        """Where savepoints go when none is named (``state.savepoints.dir``; a path, a
        ``file://`` or an ``s3://`` URI)."""
        from .checkpoint_config import _path_arg

        self._config.set(cfg.SAVEPOINT_DIRECTORY.key, _path_arg(directory, "directory"))
        return self

    def get_default_savepoint_directory(self) -> str | None:
        return self._config.get(cfg.SAVEPOINT_DIRECTORY)

    def set_restart_strategy(
        self, restart_strategy_configuration: RestartStrategyConfiguration
    ) -> None:
        """How the job recovers from failures, e.g. ``RestartStrategies.fixed_delay_restart(3, 10_000)``.

        Writes Flink's ``restart-strategy.*`` keys into the environment's configuration;
        ``RestartStrategies.fall_back_restart()`` restores them to what the environment was
        created with (the ``-D`` flags of ``flowrun run``), i.e. the cluster-level choice.

        Example::

            >>> from flowrun.core.restart_strategy import RestartStrategies
            >>> env = StreamExecutionEnvironment.get_execution_environment()
            >>> env.set_restart_strategy(RestartStrategies.failure_rate_restart(3, 60_000, 500))
            >>> env.get_configuration().get_string("restart-strategy")
            'failure-rate'
            >>> env.get_restart_strategy() == RestartStrategies.failure_rate_restart(3, 60_000, 500)
            True
        """
        from .restart_strategy import (
            RESTART_STRATEGY_KEYS,
            FallbackRestartStrategyConfiguration,
            RestartStrategyConfiguration,
        )

        if not isinstance(restart_strategy_configuration, RestartStrategyConfiguration):
            raise TypeError(
                "set_restart_strategy() expects a configuration from RestartStrategies, e.g. "
                f"RestartStrategies.fixed_delay_restart(3, 10000), got {restart_strategy_configuration!r}"
            )
        if isinstance(restart_strategy_configuration, FallbackRestartStrategyConfiguration):
            for key in RESTART_STRATEGY_KEYS:
                if self._initial_config.contains_key(key):
                    self._config.set(key, self._initial_config.get(key))
                else:
                    self._config.remove_config(key)
            return
        for key, value in restart_strategy_configuration.to_config_entries().items():
            self._config.set(key, value)

    def get_restart_strategy(self) -> RestartStrategyConfiguration:
        """The strategy the configuration describes; ``FallbackRestartStrategyConfiguration``
        when ``restart-strategy`` is unset."""
        from .restart_strategy import RestartStrategies

        return RestartStrategies.from_configuration(self._config)

    # -- sources ------------------------------------------------------------------
    def _source(self, name: str, source: Any, type_info: Any = None) -> DataStream:
        from .typeinfo import normalize_type

        t = SourceTransformation(
            name=name,
            inputs=[],
            factory=ops.SourceOperator(name, source),
            source=source,
            output_type=normalize_type(type_info) if type_info is not None else None,
            arrow=bool(source.produces_arrow()),
        )
        self._transformations.append(t)
        return DataStream(self, t)

    def from_collection(self, collection: list, type_info: Any = None) -> DataStream:
        """A bounded stream of the given elements (parallelism 1, as in Flink)."""
        from .connectors.collection import CollectionSource

        return self._source(
            "Source: Collection Source", CollectionSource(list(collection)), type_info
        )

    def from_elements(self, *elements: Any) -> DataStream:
        return self.from_collection(list(elements))

    def read_text_file(
        self, file_path: str, charset_name: str = "UTF-8", as_arrow: bool = False
    ) -> DataStream:
        """Lines of a file (or directory); p readers share one file through byte-range splits.

        With ``as_arrow=True`` the stream carries ``pyarrow.RecordBatch`` with a
        ``line`` column (the Arrow fast path).
        """
        import os

        from .connectors.text_file import TextFileSource

        if not os.path.exists(file_path):
            raise FileNotFoundError(f"read_text_file: {file_path} does not exist")
        source = TextFileSource(file_path, charset_name, as_arrow=as_arrow)
        from .typeinfo import Types

        return self._source(f"Source: {file_path}", source, None if as_arrow else Types.STRING())

    def socket_text_stream(
        self, hostname: str, port: int, delimiter: str = "\n", max_retry: int = 0
    ) -> DataStream:
        from .connectors.socket import SocketTextSource

        source = SocketTextSource(hostname, port, delimiter, max_retry)
        from .typeinfo import Types

        return self._source("Source: Socket Stream", source, Types.STRING())

    def from_source(
        self,
        source: Any,
        watermark_strategy: Any = None,
        source_name: str = "Custom Source",
        type_info: Any = None,
    ) -> DataStream:
        return self._source(f"Source: {source_name}", source, type_info)

    def from_sequence(self, start: int, end: int) -> DataStream:
        from .connectors.number_seq import NumberSequenceSource

        return self.from_source(NumberSequenceSource(start, end), None, "Sequence Source")

    # -- running ------------------------------------------------------------------
    def _job_graph(
        self, job_name: str | None, sinks: list[Transformation] | None = None
    ) -> JobGraph:
        from .checkpoint_config import validate_checkpointing
        from .restart_strategy import RestartStrategies

        validate_checkpointing(self._config)
        RestartStrategies.from_configuration(self._config)  # raises on inconsistent restart keys
        roots = sinks if sinks is not None else self._transformations
        graph = StreamGraph.from_transformations(
            job_name or "Flink Streaming Job", roots, self._parallelism, self._config
        )
        return JobGraph.from_stream_graph(graph)

    def get_execution_plan(self) -> str:
        """The chained plan of the job defined so far (does not clear it)."""
        return self._job_graph(None).describe()

    def execute(self, job_name: str | None = None) -> JobExecutionResult:
        """Run the job to completion; raises JobExecutionError with the cause on failure."""
        from .runtime.job_manager import JobManager

        job_graph = self._job_graph(job_name)
        self._transformations = []
        if _Context.plan_only:
            _Context.plans.append(job_graph.describe())
            _Context.job_graphs.append(job_graph)
            return JobExecutionResult("0" * 32, 0)
        jm = JobManager(
            job_graph,
            job_parameters=self._job_parameters,
            state_backend=self._state_backend,
            job_name=job_graph.job_name,
        )
        outcome = _run_with_sigint(jm)
        if outcome.savepoint_path:
            print(f"Savepoint completed. Path: {outcome.savepoint_path}", flush=True)
        result = JobExecutionResult(outcome.job_id, outcome.net_runtime_ms, outcome.metrics)
        result._outcome = outcome  # checkpoints and restarts, for benchmarks and tests
        _Context.results.append(result)
        return result

    def _execute_and_collect(
        self, sink: Transformation, job_name: str | None, limit: int | None
    ) -> list | CloseableIterator:
        from .runtime.job_manager import JobManager

        others = [t for t in self._transformations if t is not sink]
        job_graph = self._job_graph(job_name, [sink])
        self._transformations = others
        records: queue.Queue = queue.Queue()
        jm = JobManager(
            job_graph,
            on_collect=records.put,
            job_parameters=self._job_parameters,
            state_backend=self._state_backend,
        )

        def run() -> None:
            try:
                jm.run()
                records.put(_End(None))
            except BaseException as exc:
                records.put(_End(exc))

        thread = threading.Thread(target=run, name="flowrun-jobmanager", daemon=True)
        thread.start()
        iterator = CloseableIterator(jm, records, thread)
        if limit is None:
            return iterator
        out = []
        try:
            for item in iterator:
                out.append(item)
                if len(out) >= limit:
                    break
        finally:
            iterator.close()
        return out

    def close(self) -> None:
        self._transformations = []


def _run_with_sigint(jm: Any) -> Any:
    """Run the JobManager; Ctrl-C cancels the job cleanly instead of tearing through it."""
    if threading.current_thread() is not threading.main_thread():
        return jm.run()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(_signum: int, _frame: Any) -> None:
        jm.cancel("cancelled by Ctrl-C")

    signal.signal(signal.SIGINT, on_sigint)
    try:
        return jm.run()
    finally:
        signal.signal(signal.SIGINT, previous)
