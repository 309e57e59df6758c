"""FileSink: part-file names and life cycle, rolling, buckets, encoding, buffering."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

import cloudpickle
import pyarrow as pa
import pytest

from flowrun.core.connectors import (
    BucketAssigner,
    Encoder,
    FileSink,
    OutputFileConfig,
    RollingPolicy,
)
from flowrun.core.connectors.file_system import OnCheckpointRollingPolicy


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:  # 2023-11-14 22:13:20 UTC
        self.now = now

    def __call__(self) -> float:
        return self.now


def base_path_sink(path, clock=None, **options):
    builder = FileSink.for_row_format(
        str(path), Encoder.simple_string_encoder(), **({"clock": clock} if clock else {})
    ).with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
    if "rolling_policy" in options:
        builder = builder.with_rolling_policy(options["rolling_policy"])
    if "output_file_config" in options:
        builder = builder.with_output_file_config(options["output_file_config"])
    if "bucket_check_interval" in options:
        builder = builder.with_bucket_check_interval(options["bucket_check_interval"])
    return builder.build()


def open_writer(sink, subtask=0, parallelism=1, uid="sink-1"):
    writer = sink.create_writer(subtask, parallelism, "job-1", uid)
    writer.open()
    return writer


def listing(path) -> dict[str, str]:
    """Relative path -> content of every file below ``path``."""
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, encoding="utf-8") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


def test_finish_makes_in_progress_file_final(tmp_path):
    writer = open_writer(base_path_sink(tmp_path))
    writer.write(["a", "b"])
    writer.write(["c"])
    writer.flush()
    files = listing(tmp_path)
    assert len(files) == 1
    ((name, content),) = files.items()
    assert re.fullmatch(r"\.part-sink-1-0-0\.inprogress\.[0-9a-f]+", name)
    assert content == "a\nb\nc\n"
    writer.finish()
    assert listing(tmp_path) == {"part-sink-1-0-0": "a\nb\nc\n"}
    assert writer.finished_files == [str(tmp_path / "part-sink-1-0-0")]


def test_finish_without_records_creates_nothing(tmp_path):
    writer = open_writer(base_path_sink(tmp_path / "out"))
    writer.write([])
    writer.finish()
    assert not os.path.exists(tmp_path / "out")


def test_roll_on_size_follows_flink_rule(tmp_path):
    # Flink rolls *before* a record when the part already holds more than part_size bytes.
    policy = RollingPolicy.default_rolling_policy(part_size=10)
    for batched in (True, False):
        out = tmp_path / ("batched" if batched else "single")
        writer = open_writer(base_path_sink(out, rolling_policy=policy))
        records = ["aaaa"] * 5 + ["b"]
        if batched:
            writer.write(records)
        else:
            for record in records:
                writer.write([record])
        files_before_finish = listing(out)
        assert files_before_finish["part-sink-1-0-0"] == "aaaa\n" * 3  # rolled: finished now
        writer.finish()
        assert listing(out) == {
            "part-sink-1-0-0": "aaaa\n" * 3,
            "part-sink-1-0-1": "aaaa\n" * 2 + "b\n",
        }


def test_roll_on_inactivity_and_rollover_interval(tmp_path):
    clock = FakeClock(1000.0)
    policy = RollingPolicy.default_rolling_policy(rollover_interval=1000, inactivity_interval=500)
    writer = open_writer(
        base_path_sink(tmp_path, clock, rolling_policy=policy, bucket_check_interval=100)
    )
    writer.write(["x"])
    clock.now = 1000.45
    writer.flush()
    assert [n for n in listing(tmp_path) if not n.startswith(".")] == []
    clock.now = 1000.55  # 550 ms without a record
    writer.flush()
    assert listing(tmp_path) == {"part-sink-1-0-0": "x\n"}
    # Rollover: a part that keeps getting records still rolls after 1000 ms.
    for step in range(12):
        clock.now = 1001.0 + step * 0.1
        writer.write([str(step)])
    assert listing(tmp_path)["part-sink-1-0-1"] == "".join(f"{i}\n" for i in range(10))
    writer.finish()
    assert listing(tmp_path)["part-sink-1-0-2"] == "10\n11\n"


def test_bucket_check_interval_limits_time_checks(tmp_path):
    clock = FakeClock(0.0)
    policy = RollingPolicy.default_rolling_policy(inactivity_interval=10)
    writer = open_writer(
        base_path_sink(tmp_path, clock, rolling_policy=policy, bucket_check_interval=1000)
    )
    writer.write(["x"])
    clock.now = 0.5  # inactive for 500 ms, but the next check is only due at 1000 ms
    writer.flush()
    assert not any(not n.startswith(".") for n in listing(tmp_path))
    clock.now = 1.0
    writer.flush()
    assert "part-sink-1-0-0" in listing(tmp_path)


def test_on_checkpoint_policy_never_rolls_without_checkpoints(tmp_path):
    clock = FakeClock(0.0)
    policy = RollingPolicy.on_checkpoint_rolling_policy()
    assert isinstance(policy, OnCheckpointRollingPolicy)
    writer = open_writer(
        base_path_sink(tmp_path, clock, rolling_policy=policy, bucket_check_interval=1)
    )
    for step in range(100):
        clock.now = step * 3600.0
        writer.write(["y" * 1000])
        writer.flush()
    writer.finish()
    assert listing(tmp_path) == {"part-sink-1-0-0": ("y" * 1000 + "\n") * 100}


def test_date_time_buckets_share_one_counter(tmp_path):
    clock = FakeClock(1_700_000_000.0)  # 22:13:20 UTC
    sink = (
        FileSink.for_row_format(str(tmp_path), Encoder.simple_string_encoder(), clock=clock)
        .with_bucket_assigner(BucketAssigner.date_time_bucket_assigner(timezone_id="UTC"))
        .build()
    )
    writer = open_writer(sink)
    writer.write(["first"])
    clock.now += 3600
    writer.write(["second"])
    writer.finish()
    assert listing(tmp_path) == {
        os.path.join("2023-11-14--22", "part-sink-1-0-0"): "first\n",
        os.path.join("2023-11-14--23", "part-sink-1-0-1"): "second\n",
    }


def test_default_builder_uses_hourly_buckets_in_local_zone(tmp_path):
    clock = FakeClock()
    writer = open_writer(
        FileSink.for_row_format(str(tmp_path), Encoder.simple_string_encoder(), clock=clock).build()
    )
    writer.write(["z"])
    writer.finish()
    expected_bucket = datetime.fromtimestamp(clock.now).strftime("%Y-%m-%d--%H")
    assert listing(tmp_path) == {os.path.join(expected_bucket, "part-sink-1-0-0"): "z\n"}


def test_custom_per_element_bucket_assigner(tmp_path):
    class ByFirstLetter(BucketAssigner):
        def get_bucket_id(self, element, context):
            return element[0]

    sink = (
        FileSink.for_row_format(str(tmp_path), Encoder.simple_string_encoder())
        .with_bucket_assigner(ByFirstLetter())
        .build()
    )
    writer = open_writer(sink)
    writer.write(["apple", "banana", "avocado"])
    writer.finish()
    assert listing(tmp_path) == {
        os.path.join("a", "part-sink-1-0-0"): "apple\navocado\n",
        os.path.join("b", "part-sink-1-0-1"): "banana\n",
    }


def test_output_file_config_and_builder_defaults(tmp_path):
    config = OutputFileConfig.builder().with_part_prefix("data").with_part_suffix(".csv").build()
    assert (config.get_part_prefix(), config.get_part_suffix()) == ("data", ".csv")
    defaults = OutputFileConfig.builder().build()
    assert (defaults.get_part_prefix(), defaults.get_part_suffix()) == ("part", "")
    writer = open_writer(
        base_path_sink(tmp_path, output_file_config=config), subtask=3, parallelism=4
    )
    writer.write([1, 2.5, None])
    writer.finish()
    assert listing(tmp_path) == {"data-sink-1-3-0.csv": "1\n2.5\nNone\n"}


def test_counter_starts_after_existing_parts_of_same_subtask(tmp_path):
    for name in (
        "part-sink-1-0-0",
        "part-sink-1-0-5",
        ".part-sink-1-0-7.inprogress.abc",
        "part-sink-1-1-9",
        "other",
    ):
        (tmp_path / name).write_text("old\n")
    writer = open_writer(base_path_sink(tmp_path))
    writer.write(["new"])
    writer.finish()
    assert listing(tmp_path)["part-sink-1-0-8"] == "new\n"
    assert listing(tmp_path)["part-sink-1-0-5"] == "old\n"


def test_parallel_writers_and_unsafe_uid(tmp_path):
    sink = base_path_sink(tmp_path)
    writers = [open_writer(sink, i, 2, uid="my op/1") for i in range(2)]
    for i, writer in enumerate(writers):
        writer.write([f"from {i}"])
    for writer in writers:
        writer.finish()
    assert listing(tmp_path) == {"part-my_op_1-0-0": "from 0\n", "part-my_op_1-1-0": "from 1\n"}


def test_abort_removes_in_progress_and_keeps_finished(tmp_path):
    policy = RollingPolicy.default_rolling_policy(part_size=3)
    writer = open_writer(base_path_sink(tmp_path, rolling_policy=policy))
    writer.write(["long line", "next"])  # the first part rolls before "next"
    writer.flush()
    assert len(listing(tmp_path)) == 2
    writer.abort()
    assert listing(tmp_path) == {"part-sink-1-0-0": "long line\n"}


def test_arrow_batches_and_encoding(tmp_path):
    sink = (
        FileSink.for_row_format(str(tmp_path), Encoder.simple_string_encoder("ISO-8859-1"))
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .build()
    )
    writer = open_writer(sink)
    writer.write_batch(pa.record_batch({"line": ["café", None]}))
    writer.write_batch(pa.record_batch({"k": ["a"], "v": [1]}))
    writer.write([b"raw \xff bytes", "日"])
    writer.finish()
    with open(tmp_path / "part-sink-1-0-0", "rb") as f:
        assert f.read() == b"caf\xe9\nNone\n{'k': 'a', 'v': 1}\nraw \xff bytes\n?\n"


def test_one_write_call_per_batch(tmp_path, monkeypatch):
    calls = []
    real_write = os.write

    def counting_write(fd, data):
        calls.append(len(data))
        return real_write(fd, data)

    writer = open_writer(base_path_sink(tmp_path))
    monkeypatch.setattr(os, "write", counting_write)
    writer.write([f"record {i}" for i in range(1000)])
    writer.write([f"more {i}" for i in range(1000)])
    assert calls == []  # small batches stay buffered
    writer.flush()
    assert len(calls) == 1
    writer.write(["x" * 100] * 5000)  # > 256 KiB: written at once, in one call
    assert len(calls) == 2 and calls[1] == 101 * 5000
    monkeypatch.undo()
    writer.finish()


def test_sink_pickles_and_validates(tmp_path):
    sink = base_path_sink(
        tmp_path, rolling_policy=RollingPolicy.default_rolling_policy(part_size=5)
    )
    clone = cloudpickle.loads(cloudpickle.dumps(sink))
    writer = open_writer(clone)
    writer.write(["ok"])
    writer.finish()
    assert listing(tmp_path) == {"part-sink-1-0-0": "ok\n"}
    with pytest.raises(ValueError):
        FileSink.for_row_format(
            str(tmp_path), Encoder.simple_string_encoder()
        ).with_bucket_check_interval(0)
    with pytest.raises(ValueError):
        RollingPolicy.default_rolling_policy(part_size=0)
    assert FileSink.RowFormatBuilder is type(
        FileSink.for_row_format("x", Encoder.simple_string_encoder())
    )


def test_date_time_assigner_time_zones():
    from flowrun.core.connectors.bucket_assigner import BucketAssignerContext

    context = BucketAssignerContext(1_700_000_000_000)  # 2023-11-14T22:13:20Z
    cases = {
        ("yyyy-MM-dd--HH", "UTC"): "2023-11-14--22",
        ("yyyy-MM-dd--HH", "Asia/Shanghai"): "2023-11-15--06",
        ("yyyy/MM/dd/HH-mm", "GMT+8"): "2023/11/15/06-13",
        ("yyyyMMdd'T'HHmmss", "-05:00"): "20231114T171320",
    }
    for (pattern, zone), expected in cases.items():
        assigner = BucketAssigner.date_time_bucket_assigner(pattern, zone)
        assert assigner.get_bucket_id(None, context) == expected
    local = BucketAssigner.date_time_bucket_assigner("yyyy-MM-dd--HH")
    assert local.get_bucket_id(None, context) == datetime.fromtimestamp(1_700_000_000).strftime(
        "%Y-%m-%d--%H"
    )
    with pytest.raises(ValueError, match="time zone"):
        BucketAssigner.date_time_bucket_assigner("yyyy", "Mars/Olympus")


def test_java_date_patterns():
    from flowrun.core.connectors.java_date_format import JavaDateFormat

    moment = datetime(2024, 3, 5, 7, 4, 9, 123456, tzinfo=timezone.utc)
    cases = {
        "yyyy-MM-dd--HH": "2024-03-05--07",
        "yy-M-d H:m:s": "24-3-5 7:4:9",
        "MMM MMMM EEE EEEE": "Mar March Tue Tuesday",
        "hh:mm a": "07:04 AM",
        "h K k": "7 7 7",
        "SSS S": "123 1",
        "D DDD": "65 065",
        "'quoted ''text''' yyyy": "quoted 'text' 2024",
        "''yyyy''": "'2024'",
        "Z X XXX": "+0000 Z Z",
        "yyyy_MM.dd HH%": "2024_03.05 07%",
    }
    for pattern, expected in cases.items():
        assert JavaDateFormat(pattern).format(moment) == expected, pattern
    evening = datetime(2024, 3, 5, 19, 0, tzinfo=timezone.utc)
    assert JavaDateFormat("hh a K").format(evening) == "07 PM 7"
    with pytest.raises(ValueError, match="unsupported letter"):
        JavaDateFormat("yyyy-ww")
    with pytest.raises(ValueError, match="unterminated quote"):
        JavaDateFormat("yyyy 'oops")
