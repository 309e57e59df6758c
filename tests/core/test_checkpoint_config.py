"""Checkpoint configuration: env methods, the CheckpointConfig view, storages, config keys, CLI."""

from __future__ import annotations

import doctest
import importlib
import os
import textwrap
from datetime import timedelta

import pytest
from flowrun_testing import run_flowrun

from flowrun.core import (
    CheckpointConfig,
    CheckpointingMode,
    ExternalizedCheckpointCleanup,
    FileSystemCheckpointStorage,
    JobManagerCheckpointStorage,
    StreamExecutionEnvironment,
)
from flowrun.core.checkpoint_config import validate_checkpointing
from flowrun.core.config import Configuration, ConfigurationError
from flowrun.core.time import Duration


def _env(conf: Configuration | None = None) -> StreamExecutionEnvironment:
    return StreamExecutionEnvironment.get_execution_environment(conf)


# -- defaults ---------------------------------------------------------------------------


def test_defaults_are_flinks():
    env = _env()
    checkpoints = env.get_checkpoint_config()
    assert env.get_checkpoint_interval() == -1
    assert checkpoints.is_checkpointing_enabled() is False
    assert env.get_checkpointing_mode() is CheckpointingMode.EXACTLY_ONCE
    assert checkpoints.get_checkpoint_timeout() == 600_000 == CheckpointConfig.DEFAULT_TIMEOUT
    assert checkpoints.get_min_pause_between_checkpoints() == 0
    assert checkpoints.get_max_concurrent_checkpoints() == 1
    assert checkpoints.get_tolerable_checkpoint_failure_number() == 0
    assert checkpoints.is_fail_on_checkpointing_errors() is True
    assert checkpoints.get_externalized_checkpoint_cleanup() is (
        ExternalizedCheckpointCleanup.NO_EXTERNALIZED_CHECKPOINTS
    )
    assert checkpoints.is_externalized_checkpoints_enabled() is False
    assert env.is_unaligned_checkpoints_enabled() is False
    assert env.is_force_unaligned_checkpoints() is False
    assert checkpoints.get_aligned_checkpoint_timeout() == Duration.of_millis(0)
    assert checkpoints.get_checkpoint_storage() is None
    assert env.get_default_savepoint_directory() is None
    assert (
        CheckpointConfig.DEFAULT_MODE,
        CheckpointConfig.DEFAULT_MIN_PAUSE_BETWEEN_CHECKPOINTS,
        CheckpointConfig.DEFAULT_MAX_CONCURRENT_CHECKPOINTS,
    ) == (CheckpointingMode.EXACTLY_ONCE, 0, 1)
    assert [m.value for m in CheckpointingMode] == [0, 1]
    assert [c.value for c in ExternalizedCheckpointCleanup] == [0, 1, 2]
    assert env.get_configuration().to_dict() == {}  # reading writes nothing


def test_get_checkpoint_config_is_one_live_object():
    env = _env()
    assert env.get_checkpoint_config() is env.get_checkpoint_config()
    env.get_configuration().set_string("execution.checkpointing.timeout", "2 min")
    assert env.get_checkpoint_config().get_checkpoint_timeout() == 120_000


# -- code and flags produce the same configuration ----------------------------------------


