"""FileSink with checkpoints: pending part files, commits, restores, crashes, rescaling, Parquet.

Writers are driven through the sink contract the way the runtime drives them; a *crash* is a
forked child that dies by SIGKILL (no ``finally``, no ``abort``: the kernel closes its files),
and checkpoint state travels through real operator list state and its redistribution. Every
recovery must leave exactly the committed output of a failure-free run.
"""

from __future__ import annotations

import os
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flowrun_testing import KILL_ONCE_SOURCE, run_flowrun
from sink_harness import Job, crash, redistribute_states

from flowrun.core.connectors import BucketAssigner, Encoder, FileSink, RollingPolicy
from flowrun.core.connectors.file_sink_writer import commit_part_file
from flowrun.core.connectors.parquet import ParquetBulkWriters
from flowrun.core.typeinfo import Types

RECORDS = [f"record-{i:03d}" for i in range(120)]
INTERVALS = [RECORDS[0:40], RECORDS[40:80], RECORDS[80:120]]  # checkpoints 1 and 2 between


class FakeClock:
    def __call__(self) -> float:
        return 1_700_000_000.0  # no time-based rolling


def row_sink(path) -> FileSink:
    return (
        FileSink.for_row_format(str(path), Encoder.simple_string_encoder(), clock=FakeClock())
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .with_rolling_policy(RollingPolicy.default_rolling_policy(part_size=100))
        .build()
    )


def listing(path) -> dict[str, str]:
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, encoding="utf-8") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


def visible(path) -> dict[str, str]:
    return {k: v for k, v in listing(path).items() if not os.path.basename(k).startswith(".")}


def hidden(path) -> list[str]:
    return sorted(n for _, _, names in os.walk(path) for n in names if n.startswith("."))


def lines(files: dict[str, str]) -> Counter:
    return Counter(line for text in files.values() for line in text.splitlines())


@pytest.fixture
def failure_free(tmp_path) -> dict[str, str]:
    out = tmp_path / "failure-free"
    job = Job(row_sink(out), 2)
    job.write(INTERVALS[0])
    job.checkpoint(1)
    job.write(INTERVALS[1])
    job.checkpoint(2)
    job.write(INTERVALS[2])
    job.finish()
    files = visible(out)
    assert lines(files) == Counter(RECORDS) and not hidden(out)
    assert len(files) > 6  # size rolls and checkpoint rolls both happened
    return files


def replay_after_checkpoint_1(out, states1, parallelism: int = 2) -> None:
    job = Job(row_sink(out), parallelism, redistribute_states(states1, parallelism))
    job.write(INTERVALS[1])
    job.checkpoint(2)
    job.write(INTERVALS[2])
    job.finish()


def test_crash_mid_interval_then_restore_gives_the_failure_free_files(tmp_path, failure_free):
    out = tmp_path / "out"

    def attempt():
        job = Job(row_sink(out), 2)
        job.write(INTERVALS[0])
        states1 = job.checkpoint(1)
        job.write(INTERVALS[1])
        job.checkpoint(2, notify=False)  # pre-committed; checkpoint 2 never completes
        job.write(INTERVALS[2][:10])
        return states1

    states1 = crash(attempt)
    before = listing(out)
    assert lines(visible(out)) == Counter(INTERVALS[0])  # only checkpoint 1 is visible
    assert any(".inprogress." in name for name in before)  # the attempt's leftovers

    replay_after_checkpoint_1(out, states1)
    assert listing(out) == failure_free  # same names, same contents, nothing hidden


def test_crash_between_pre_commit_and_commit_commits_on_restore(tmp_path, failure_free):
    out = tmp_path / "out"

    def attempt():
        job = Job(row_sink(out), 2)
        job.write(INTERVALS[0])
        states1 = job.checkpoint(1, notify=False)  # completes at the coordinator only
        job.write(INTERVALS[1][:7])
        return states1

    states1 = crash(attempt)
    assert visible(out) == {}
    replay_after_checkpoint_1(out, states1)
    assert listing(out) == failure_free


