"""Checkpoints end to end: real processes, real kill -9, exact results after recovery."""

from __future__ import annotations

import collections
import glob
import os
import random
import signal
import time

import pytest
from flowrun_testing import (
    RESTART_AT_ONCE,
    CliRun,
    completed_checkpoints,
    run_args,
    run_flowrun,
    shm_segments,
    wait_gone,
)

from flowrun.core.runtime.checkpoint_storage import find_latest_checkpoint, read_metadata

JOB = os.path.join(os.path.dirname(__file__), "jobs", "checkpointed_count.py")


def _words(path: str, n_lines: int, seed: int = 7) -> collections.Counter:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(500)]
    counts: collections.Counter = collections.Counter()
    with open(path, "w") as out:
        for _ in range(n_lines):
            line = [rng.choice(vocab) for _ in range(8)]
            counts.update(line)
            out.write(" ".join(line) + "\n")
    return counts


def _final_counts(stdout: str) -> dict[str, int]:
    last: dict[str, int] = {}
    for line in stdout.splitlines():
        line = line.split("> ", 1)[-1]  # print()'s "<subtask>> " prefix at p > 1
        word, _, n = line.rpartition(" ")
        if word:
            last[word] = int(n)
    return last


@pytest.mark.parametrize(
    "backend,unaligned",
    [("hashmap", False), ("lmdb", False), ("lmdb-arrow", False), ("hashmap", True), ("lmdb", True)],
)
def test_kill_9_of_a_subtask_recovers_exact_state_from_the_checkpoint(tmp_path, backend, unaligned):
    # lmdb: checkpoints are native LMDB copies; lmdb-arrow: backend-neutral rows
    native = "true" if backend == "lmdb" else "false"
    backend = backend.split("-")[0]
    expected = _words(str(tmp_path / "in.txt"), 40_000)
    before = shm_segments()
    options = {
        "execution.checkpointing.unaligned": str(unaligned).lower(),
        "state.backend": backend,
        "flowrun.state.lmdb.native-checkpoints": native,
        **RESTART_AT_ONCE,
        "restart-strategy.fixed-delay.attempts": "3",
    }
    code, out, err = run_flowrun(run_args(JOB, 2, options, tmp_path / "in.txt", 20000))
    assert code == 0, err
    assert "restarting (attempt 1)" in err and "from checkpoint" in err, err
    assert _final_counts(out) == dict(expected)
    assert shm_segments() <= before


@pytest.mark.parametrize("backend", ["hashmap", "lmdb"])
def test_an_unaligned_checkpoint_completes_while_a_slow_operator_works_through_a_buffer(
    tmp_path, backend
):
    # A 256 KiB buffer holds tens of thousands of words; at half a millisecond per word the
    # counting map needs many seconds for one. The unaligned barrier must not wait for that:
    # the rows decoded but not processed yet go into the checkpoint as in-flight data. The
    # job kills that subtask only if a checkpoint completes within its first 8,000 records,
    # and the recovered result (those rows replayed from the checkpoint) must be exact.
    expected = _words(str(tmp_path / "in.txt"), 40_000)
    options = {
        "execution.checkpointing.unaligned": "true",
        "state.backend": backend,
        **RESTART_AT_ONCE,
    }
    code, out, err = run_flowrun(run_args(JOB, 2, options, tmp_path / "in.txt", -1, "crawl=8000"))
    assert code == 0, err
    assert "restarting (attempt 1)" in err and "from checkpoint" in err, err
    assert _final_counts(out) == dict(expected)


def test_an_unaligned_checkpoint_completes_after_the_sources_ended(tmp_path):
    # FLIP-147: 2,000 lines fit in the network buffers, so the source reads them all and
    # reaches its end before the first checkpoint is triggered, while the counting map
    # crawls through them at half a millisecond per word. The source, ended but still up,
    # injects the barrier behind its END_OF_DATA; unaligned, it overtakes the queued words
    # and the checkpoint completes while the map works. The job kills the map's subtask 0
    # only when a checkpoint completes within its first 4,000 words: the restart proves
    # one did, and the recovered result must be exact.
    expected = _words(str(tmp_path / "in.txt"), 2_000)
    options = {"execution.checkpointing.unaligned": "true", **RESTART_AT_ONCE}
    code, out, err = run_flowrun(run_args(JOB, 2, options, tmp_path / "in.txt", -1, "crawl=4000"))
    assert code == 0, err
    assert "restarting (attempt 1)" in err and "from checkpoint" in err, err
    assert _final_counts(out) == dict(expected)


def _merge_final(*outputs: str) -> dict[str, int]:
    merged: dict[str, int] = {}
    for out in outputs:
        merged.update(_final_counts(out))
    return merged


def _has_checkpoint(base, with_channel_state: bool) -> bool:
    """Whether a completed checkpoint exists (one holding in-flight data, if asked)."""
    for meta in completed_checkpoints(base):
        if not with_channel_state:
            return True
        try:
            metadata, _ = read_metadata(os.path.dirname(meta))
        except Exception:
            continue  # removed by retention meanwhile
        if metadata["channel_state"]:
            return True
    return False