def test_job_configured_in_code_equals_job_configured_with_flags(tmp_path):
    env = _env()
    env.enable_checkpointing(5_000, CheckpointingMode.EXACTLY_ONCE)
    checkpoints = env.get_checkpoint_config()
    (
        checkpoints.set_checkpoint_timeout(60_000)
        .set_min_pause_between_checkpoints(500)
        .set_max_concurrent_checkpoints(2)
        .set_tolerable_checkpoint_failure_number(3)
        .set_externalized_checkpoint_cleanup(ExternalizedCheckpointCleanup.RETAIN_ON_CANCELLATION)
        .enable_unaligned_checkpoints()
        .set_aligned_checkpoint_timeout(Duration.of_seconds(2))
        .set_force_unaligned_checkpoints(True)
        .set_checkpoint_storage(f"file://{tmp_path}/ckp")
    )
    env.set_default_savepoint_directory(str(tmp_path / "sp"))

    flags = Configuration()
    for pair in [
        "execution.checkpointing.interval=5 s",
        "execution.checkpointing.mode=exactly_once",
        "execution.checkpointing.timeout=1 min",
        "execution.checkpointing.min-pause=500ms",
        "execution.checkpointing.max-concurrent-checkpoints=2",
        "execution.checkpointing.tolerable-failed-checkpoints=3",
        "execution.checkpointing.externalized-checkpoint-retention=RETAIN_ON_CANCELLATION",
        "execution.checkpointing.unaligned=true",
        "execution.checkpointing.aligned-checkpoint-timeout=2s",
        "execution.checkpointing.unaligned.forced=true",
        "state.checkpoint-storage=filesystem",
        f"state.checkpoints.dir={tmp_path}/ckp/",
        f"state.savepoints.dir=file://{tmp_path}/sp",
    ]:
        key, value = pair.split("=", 1)
        flags.set_string(key, value)
    assert env.get_configuration().to_dict() == flags.to_dict()
    assert flags.to_dict()["state.checkpoints.dir"] == f"{tmp_path}/ckp"

    from_flags = _env(flags)
    view = from_flags.get_checkpoint_config()
    assert from_flags.get_checkpoint_interval() == 5_000
    assert view.get_checkpoint_timeout() == 60_000
    assert view.get_tolerable_checkpoint_failure_number() == 3
    assert view.is_externalized_checkpoints_enabled() is True
    assert from_flags.is_unaligned_checkpoints_enabled() is True
    assert from_flags.is_force_unaligned_checkpoints() is True
    assert view.get_alignment_timeout() == Duration.of_millis(2000)
    assert view.get_checkpoint_storage() == FileSystemCheckpointStorage(str(tmp_path / "ckp"))
    assert from_flags.get_default_savepoint_directory() == str(tmp_path / "sp")


def test_enable_checkpointing_without_mode_keeps_the_mode():
    env = _env(Configuration({"execution.checkpointing.mode": "AT_LEAST_ONCE"}))
    assert env.enable_checkpointing(10) is env
    assert env.get_checkpointing_mode() is CheckpointingMode.AT_LEAST_ONCE
    assert env.get_checkpoint_config().is_checkpointing_enabled() is True
    assert env.get_configuration().get("execution.checkpointing.interval") == 10


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,error,needle",
    [
        (
            lambda e: e.enable_checkpointing(9),
            ValueError,
            "checkpoint interval must be at least 10 ms, got 9 ms",
        ),
        (lambda e: e.enable_checkpointing(0), ValueError, "at least 10 ms, got 0 ms"),
        (
            lambda e: e.enable_checkpointing(5, CheckpointingMode.AT_LEAST_ONCE),
            ValueError,
            "at least 10 ms, got 5 ms",
        ),
        (lambda e: e.enable_checkpointing(-1), ValueError, "at least 10 ms, got -1 ms"),
        (
            lambda e: e.enable_checkpointing("1000"),
            TypeError,
            "checkpoint_interval must be an int, got str '1000'",
        ),
        (lambda e: e.enable_checkpointing(True), TypeError, "checkpoint_interval must be an int"),
        (
            lambda e: e.enable_checkpointing(100, "EXACTLY_ONCE"),
            TypeError,
            "must be a CheckpointingMode",
        ),
        (
            lambda e: e.get_checkpoint_config().set_checkpoint_timeout(9),
            ConfigurationError,
            "execution.checkpointing.timeout: must be at least 10 ms, got 9 ms",
        ),
        (
            lambda e: e.get_checkpoint_config().set_min_pause_between_checkpoints(-1),
            ConfigurationError,
            "execution.checkpointing.min-pause: must be at least 0 ms, got -1 ms",
        ),
        (
            lambda e: e.get_checkpoint_config().set_max_concurrent_checkpoints(0),
            ConfigurationError,
            "execution.checkpointing.max-concurrent-checkpoints: must be within 1..2147483647, got 0",
        ),
        (
            lambda e: e.get_checkpoint_config().set_tolerable_checkpoint_failure_number(-1),
            ConfigurationError,
            "execution.checkpointing.tolerable-failed-checkpoints: must be within 0..",
        ),
        (
            lambda e: e.get_checkpoint_config().set_aligned_checkpoint_timeout(
                Duration.of_millis(-5)
            ),
            ConfigurationError,
            "aligned-checkpoint-timeout: must be at least 0 ms, got -5 ms",
        ),
        (
            lambda e: e.get_checkpoint_config().set_aligned_checkpoint_timeout("5 s"),
            TypeError,
            "aligned_checkpoint_timeout must be a Duration, timedelta or int ms, got str",
        ),
        (
            lambda e: e.get_checkpoint_config().set_externalized_checkpoint_cleanup(
                "RETAIN_ON_CANCELLATION"
            ),
            TypeError,
            "must be an ExternalizedCheckpointCleanup",
        ),
        (
            lambda e: e.get_checkpoint_config().enable_unaligned_checkpoints(1),
            TypeError,
            "enabled must be a bool, got 1",
        ),
        (
            lambda e: e.get_checkpoint_config().set_fail_on_checkpointing_errors("no"),
            TypeError,
            "must be a bool",
        ),
    ],
)
def test_bad_settings_raise_clear_errors_and_change_nothing(call, error, needle):
    env = _env()
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")):
        call(env)
    assert env.get_configuration().to_dict() == {}