def test_crash_after_commit_before_every_subtask_was_notified(tmp_path, failure_free):
    out = tmp_path / "out"

    def attempt():
        job = Job(row_sink(out), 2)
        job.write(INTERVALS[0])
        states1 = job.checkpoint(1, notify=False)
        job.notify(1, subtasks=[0])  # subtask 1 dies before its notification
        job.write(INTERVALS[1][:3])
        return states1

    states1 = crash(attempt)
    committed = visible(out)
    assert committed and all("-out-0-" in name for name in committed)
    replay_after_checkpoint_1(out, states1)  # subtask 0's commit is repeated harmlessly
    assert listing(out) == failure_free


def test_attempt_failing_before_its_first_checkpoint_leaves_nothing(tmp_path, failure_free):
    out = tmp_path / "out"

    def first():
        job = Job(row_sink(out), 2)
        job.write(INTERVALS[0])
        return job.checkpoint(1)

    states1 = crash(first)

    def second():  # restores checkpoint 1, writes, dies before checkpoint 2
        job = Job(row_sink(out), 2, redistribute_states(states1, 2))
        job.write(INTERVALS[1])

    crash(second)
    assert hidden(out)
    replay_after_checkpoint_1(out, states1)
    assert listing(out) == failure_free


@pytest.mark.parametrize("new_parallelism", [1, 3])
def test_restore_at_another_parallelism_loses_and_repeats_nothing(
    tmp_path, new_parallelism, failure_free
):
    out = tmp_path / "out"

    def attempt():
        job = Job(row_sink(out), 2)
        job.write(INTERVALS[0])
        states1 = job.checkpoint(1, notify=False)
        job.notify(1, subtasks=[1])
        job.write(INTERVALS[1])
        job.checkpoint(2, notify=False)
        job.write(INTERVALS[2][:20])
        return states1

    states1 = crash(attempt)
    replay_after_checkpoint_1(out, states1, new_parallelism)
    files = visible(out)
    assert lines(files) == Counter(RECORDS)  # every record exactly once
    assert not hidden(out)
    # the output of checkpoint 1 is the failure-free run's, file for file
    first = {k: v for k, v in failure_free.items() if set(v.splitlines()) <= set(INTERVALS[0])}
    assert {k: files[k] for k in first} == first


def test_parts_stay_hidden_until_their_checkpoint_completes(tmp_path):
    out = tmp_path / "out"
    job = Job(row_sink(out), 1)
    job.write(INTERVALS[0])  # rolls on size several times
    assert visible(out) == {} and len(hidden(out)) > 1
    job.checkpoint(1, notify=False)
    job.write(INTERVALS[1])
    job.checkpoint(2, notify=False)
    assert visible(out) == {}
    job.writers[0].notify_checkpoint_aborted(1)  # stays pending: a later checkpoint covers it
    assert visible(out) == {}
    job.notify(2)  # the notification of 1 was skipped: 2 commits both
    assert lines(visible(out)) == Counter(INTERVALS[0] + INTERVALS[1])
    assert not hidden(out)


def test_abort_keeps_pending_parts_for_the_next_attempt(tmp_path):
    out = tmp_path / "out"
    job = Job(row_sink(out), 1)
    job.write(INTERVALS[0])
    states1 = job.checkpoint(1, notify=False)
    pending = hidden(out)
    job.write(INTERVALS[1])  # rolled and open parts of an interval no checkpoint covers
    job.writers[0].abort()
    assert hidden(out) == pending and visible(out) == {}
    restored = Job(row_sink(out), 1, states1)
    assert lines(visible(out)) == Counter(INTERVALS[0]) and not hidden(out)
    restored.finish()


def test_without_checkpoints_rolled_parts_are_final_at_once(tmp_path):
    out = tmp_path / "out"
    writer = row_sink(out).create_writer(0, 1, "job-1", "out")
    writer.set_checkpointing_enabled(False)
    writer.open()
    writer.write(INTERVALS[0])  # 11-byte lines: a part rolls after 10 of them (> 100 bytes)
    assert visible(out) == {
        f"part-out-0-{c}": "".join(f"{r}\n" for r in INTERVALS[0][c * 10 : c * 10 + 10])
        for c in range(3)
    }
    assert len(hidden(out)) == 1  # records 30..39, still open
    writer.abort()
    assert lines(visible(out)) == Counter(INTERVALS[0][:30]) and not hidden(out)


