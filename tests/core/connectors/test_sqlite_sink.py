"""SqliteUpsertSink: replays overwrite the same rows, so a crashed and restored run leaves the
failure-free table; changelog rows, table checks, bad input, and a real checkpointed job."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import traceback
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from flowrun_testing import KILL_ONCE_SOURCE, run_flowrun

from flowrun.core.connectors.sqlite_sink import SqliteUpsertSink
from flowrun.core.row import Row, RowKind
from flowrun.core.typeinfo import Types

# a changelog-like stream: running counts per word; later records overwrite earlier ones
WORDS = [f"w{i % 17}" for i in range(150)]


def running_counts(words: list[str]) -> list[tuple[str, int]]:
    seen: dict[str, int] = {}
    out = []
    for w in words:
        seen[w] = seen.get(w, 0) + 1
        out.append((w, seen[w]))
    return out


RECORDS = running_counts(WORDS)
INTERVALS = [RECORDS[0:50], RECORDS[50:100], RECORDS[100:150]]


def table(db) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute("SELECT word, count FROM counts"))
    finally:
        conn.close()


def sink(db, **kw) -> SqliteUpsertSink:
    return SqliteUpsertSink(str(db), "counts", ["word"], ["word", "count"], **kw)


class Job:
    """Sink subtasks; records are partitioned by key, as after key_by."""

    def __init__(self, db, parallelism: int, restored: bool = False) -> None:
        self.writers = [
            sink(db).create_writer(i, parallelism, "job-1", "counts") for i in range(parallelism)
        ]
        for writer in self.writers:
            writer.set_checkpointing_enabled(True)
            if restored:
                writer.restore_state([])  # the sink keeps no state: it is idempotent
            writer.open()

    def write(self, records: list[tuple[str, int]], flush: bool = False) -> None:
        p = len(self.writers)
        for i, writer in enumerate(self.writers):
            writer.write([r for r in records if zlib.crc32(r[0].encode()) % p == i])
            if flush:
                writer.flush()

    def checkpoint(self, checkpoint_id: int) -> None:
        for writer in self.writers:
            assert writer.snapshot_state(checkpoint_id) == []
            writer.notify_checkpoint_complete(checkpoint_id)

    def finish(self) -> None:
        for writer in self.writers:
            writer.finish()


def crash(attempt: Callable[[], Any]) -> None:
    """Run ``attempt`` in a forked child that then dies by SIGKILL."""
    result_path = f"/tmp/flowrun-crash-{os.getpid()}-{id(attempt)}.pickle"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            attempt()
            payload = "ok"
        except BaseException:
            payload = traceback.format_exc()
        with open(result_path, "wb") as f:
            pickle.dump(payload, f)
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    with open(result_path, "rb") as f:
        payload = pickle.load(f)
    os.unlink(result_path)
    assert payload == "ok", payload


@pytest.fixture
def failure_free(tmp_path) -> list[tuple]:
    db = tmp_path / "clean.db"
    job = Job(db, 2)
    for k, interval in enumerate(INTERVALS):
        job.write(interval)
        if k < 2:
            job.checkpoint(k + 1)
    job.finish()
    result = table(db)
    expected: dict[str, int] = {}
    for w in WORDS:
        expected[w] = expected.get(w, 0) + 1
    assert result == sorted(expected.items())
    return result


def at_checkpoint_1() -> list[tuple]:
    return sorted(dict(INTERVALS[0]).items())


@pytest.mark.parametrize("new_parallelism", [2, 1, 3])
def test_replay_after_a_crash_overwrites_the_same_rows(tmp_path, failure_free, new_parallelism):
    db = tmp_path / "out.db"

    def attempt():
        job = Job(db, 2)
        job.write(INTERVALS[0])
        job.checkpoint(1)
        job.write(INTERVALS[1], flush=True)  # written after checkpoint 1: will be replayed
        job.write(INTERVALS[2][:20])  # still in the buffer when the process dies

    crash(attempt)
    after_crash = table(db)
    assert after_crash != at_checkpoint_1()  # output beyond the checkpoint reached the table
    assert after_crash == sorted(dict(INTERVALS[0] + INTERVALS[1]).items())

    job = Job(db, new_parallelism, restored=True)
    job.write(INTERVALS[1])  # the replay
    job.checkpoint(2)
    job.write(INTERVALS[2])
    job.finish()
    assert table(db) == failure_free


def test_checkpoint_commits_the_buffer_and_abort_drops_it(tmp_path):
    db = tmp_path / "out.db"
    writer = sink(db).create_writer(0, 1, "job-1", "counts")
    writer.open()
    writer.write([("a", 1), ("b", 1), ("a", 2)])
    assert table(db) == []  # buffered
    writer.snapshot_state(1)
    assert table(db) == [("a", 2), ("b", 1)]  # another connection sees it: committed
    writer.write([("c", 9)])
    writer.abort()
    assert table(db) == [("a", 2), ("b", 1)]


def test_changelog_rows_delete_and_skip_update_before(tmp_path):
    db = tmp_path / "out.db"
    writer = sink(db, row_type=Types.ROW_NAMED(["word", "count"], [Types.STRING(), Types.LONG()]))
    writer = writer.create_writer(0, 1, "job-1", "counts")
    writer.open()
    before = Row("a", 1)
    before.set_row_kind(RowKind.UPDATE_BEFORE)
    after = Row("a", 2)
    after.set_row_kind(RowKind.UPDATE_AFTER)
    gone = Row(word="b", count=0)
    gone.set_row_kind(RowKind.DELETE)
    writer.write([Row("a", 1), Row(count=5, word="b"), {"word": "c", "count": 3}])
    writer.flush()
    writer.write([before, after, gone])
    writer.finish()
    assert table(db) == [("a", 2), ("c", 3)]
    columns = sqlite3.connect(db).execute("PRAGMA table_info(counts)").fetchall()
    assert [(c[1], c[2], c[5]) for c in columns] == [("word", "TEXT", 1), ("count", "INTEGER", 0)]


def test_existing_tables_are_checked(tmp_path):
    db = str(tmp_path / "out.db")
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE counts (word TEXT, count INTEGER)")  # no key
    conn.execute("CREATE TABLE keyed (id INTEGER PRIMARY KEY, word TEXT, n INTEGER)")
    conn.execute("CREATE TABLE uniq (word TEXT, n INTEGER, UNIQUE (word))")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match=r"no primary key or unique index on exactly \['word'\]"):
        sink(db).create_writer(0, 1, "job-1", "c").open()
    with pytest.raises(ValueError, match=r"has no column\(s\) \['count'\]"):
        SqliteUpsertSink(db, "keyed", ["id"], ["id", "count"]).create_writer(0, 1, "j", "c").open()
    with pytest.raises(ValueError, match="does not exist"):
        SqliteUpsertSink(db, "nope", ["id"], ["id"], create_table=False).create_writer(
            0, 1, "j", "c"
        ).open()
    for name, key in (("keyed", "id"), ("uniq", "word")):
        fields = ["id", "word", "n"] if name == "keyed" else ["word", "n"]
        writer = SqliteUpsertSink(db, name, [key], fields).create_writer(0, 1, "j", "c")
        writer.open()
        record = (1, "x", 1) if name == "keyed" else ("x", 1)
        writer.write([record, record[:-1] + (2,)])
        writer.finish()
        assert sqlite3.connect(db).execute(f"SELECT * FROM {name}").fetchall() == [
            record[:-1] + (2,)
        ]


def test_bad_configuration_and_records_are_named(tmp_path):
    db = str(tmp_path / "out.db")
    with pytest.raises(ValueError, match=r"key field\(s\) \['id'\] are not among"):
        SqliteUpsertSink(db, "t", ["id"], ["word"])
    with pytest.raises(ValueError, match="needs the column names"):
        SqliteUpsertSink(db, "t", ["id"])
    with pytest.raises(ValueError, match="key_fields must name at least one field"):
        SqliteUpsertSink(db, "t", [], ["word"])
    with pytest.raises(ValueError, match="table must be a non-empty str"):
        SqliteUpsertSink(db, 't"; DROP', ["word"], ["word"])
    writer = sink(db).create_writer(0, 1, "job-1", "c")
    writer.open()
    with pytest.raises(TypeError, match=r"cannot store count=\[1\] of record \('a', \[1\]\)"):
        writer.write([("a", [1])])
    with pytest.raises(ValueError, match="has 3 values for the 2 fields"):
        writer.write([("a", 1, 2)])
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['count'\]"):
        writer.write([{"word": "a"}])
    with pytest.raises(TypeError, match="takes Row, dict, tuple or list records, got int"):
        writer.write([7])
    writer.abort()


UPSERT_JOB = (
    """