@pytest.mark.parametrize(
    "key,value,needle",
    [
        (
            "execution.checkpointing.interval",
            "5 ms",
            "must be at least 10 ms (or -1 to disable checkpointing), got 5 ms",
        ),
        ("execution.checkpointing.interval", "0", "got 0 ms"),
        ("execution.checkpointing.interval", "often", "expected a duration"),
        ("execution.checkpointing.interval", "1.5 s", "expected a duration"),
        (
            "execution.checkpointing.mode",
            "EXACTLY-ONCE",
            "must be one of EXACTLY_ONCE, AT_LEAST_ONCE",
        ),
        ("execution.checkpointing.timeout", "-1 s", "must be at least 10 ms, got -1000 ms"),
        ("execution.checkpointing.unaligned", "maybe", "expected true or false"),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "KEEP",
            "must be one of NO_EXTERNALIZED_CHECKPOINTS",
        ),
        ("state.checkpoint-storage", "rocksdb", "must be jobmanager or filesystem, got 'rocksdb'"),
        ("state.checkpoints.num-retained", "0", "must be within 1.."),
        ("state.checkpoints.dir", "", "must not be empty"),
        ("state.checkpoints.dir", "   ", "must not be empty"),
        (
            "state.checkpoints.dir",
            "hdfs://namenode/flink/ckp",
            "unsupported file system scheme 'hdfs'",
        ),
        ("state.checkpoints.dir", "file://otherhost/ckp", "must name a local path"),
        ("state.checkpoints.dir", "file:///", "cannot use the root directory"),
        ("state.checkpoints.dir", "s3:///no-bucket", "must name a bucket"),
        ("state.savepoints.dir", "s3://bucket/x?region=eu", "query strings and fragments"),
        ("execution.savepoint.path", "gs://b/sp", "unsupported file system scheme 'gs'"),
        ("jobmanager.execution.failover-strategy", "individual", "must be one of region, full"),
        ("rest.port", "70000", "must be within 0..65535, got 70000"),
    ],
)
def test_bad_flag_values_name_the_key(key, value, needle):
    with pytest.raises(ConfigurationError) as info:
        Configuration().set_string(key, value)
    assert str(info.value).startswith(f"invalid value for {key}: ")
    assert needle in str(info.value)


def test_durations_accept_flinks_units():
    conf = Configuration()
    for text, ms in [
        ("100", 100),
        ("100 ms", 100),
        ("10 milli", 10),
        ("2 s", 2_000),
        ("3 seconds", 3_000),
        ("1 min", 60_000),
        ("2 minutes", 120_000),
        ("1 h", 3_600_000),
        ("1 d", 86_400_000),
    ]:
        assert (
            conf.set_string("execution.checkpointing.timeout", text).get(
                "execution.checkpointing.timeout"
            )
            == ms
        )
    conf.set("execution.checkpointing.timeout", timedelta(seconds=30))
    assert conf.get("execution.checkpointing.timeout") == 30_000