def test_finish_with_checkpoints_commits_everything(tmp_path):
    out = tmp_path / "out"
    job = Job(row_sink(out), 2)
    job.write(INTERVALS[0])
    job.checkpoint(1, notify=False)
    job.write(INTERVALS[1])
    job.finish()  # end of input: nothing is left pending
    assert lines(visible(out)) == Counter(INTERVALS[0] + INTERVALS[1]) and not hidden(out)


def test_restore_refuses_state_of_another_sink(tmp_path):
    writer = row_sink(tmp_path).create_writer(0, 1, "job-1", "out")
    with pytest.raises(ValueError, match=r"FileSink cannot restore state element \{'offset': 3\}"):
        writer.restore_state([{"offset": 3}])


def test_commit_never_replaces_another_file(tmp_path):
    temp, final = tmp_path / ".part-0.inprogress.abc", tmp_path / "part-0"
    temp.write_text("new\n")
    final.write_text("someone else's\n")
    with pytest.raises(FileExistsError, match="another file already has its name"):
        commit_part_file(str(temp), str(final))
    assert final.read_text() == "someone else's\n" and temp.read_text() == "new\n"
    final.unlink()
    assert commit_part_file(str(temp), str(final)) is True
    assert commit_part_file(str(temp), str(final)) is False  # idempotent
    os.unlink(final)
    with pytest.raises(FileNotFoundError, match="its records are lost"):
        commit_part_file(str(temp), str(final))


# --- Parquet ---------------------------------------------------------------------------------

ROW_TYPE = Types.ROW_NAMED(["id", "name"], [Types.LONG(), Types.STRING()])


def parquet_sink(path) -> FileSink:
    return (
        FileSink.for_bulk_format(
            str(path), ParquetBulkWriters.for_row_type(ROW_TYPE), clock=FakeClock()
        )
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .build()
    )


def parquet_rows(path) -> dict[str, list[dict]]:
    return {
        name: pq.read_table(os.path.join(path, name)).to_pylist()
        for name in sorted(os.listdir(path))
        if not name.startswith(".")
    }


PARQUET_INTERVALS = [[(i, f"n{i}") for i in range(k * 50, k * 50 + 50)] for k in range(3)]


def test_parquet_parts_roll_on_checkpoints_and_recover_exactly(tmp_path):
    clean = tmp_path / "clean"
    job = Job(parquet_sink(clean), 2)
    job.write(PARQUET_INTERVALS[0])
    job.checkpoint(1)
    job.write(PARQUET_INTERVALS[1])
    job.checkpoint(2)
    job.write(PARQUET_INTERVALS[2])
    job.finish()
    expected = parquet_rows(clean)
    assert sorted(expected) == [f"part-out-{s}-{c}" for s in (0, 1) for c in (0, 1, 2)]
    assert expected["part-out-1-0"] == [{"id": i, "name": f"n{i}"} for i in range(1, 50, 2)]

    out = tmp_path / "out"
    failed = Job(parquet_sink(out), 2)
    failed.write(PARQUET_INTERVALS[0])
    states1 = failed.checkpoint(1)
    failed.write(PARQUET_INTERVALS[1])
    failed.checkpoint(2, notify=False)
    failed.write(PARQUET_INTERVALS[2][:5])
    for writer in failed.writers:
        writer.abort()
    job = Job(parquet_sink(out), 2, redistribute_states(states1, 2))
    job.write(PARQUET_INTERVALS[1])
    job.checkpoint(2)
    job.write(PARQUET_INTERVALS[2])
    job.finish()
    assert parquet_rows(out) == expected and not hidden(out)