import os, signal, sys, time
from flowrun.core import MapFunction, StreamExecutionEnvironment, Types
from flowrun.core.connectors import NumberSequenceSource
from flowrun.core.connectors.sqlite_sink import SqliteUpsertSink

db, n, kill_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


"""
    + KILL_ONCE_SOURCE
    + """
class PairUntilCheckpoint(MapFunction):
    # Produce slowly until a checkpoint completed: an aligned barrier injected after the
    # source read everything would queue behind all of it, and complete only at the end.
    def open(self, runtime_context):
        self.slow = runtime_context.get_attempt_number() == 0

    def notify_checkpoint_complete(self, checkpoint_id):
        self.slow = False

    def map(self, x):
        if self.slow:
            time.sleep(0.0002)
        return (f"w{x % 37}", 1)


pair = Types.TUPLE([Types.STRING(), Types.LONG()])
env = StreamExecutionEnvironment.get_execution_environment()
env.set_parallelism(2)
env.enable_checkpointing(50)
(
    env.from_source(NumberSequenceSource(1, n), None, "numbers")
    .map(PairUntilCheckpoint(), output_type=pair)
    .key_by(lambda p: p[0])
    .reduce(lambda a, b: (a[0], a[1] + b[1]))
    .map(KillOnce(kill_after), output_type=pair)
    .sink_to(SqliteUpsertSink(db, "counts", ["word"], ["word", "count"]))
    .uid("counts")
)
env.execute("upserts")
"""
)


def test_checkpointed_job_killed_mid_stream_leaves_the_exact_table(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(UPSERT_JOB)
    db = tmp_path / "counts.db"
    code, _, err = run_flowrun(
        [
            "run",
            str(job),
            "-D",
            "restart-strategy=fixed-delay",
            "-D",
            "restart-strategy.fixed-delay.delay=0",
            "-D",
            f"state.checkpoints.dir=file://{tmp_path / 'checkpoints'}",
            # the whole input fits in the network buffers: an aligned barrier would wait
            # behind all of it, so no checkpoint would complete before the end
            "-D",
            "execution.checkpointing.unaligned=true",
            "--",
            str(db),
            "80000",
            "3000",
        ]
    )
    assert code == 0, err
    assert "restarting (attempt 1)" in err and "from checkpoint" in err, err
    expected: dict[str, int] = {}
    for x in range(1, 80001):
        expected[f"w{x % 37}"] = expected.get(f"w{x % 37}", 0) + 1
    assert table(db) == sorted(expected.items())