def test_unaligned_needs_exactly_once_whichever_is_set_first():
    env = _env()
    env.enable_checkpointing(100, CheckpointingMode.AT_LEAST_ONCE)
    with pytest.raises(
        ValueError, match="unaligned checkpoints are supported only in EXACTLY_ONCE"
    ):
        env.get_checkpoint_config().enable_unaligned_checkpoints()
    env = _env()
    env.get_checkpoint_config().enable_unaligned_checkpoints()
    with pytest.raises(ValueError, match="cannot be combined with execution.checkpointing.mode"):
        env.enable_checkpointing(100, CheckpointingMode.AT_LEAST_ONCE)
    assert env.get_checkpointing_mode() is CheckpointingMode.EXACTLY_ONCE
    assert env.get_checkpoint_interval() == -1  # the failed call changed nothing
    env.get_checkpoint_config().disable_unaligned_checkpoints()
    env.enable_checkpointing(100, CheckpointingMode.AT_LEAST_ONCE)  # now fine


def test_flag_combinations_are_checked_when_the_job_is_built():
    conf = Configuration(
        {
            "execution.checkpointing.unaligned": "true",
            "execution.checkpointing.mode": "AT_LEAST_ONCE",
        }
    )
    env = _env(conf)
    env.from_collection([1]).print()
    with pytest.raises(ConfigurationError, match="supported only in EXACTLY_ONCE"):
        env.get_execution_plan()
    with pytest.raises(ConfigurationError, match="needs a directory: set state.checkpoints.dir"):
        validate_checkpointing(Configuration({"state.checkpoint-storage": "filesystem"}))


def test_fail_on_checkpointing_errors_maps_to_the_tolerable_number():
    checkpoints = _env().get_checkpoint_config()
    checkpoints.set_fail_on_checkpointing_errors(False)
    assert checkpoints.get_tolerable_checkpoint_failure_number() == 2**31 - 1
    assert checkpoints.is_fail_on_checkpointing_errors() is False
    checkpoints.set_fail_on_checkpointing_errors(True)
    assert checkpoints.get_tolerable_checkpoint_failure_number() == 0
    checkpoints.set_tolerable_checkpoint_failure_number(2)
    assert checkpoints.is_fail_on_checkpointing_errors() is False


def test_externalized_checkpoints_and_the_deprecated_alias():
    checkpoints = _env().get_checkpoint_config()
    checkpoints.enable_externalized_checkpoints(
        ExternalizedCheckpointCleanup.DELETE_ON_CANCELLATION
    )
    assert checkpoints.get_externalized_checkpoint_cleanup() is (
        ExternalizedCheckpointCleanup.DELETE_ON_CANCELLATION
    )
    assert checkpoints.is_externalized_checkpoints_enabled() is True
    assert (
        checkpoints.get_configuration().get_string(
            "execution.checkpointing.externalized-checkpoint-retention"
        )
        == "DELETE_ON_CANCELLATION"
    )


def test_alignment_timeout_names_and_the_deprecated_key():
    checkpoints = _env().get_checkpoint_config()
    checkpoints.set_alignment_timeout(Duration.of_seconds(3))
    assert checkpoints.get_aligned_checkpoint_timeout() == Duration.of_millis(3000)
    checkpoints.set_aligned_checkpoint_timeout(250)
    assert checkpoints.get_alignment_timeout() == Duration.of_millis(250)

    conf = Configuration()
    with pytest.warns(
        DeprecationWarning, match="'execution.checkpointing.alignment-timeout' is deprecated"
    ):
        conf.set_string("execution.checkpointing.alignment-timeout", "7 s")
    assert conf.to_dict() == {"execution.checkpointing.aligned-checkpoint-timeout": 7000}
    assert conf.contains_key("execution.checkpointing.alignment-timeout")
    assert CheckpointConfig(conf).get_aligned_checkpoint_timeout() == Duration.of_seconds(7)


# -- storage ------------------------------------------------------------------------------