def test_parquet_arrow_batches_and_type_errors(tmp_path):
    writer = parquet_sink(tmp_path).create_writer(0, 1, "job-1", "out")
    writer.open()
    writer.write_batch(pa.record_batch({"name": ["a", "b"], "id": pa.array([1, 2], pa.int32())}))
    with pytest.raises(ValueError, match=r"field\(s\) \['id'\] that the Arrow batch lacks"):
        writer.write_batch(pa.record_batch({"name": ["c"]}))
    with pytest.raises(TypeError, match="id"):
        writer.write([("not a number", "x")])
    writer.finish()
    assert parquet_rows(tmp_path) == {
        "part-out-0-0": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    }
    with pytest.raises(ValueError, match="on_checkpoint_rolling_policy"):
        FileSink.for_bulk_format(
            str(tmp_path), ParquetBulkWriters.for_row_type(ROW_TYPE)
        ).with_rolling_policy(RollingPolicy.default_rolling_policy())
    with pytest.raises(ValueError, match="unknown Parquet setting 'parquet.compresion'"):
        ParquetBulkWriters.for_row_type(ROW_TYPE, {"parquet.compresion": "ZSTD"})
    with pytest.raises(TypeError, match="needs a row type"):
        ParquetBulkWriters.for_row_type(Types.STRING())


# --- real jobs -------------------------------------------------------------------------------

NO_CHECKPOINT_JOB = """
import sys
from flowrun.core import StreamExecutionEnvironment, Types
from flowrun.core.connectors import BucketAssigner, Encoder, FileSink, NumberSequenceSource

env = StreamExecutionEnvironment.get_execution_environment()
env.set_parallelism(2)
(
    env.from_source(NumberSequenceSource(1, 2000), None, "numbers")
    .map(lambda x: f"n={x}", output_type=Types.STRING())
    .sink_to(
        FileSink.for_row_format(sys.argv[1], Encoder.simple_string_encoder())
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .build()
    )
)
env.execute("no checkpoints")
"""


def test_job_without_checkpointing_writes_the_same_files_as_before(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(NO_CHECKPOINT_JOB)
    out = tmp_path / "out"
    code, _, err = run_flowrun(["run", str(job), "--", str(out)])
    assert code == 0, err
    files = listing(out)
    # one finished part per subtask, named <prefix>-<operator id>-<subtask>-<counter>
    assert sorted(name.rsplit("-", 2)[1:] for name in files) == [["0", "0"], ["1", "0"]]
    uid = {name.split("-")[1] for name in files}
    assert len(uid) == 1
    (uid,) = uid
    assert files == {
        f"part-{uid}-0-0": "".join(f"n={x}\n" for x in range(1, 1001)),
        f"part-{uid}-1-0": "".join(f"n={x}\n" for x in range(1001, 2001)),
    }


CHECKPOINTED_JOB = (
    """
import os, signal, sys, time
from flowrun.core import MapFunction, StreamExecutionEnvironment, Types
from flowrun.core.connectors import (
    BucketAssigner, Encoder, FileSink, NumberSequenceSource, RollingPolicy,
)

out, n, kill_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


"""
    + KILL_ONCE_SOURCE
    + """
env = StreamExecutionEnvironment.get_execution_environment()
env.set_parallelism(2)
env.enable_checkpointing(50)
(
    env.from_source(NumberSequenceSource(1, n), None, "numbers")
    .map(KillOnce(kill_after, then=lambda x: f"n={x}"), output_type=Types.STRING())
    .sink_to(
        FileSink.for_row_format(out, Encoder.simple_string_encoder())
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .with_rolling_policy(RollingPolicy.default_rolling_policy(part_size=20000))
        .build()
    )
    .uid("sink")
)
env.execute("exactly-once file sink")
"""
)


def test_job_killed_mid_stream_commits_every_record_exactly_once(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(CHECKPOINTED_JOB)
    out = tmp_path / "out"
    code, _, err = run_flowrun(
        [
            "run",
            str(job),
            "-D",
            "restart-strategy=fixed-delay",
            "-D",
            "restart-strategy.fixed-delay.attempts=3",
            "-D",
            "restart-strategy.fixed-delay.delay=0",
            "-D",
            f"state.checkpoints.dir=file://{tmp_path / 'checkpoints'}",
            # the whole input fits in the network buffers: an aligned barrier would wait
            # behind all of it, so no checkpoint would complete before the end
            "-D",
            "execution.checkpointing.unaligned=true",
            "--",
            str(out),
            "40000",
            "8000",
        ]
    )
    assert code == 0, err
    assert "killed by signal SIGKILL" in err and "restarting (attempt 1)" in err, err
    assert "from checkpoint" in err, err
    assert lines(visible(out)) == Counter(f"n={x}" for x in range(1, 40001))
    assert not hidden(out)