@pytest.mark.parametrize("new_parallelism,unaligned", [(3, False), (1, False), (3, True)])
def test_kill_9_of_the_job_manager_then_resume_from_the_retained_checkpoint(
    tmp_path, new_parallelism, unaligned
):
    # longer with unaligned checkpoints: the test waits for one that holds in-flight data
    expected = _words(str(tmp_path / "in.txt"), 150_000 if unaligned else 60_000)
    checkpoints = str(tmp_path / "chk")
    before = shm_segments()
    options = {
        "state.checkpoints.dir": checkpoints,
        "state.backend": "lmdb",
        "execution.checkpointing.unaligned": str(unaligned).lower(),
        "state.checkpoints.num-retained": "3",
    }
    run = CliRun(run_args(JOB, 2, options, tmp_path / "in.txt", -1, "slow"))
    what = "a checkpoint with in-flight data" if unaligned else "a checkpoint"
    out1 = run.kill_9_when(lambda: _has_checkpoint(checkpoints, unaligned), what)
    code = run.proc.returncode
    assert code == -signal.SIGKILL
    assert wait_gone(run.mark) == [], "subtasks outlived their JobManager"
    assert shm_segments() <= before
    latest = find_latest_checkpoint(os.path.join(checkpoints, os.listdir(checkpoints)[0]))
    assert latest is not None
    metadata, _ = read_metadata(latest)
    # The slow map backpressures the source: an unaligned barrier overtakes queued buffers,
    # which are then part of the checkpoint (and replayed, re-partitioned, on restore).
    if not unaligned:
        assert metadata["channel_state"] == []
    options = {"execution.savepoint.path": latest, "state.backend": "hashmap"}
    code, out2, err = run_flowrun(run_args(JOB, new_parallelism, options, tmp_path / "in.txt", -1))
    assert code == 0, err
    assert _merge_final(out1, out2) == dict(expected)
    assert shm_segments() <= before


@pytest.fixture(scope="module")
def retained(tmp_path_factory):
    """A job killed with -9 after a few checkpoints: (input, its counts, job dir, output)."""
    tmp = tmp_path_factory.mktemp("retained")
    expected = _words(str(tmp / "in.txt"), 60_000)
    checkpoints = str(tmp / "chk")
    options = {
        "state.checkpoints.dir": checkpoints,
        "state.checkpoints.num-retained": "3",
        # small network buffers: the source cannot read far ahead of the slow map,
        # so the retained checkpoints hold unread input for the resumed runs
        "taskmanager.memory.segment-size": "32kb",
        "taskmanager.network.memory.max-buffers-per-channel": "2",
    }
    run = CliRun(run_args(JOB, 2, options, tmp / "in.txt", -1, "slow"))
    out = run.kill_9_when(
        lambda: len(completed_checkpoints(checkpoints)) >= 2, "2 checkpoints completed"
    )
    wait_gone(run.mark)
    job_dir = os.path.join(checkpoints, os.listdir(checkpoints)[0])
    return str(tmp / "in.txt"), expected, job_dir, out


def test_a_corrupt_newest_checkpoint_is_skipped_for_the_previous_one(retained, tmp_path):
    import shutil

    source, expected, job_dir, out1 = retained
    copy = str(tmp_path / "job")
    shutil.copytree(job_dir, copy)
    chks = sorted(glob.glob(os.path.join(copy, "chk-*")), key=lambda p: int(p.split("-")[-1]))
    complete = [c for c in chks if os.path.exists(os.path.join(c, "_metadata"))]
    assert len(complete) >= 2
    with open(os.path.join(complete[-1], "_metadata"), "r+b") as f:
        f.truncate(20)  # a torn write
    code, out2, err = run_flowrun(
        ["run", JOB, "-p", "2", "-D", f"execution.savepoint.path={copy}", "--", source, "-1"]
    )
    assert code == 0, err
    assert f"skipping checkpoint {complete[-1]}" in err
    assert _merge_final(out1, out2) == dict(expected)


def test_state_of_an_operator_missing_from_the_job_fails_the_restore(retained):
    source, _expected, job_dir, _out = retained  # noqa: RUF059
    args = ["run", JOB, "-p", "2", "-D", f"execution.savepoint.path={job_dir}"]
    code, _out, err = run_flowrun([*args, "--", source, "-1", "uid=renamed"])
    assert code == 1
    assert "Cannot map the state" in err and "uid 'count'" in err
    assert "--allow-non-restored-state" in err
    allow = [*args, "-D", "execution.savepoint.ignore-unclaimed-state=true"]
    code, out, err = run_flowrun([*allow, "--", source, "-1", "uid=renamed"])
    assert code == 0, err
    # The renamed operator starts empty while the source resumes after the checkpoint:
    # the counts cover only the rest of the input.
    assert 0 < sum(_final_counts(out).values()) < sum(_expected.values())