def test_storage_from_a_uri_or_a_directory(tmp_path):
    checkpoints = _env().get_checkpoint_config()
    checkpoints.set_checkpoint_storage(f"file://{tmp_path}/a/")
    assert checkpoints.get_checkpoint_storage() == FileSystemCheckpointStorage(str(tmp_path / "a"))
    checkpoints.set_checkpoint_storage_dir(tmp_path / "b")
    conf = checkpoints.get_configuration()
    assert conf.get("state.checkpoints.dir") == str(tmp_path / "b")
    assert conf.get("state.checkpoint-storage") == "filesystem"
    storage = FileSystemCheckpointStorage(str(tmp_path / "c"), file_state_size_threshold=1024)
    checkpoints.set_checkpoint_storage(storage)
    assert checkpoints.get_checkpoint_storage() is storage  # the object set, while it applies
    conf.set_string("state.checkpoints.dir", str(tmp_path / "d"))
    assert checkpoints.get_checkpoint_storage() == FileSystemCheckpointStorage(str(tmp_path / "d"))
    checkpoints.set_checkpoint_storage("s3://bucket/flink/ckp/")
    assert conf.get("state.checkpoints.dir") == "s3://bucket/flink/ckp"


def test_relative_storage_paths_are_made_absolute_in_the_client(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoints = _env().get_checkpoint_config()
    checkpoints.set_checkpoint_storage("ckp/../checkpoints")
    assert checkpoints.get_configuration().get("state.checkpoints.dir") == os.path.join(
        str(tmp_path), "checkpoints"
    )


def test_jobmanager_storage_uses_the_working_dir_unless_a_directory_is_given(tmp_path):
    flags = Configuration({"state.checkpoints.dir": str(tmp_path / "flags")})
    checkpoints = _env(flags).get_checkpoint_config()
    checkpoints.set_checkpoint_storage(JobManagerCheckpointStorage())
    # as in Flink, the storage without a path takes state.checkpoints.dir from the configuration
    assert checkpoints.get_configuration().to_dict() == {
        "state.checkpoints.dir": str(tmp_path / "flags"),
        "state.checkpoint-storage": "jobmanager",
    }
    assert checkpoints.get_checkpoint_storage() == JobManagerCheckpointStorage()

    bare = _env().get_checkpoint_config()
    bare.set_checkpoint_storage(JobManagerCheckpointStorage())
    assert bare.get_configuration().get("state.checkpoints.dir") is None
    bare.set_checkpoint_storage(JobManagerCheckpointStorage(f"file://{tmp_path}/jm", 1024))
    assert bare.get_configuration().get("state.checkpoints.dir") == str(tmp_path / "jm")
    stored = bare.get_checkpoint_storage()
    assert stored.get_checkpoint_path() == str(tmp_path / "jm")
    assert stored.get_max_state_size() == 1024
    assert JobManagerCheckpointStorage().get_max_state_size() == 5 * 1024 * 1024


def test_storage_classes_validate_their_arguments():
    with pytest.raises(ValueError, match="checkpoint_path must not be None"):
        FileSystemCheckpointStorage()
    with pytest.raises(ValueError, match="invalid checkpoint_path: unsupported file system scheme"):
        FileSystemCheckpointStorage("hdfs://nn/ckp")
    with pytest.raises(TypeError, match="must be a path or a file:// or s3:// URI, got 42"):
        FileSystemCheckpointStorage(42)
    with pytest.raises(ValueError, match=r"file_state_size_threshold must be within -1..1048576"):
        FileSystemCheckpointStorage("/tmp/x", file_state_size_threshold=2 * 1024 * 1024)
    with pytest.raises(ValueError, match="write_buffer_size must be -1"):
        FileSystemCheckpointStorage("/tmp/x", write_buffer_size=-2)
    with pytest.raises(ValueError, match="max_state_size must be > 0, got -1"):
        JobManagerCheckpointStorage(max_state_size=-1)
    with pytest.raises(TypeError, match="expects a CheckpointStorage or a directory, got 3"):
        _env().get_checkpoint_config().set_checkpoint_storage(3)
    fs = FileSystemCheckpointStorage("/tmp/x")
    assert (fs.get_min_file_size_threshold(), fs.get_write_buffer_size()) == (20480, 20480)
    assert fs.get_savepoint_path() is None
    assert FileSystemCheckpointStorage.MAX_FILE_STATE_THRESHOLD == 1024 * 1024


def test_default_savepoint_directory(tmp_path):
    env = _env()
    assert env.set_default_savepoint_directory(f"file://{tmp_path}/sp") is env
    assert env.get_default_savepoint_directory() == str(tmp_path / "sp")
    with pytest.raises(ValueError, match="invalid directory: must not be empty"):
        env.set_default_savepoint_directory("")


def test_configuration_remove_and_unset_values():
    conf = Configuration({"state.checkpoints.dir": "/tmp/ckp"})
    assert conf.get_string("state.savepoints.dir") is None
    assert conf.get_string("state.savepoints.dir", "fallback") == "fallback"
    assert conf.remove_config("state.checkpoints.dir") is True
    assert conf.remove_config("state.checkpoints.dir") is False
    assert conf.get("state.checkpoints.dir") is None


# -- the command line -----------------------------------------------------------------------


def test_flowrun_config_lists_the_new_keys():
    code, out, _ = run_flowrun(["config"])
    assert code == 0
    for line in [
        "execution.checkpointing.interval = -1",
        "execution.checkpointing.mode = 'EXACTLY_ONCE'",
        "execution.checkpointing.timeout = 600000",
        "state.checkpoints.dir = None",
        "restart-strategy = None",
        "restart-strategy.exponential-delay.jitter-factor = 0.1",
        "jobmanager.execution.failover-strategy = 'region'",
        "rest.port = 8081",
    ]:
        assert line in out, line
    assert "Deprecated key: execution.checkpointing.alignment-timeout" in out


def test_flags_reach_the_job_script_as_env_settings(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(
        textwrap.dedent(
            """
            from flowrun.core import StreamExecutionEnvironment
            env = StreamExecutionEnvironment.get_execution_environment()
            c = env.get_checkpoint_config()
            print("interval", env.get_checkpoint_interval())
            print("mode", env.get_checkpointing_mode().name)
            print("storage", c.get_checkpoint_storage())
            print("restart", env.get_restart_strategy().get_description())
            """
        )
    )
    code, out, err = run_flowrun(
        [
            "run",
            str(job),
            "-D",
            "execution.checkpointing.interval=2 s",
            "-D",
            "execution.checkpointing.mode=at_least_once",
            "-D",
            f"state.checkpoints.dir=file://{tmp_path}/ckp",
            "-D",
            "restart-strategy=fixeddelay",
            "-D",
            "restart-strategy.fixed-delay.attempts=5",
        ]
    )
    assert code == 0, err
    assert out.splitlines() == [
        "interval 2000",
        "mode AT_LEAST_ONCE",
        f"storage FileSystemCheckpointStorage(checkpoint_path='{tmp_path}/ckp')",
        "restart Restart with fixed delay (1000 ms). #5 restart attempts.",
    ]


@pytest.mark.parametrize(
    "flags,needle",
    [
        (
            ["-D", "execution.checkpointing.interval=5ms"],
            "invalid value for execution.checkpointing.interval: must be at least 10 ms",
        ),
        (["-D", "restart-strategy=sometimes"], "unknown restart strategy 'sometimes'"),
        (["-D", "state.checkpoints.dir=hdfs://nn/ckp"], "unsupported file system scheme 'hdfs'"),
    ],
)
def test_bad_flags_exit_2_before_the_job_runs(tmp_path, flags, needle):
    job = tmp_path / "job.py"
    job.write_text("print('the job ran')\n")
    code, out, err = run_flowrun(["run", str(job), *flags])
    assert code == 2
    assert needle in err
    assert "the job ran" not in out


def test_inconsistent_flags_fail_the_job_at_execute_without_starting_it(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(
        textwrap.dedent(
            """
            from flowrun.core import StreamExecutionEnvironment
            env = StreamExecutionEnvironment.get_execution_environment()
            env.from_collection([1, 2, 3]).print()
            env.execute("inconsistent")
            """
        )
    )
    code, out, err = run_flowrun(
        [
            "run",
            str(job),
            "-D",
            "execution.checkpointing.unaligned=true",
            "-D",
            "execution.checkpointing.mode=AT_LEAST_ONCE",
        ]
    )
    assert code == 2
    assert "supported only in EXACTLY_ONCE" in err
    assert out == ""


def test_docstring_examples():
    for name in ("flowrun.core.checkpoint_config", "flowrun.core.config"):
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0 and result.attempted > 0, name