def test_a_changed_max_parallelism_is_refused(retained):
    source, _expected, job_dir, _out = retained
    options = {"execution.savepoint.path": job_dir}
    code, _out, err = run_flowrun(run_args(JOB, 2, options, source, -1, "maxp=256"))
    assert code == 1
    assert "max parallelism 128" in err and "256" in err


def test_checkpoints_on_s3_compatible_storage_recover_exactly(tmp_path, s3_base, moto_s3_server):
    """Checkpoints in a real S3 API server (moto on 127.0.0.1): kill -9, restore from S3."""
    from flowrun.core.runtime.checkpoint_storage import resolve_filesystem

    expected = _words(str(tmp_path / "in.txt"), 40_000)
    options = {
        "state.checkpoints.dir": s3_base,
        "state.checkpoints.num-retained": "2",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        **RESTART_AT_ONCE,
        # the input fits in the network buffers: aligned barriers would wait behind it
        # all, and the slower S3 checkpoints would only complete at the end
        "execution.checkpointing.unaligned": "true",
    }
    code, out, err = run_flowrun(run_args(JOB, 2, options, tmp_path / "in.txt", 20000))
    assert code == 0, err
    assert "restarting (attempt 1)" in err and "from checkpoint" in err, err
    assert _final_counts(out) == dict(expected)
    fs, root = resolve_filesystem(s3_base)
    from pyarrow.fs import FileSelector

    # the checkpoints went to S3 (and a finished job discards them, as Flink does)
    assert "/_metadata" in moto_s3_server.log()
    listed = fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
    assert not [f.path for f in listed if f.path.endswith("_metadata")]


class _CountKillOnce:
    """Counts per key; subtask 0 kills itself once, after a checkpoint completed."""

    def open(self, runtime_context):
        from flowrun.core import Types
        from flowrun.state import ValueStateDescriptor

        self.ctx = runtime_context
        self.count = runtime_context.get_state(ValueStateDescriptor("n", Types.LONG()))
        self.completed = False
        self.seen = 0

    def notify_checkpoint_complete(self, checkpoint_id):
        self.completed = True

    def map(self, word):
        self.seen += 1
        if self.seen % 100 == 0:
            time.sleep(0.001)
        first = self.ctx.get_attempt_number() == 0 and self.ctx.get_index_of_this_subtask() == 0
        if first and not self.completed:
            time.sleep(0.0005)  # until a checkpoint completed, however fast the engine is
        if first and self.completed and self.seen > 2000:
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        return f"{word} {n}"


def test_execute_and_collect_is_exactly_once_across_a_restart(tmp_path):
    from flowrun.core import FlatMapFunction, MapFunction, StreamExecutionEnvironment, Types

    class CountKillOnce(_CountKillOnce, MapFunction):
        marker = str(tmp_path / "killed")

    class SplitUntilCheckpoint(FlatMapFunction):
        # Read slowly until a checkpoint completed, so that the kill comes while the
        # source still reads, however fast the engine is.
        def open(self, runtime_context):
            self.slow = runtime_context.get_attempt_number() == 0

        def notify_checkpoint_complete(self, checkpoint_id):
            self.slow = False

        def flat_map(self, line):
            if self.slow:
                time.sleep(0.0002)
            yield from line.split()

    counts = _words(str(tmp_path / "in.txt"), 10_000)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    env.enable_checkpointing(50)
    # unaligned: the whole input fits in the network buffers, so an aligned barrier would
    # wait behind all of it and no checkpoint would complete before the end
    env.get_checkpoint_config().enable_unaligned_checkpoints()
    conf = env.get_configuration()
    conf.set_string("restart-strategy", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.delay", "0")
    conf.set_string("rest.port", "0")
    collected = (
        env.read_text_file(str(tmp_path / "in.txt"))
        .flat_map(SplitUntilCheckpoint(), output_type=Types.STRING())
        .key_by(lambda w: w)
        .map(CountKillOnce(), output_type=Types.STRING())
        .execute_and_collect(limit=10**9)
    )
    expected = collections.Counter(f"{w} {i}" for w, n in counts.items() for i in range(1, n + 1))
    assert os.path.exists(tmp_path / "killed"), "the subtask never failed"
    assert collections.Counter(collected) == expected


def test_a_restart_skips_a_damaged_newest_checkpoint_for_the_previous_one(tmp_path):
    expected = _words(str(tmp_path / "in.txt"), 40_000)
    checkpoints = str(tmp_path / "chk")
    options = {
        "state.checkpoints.dir": checkpoints,
        "state.checkpoints.num-retained": "2",
        # The damaged checkpoint must stay the newest. Without a pause the next one is
        # triggered as this one completes, and subtask 0 may ack it before it reads the
        # completion notice (which damages the files and kills it).
        "execution.checkpointing.min-pause": "100",
        **RESTART_AT_ONCE,
    }
    job_args = (tmp_path / "in.txt", -1, "slow", f"corrupt={checkpoints}")
    code, out, err = run_flowrun(run_args(JOB, 2, options, *job_args))
    assert code == 0, err
    assert "cannot be restored" in err and "trying the one before" in err, err
    assert _final_counts(out) == dict(expected)
