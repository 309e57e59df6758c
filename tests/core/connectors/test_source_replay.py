"""Replayable sources: snapshot at any point, restore at any parallelism, lose and repeat nothing.

Every test drives real readers over real files, as a subtask's loop would, and moves the splits
between "jobs" through the engine's own operator state (list state, SPLIT_DISTRIBUTE, restored
through :func:`flowrun.state.operator_state.redistribute`), so the splits are pickled and
handed out exactly as on a real restore.

The central check, for every reader of every stage: what it emitted is a prefix of what its
splits hold (computed by a slow, obvious reference), and its snapshot holds exactly the rest.
Across the whole run, everything emitted before snapshots plus everything emitted after the
restores equals the failure-free output as a multiset.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from flowrun.core.connectors import (
    CollectionSource,
    DataGeneratorSource,
    NumberSequenceSource,
    RateLimiterStrategy,
    SocketTextSource,
    Source,
    SourceReader,
    TextFileSource,
    line_blocks,
    text_file,
)
from flowrun.core.connectors.collection import CollectionSplit
from flowrun.core.connectors.datagen import GeneratorSplit
from flowrun.core.connectors.number_seq import NumberSequenceSplit
from flowrun.core.connectors.text_file import FileSplit
from flowrun.core.typeinfo import Types
from flowrun.state import ListStateDescriptor
from flowrun.state.operator_state import OperatorStateStore, redistribute

SPLITS = ListStateDescriptor("source-splits", Types.PICKLED_BYTE_ARRAY())

# (old parallelism, new parallelism): same p, and every rescaling from 2 and 3 to 1, 2, 3, 5.
RESCALINGS = [(2, 2), (3, 3), (2, 1), (2, 3), (2, 5), (3, 1), (3, 2), (3, 5)]


def redistribute_splits(per_old_reader: list[list[Any]], new_parallelism: int) -> list[list[Any]]:
    """Each new reader's splits, by way of real operator list state, as the engine does it."""
    snapshots = []
    for splits in per_old_reader:
        store = OperatorStateStore("source")
        store.get_list_state(SPLITS).update(splits)
        snapshots.append(store.snapshot())
    shares = []
    for streams in redistribute(snapshots, new_parallelism):
        store = OperatorStateStore("source")
        store.restore(streams)
        shares.append(store.get_list_state(SPLITS).get())
    return shares


def as_list(polled: Any) -> list:
    return polled.column(0).to_pylist() if isinstance(polled, pa.RecordBatch) else list(polled)


def poll_some(reader: SourceReader, rng: random.Random) -> list:
    """A random number of polls of random sizes; sometimes to the end (snapshot after end)."""
    out: list = []
    polls = 10_000 if rng.random() < 0.15 else rng.randint(0, 8)
    for _ in range(polls):
        got = reader.poll(rng.randint(1, 6))
        if got is None:
            break
        out += as_list(got)
    return out


def drain(reader: SourceReader, max_records: int = 7) -> list:
    out: list = []
    for _ in range(1_000_000):
        got = reader.poll(max_records)
        if got is None:
            return out
        out += as_list(got)
    raise AssertionError("reader never finished")


class Replay:
    """One source under test: ``expected(splits)`` is the reference for what splits hold."""

    def __init__(self, source: Source, expected: Callable[[list], list], full: list) -> None:
        self.source = source
        self.expected = expected
        self.full = full

    def run(self, parallelisms: list[int], rng: random.Random) -> list[list[list]]:
        """Stages at the given parallelisms, each restored from the last one's snapshots.

        Returns what each reader of each stage emitted; the last stage drains its readers.
        """
        emitted: list[list[list]] = []
        snapshots: list[list] = []
        checkpoint_id = 0
        for stage, parallelism in enumerate(parallelisms):
            if stage == 0:
                readers = [self.source.create_reader(i, parallelism) for i in range(parallelism)]
            else:
                shares = redistribute_splits(snapshots, parallelism)
                readers = [
                    self.source.restore_reader(i, parallelism, shares[i])
                    for i in range(parallelism)
                ]
            last = stage == len(parallelisms) - 1
            outputs, snapshots = [], []
            checkpoint_id += 1
            for reader in readers:
                reader.open()
                work = self.expected(reader.snapshot_state(checkpoint_id))
                got = drain(reader) if last else poll_some(reader, rng)
                assert got == work[: len(got)], "emitted records are not the splits' next ones"
                if last:
                    assert got == work, "a drained reader must emit all its splits hold"
                else:
                    rest = reader.snapshot_state(checkpoint_id)
                    assert self.expected(rest) == work[len(got) :], "snapshot is not the rest"
                    snapshots.append(rest)
                reader.close()
                outputs.append(got)
            emitted.append(outputs)
        everything = [r for stage in emitted for out in stage for r in out]
        assert Counter(everything) == Counter(self.full), "lost or duplicated records"
        return emitted


# --- text files ---------------------------------------------------------------------------


def reference_lines(data: bytes) -> list[tuple[int, str]]:
    """``(first byte offset, text)`` of every line, the slow and obvious way."""
    lines, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        line = data[start:end]
        lines.append((start, (line[:-1] if line.endswith(b"\r") else line).decode()))
        start = end + 1
    return lines


def text_replay(source: TextFileSource) -> Replay:
    contents = {}
    for path, _ in source.files:
        with open(path, "rb") as f:
            contents[path] = reference_lines(f.read())

    def expected(splits: list) -> list:
        out = []
        for path, start, end in splits:
            out += [text for first, text in contents[path] if start <= first < end]
        return out

    full = [text for path, _ in source.files for _, text in contents[path]]
    return Replay(source, expected, full)


def _mixed_text(seed: int, lines: int) -> bytes:
    rng = random.Random(seed)
    words = ["a", "", "bb", "héllo", "日本語", "🎉", "tab\there", "x" * 40, "y" * 300, "lone\rcr"]
    return "".join(rng.choice(words) + rng.choice(["\n", "\r\n"]) for _ in range(lines)).encode()


@pytest.fixture
def text_inputs(tmp_path):
    single = tmp_path / "single.txt"
    single.write_bytes(_mixed_text(1, 120))
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(_mixed_text(2, 40))
    (folder / "b.txt").write_bytes(b"")
    (folder / "c.txt").write_bytes(b"no\r\ntrailing\r\nnewline\r")
    (folder / "sub" / "d.txt").write_bytes(b"\r\n\r\n\n" + _mixed_text(3, 25))
    return {"single": str(single), "dir": str(folder)}


@pytest.fixture(params=["normal", "no_time_budget"])
def time_budget(request, monkeypatch):
    """``no_time_budget``: one read per poll, so readers stop inside long lines and splits."""
    if request.param == "no_time_budget":
        monkeypatch.setattr(line_blocks, "_TIME_BUDGET", 0.0)
        monkeypatch.setattr(text_file, "_TIME_BUDGET", 0.0)
    return request.param


@pytest.mark.parametrize("old_p, new_p", RESCALINGS)
@pytest.mark.parametrize("as_arrow", [False, True], ids=["rows", "arrow"])
@pytest.mark.parametrize("chunk_size", [7, 1 << 20])
@pytest.mark.parametrize("which", ["single", "dir"])
def test_text_file_replay(text_inputs, time_budget, which, chunk_size, as_arrow, old_p, new_p):
    source = TextFileSource(text_inputs[which], as_arrow=as_arrow, chunk_size=chunk_size)
    replay = text_replay(source)
    for seed in range(6):
        replay.run([old_p, new_p], random.Random(seed))


@pytest.mark.parametrize("as_arrow", [False, True], ids=["rows", "arrow"])
def test_text_file_replay_across_three_jobs(text_inputs, time_budget, as_arrow):
    source = TextFileSource(text_inputs["dir"], as_arrow=as_arrow, chunk_size=5)
    replay = text_replay(source)
    for seed in range(20):
        rng = random.Random(seed)
        replay.run([rng.choice([1, 2, 3, 5]) for _ in range(4)], rng)


def test_text_snapshot_offsets_are_line_starts_or_split_starts(text_inputs, time_budget):
    source = TextFileSource(text_inputs["single"], chunk_size=7)
    data = open(text_inputs["single"], "rb").read()
    line_starts = {first for first, _ in reference_lines(data)}
    split_starts = {i * len(data) // 3 for i in range(3)}
    seen = set()
    for index in range(3):
        reader = source.create_reader(index, 3)
        reader.open()
        while reader.poll(2) is not None:
            for split in reader.snapshot_state(1):
                assert split.start in line_starts or split.start in split_starts
                assert split.end == (index + 1) * len(data) // 3
                seen.add(split.start)
    assert len(seen) > 20


def test_text_snapshot_inside_a_line_longer_than_a_read(tmp_path, monkeypatch):
    """A reader stopped in the middle of a long line resumes at that line's first byte."""
    monkeypatch.setattr(line_blocks, "_TIME_BUDGET", 0.0)
    path = tmp_path / "long.txt"
    long_line = "é" * 5000
    path.write_text(f"short\r\n{long_line}\r\nafter\n", encoding="utf-8")
    source = TextFileSource(str(path), chunk_size=16)
    reader = source.create_reader(0, 1)
    reader.open()
    assert reader.poll(1) == ["short"]
    assert reader.poll(1) == []  # the long line is being accumulated, a read at a time
    assert reader.poll(1) == []
    split = FileSplit(str(path), 7, os.path.getsize(path))
    assert reader.snapshot_state(1) == [split]
    reader.close()
    assert drain(source.restore_reader(0, 1, [split])) == [long_line, "after"]


def test_text_snapshot_at_split_boundaries_and_after_the_end(text_inputs):
    source = TextFileSource(text_inputs["dir"])
    files = [(path, size) for path, size in source.files if size]
    reader = source.create_reader(0, 1)
    reader.open()
    first_file_lines = len(reference_lines(open(files[0][0], "rb").read()))
    assert len(as_list(reader.poll(first_file_lines))) == first_file_lines
    # The first file is read to its end: it is no longer work; the others are untouched.
    assert reader.snapshot_state(1) == [FileSplit(path, 0, size) for path, size in files[1:]]
    drain(reader)
    assert reader.snapshot_state(2) == []
    restored = source.restore_reader(0, 1, [])
    assert restored.poll(10) is None and restored.snapshot_state(3) == []


def test_text_restore_refuses_bad_splits(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("x\n")
    source = TextFileSource(str(path))
    with pytest.raises(ValueError, match=r"text file source cannot restore split 'f.txt:0'"):
        source.restore_reader(0, 1, ["f.txt:0"])
    with pytest.raises(ValueError, match="0 <= start <= end"):
        source.restore_reader(0, 1, [(str(path), 5, 2)])
    with pytest.raises(ValueError, match="subtask 2 outside 0..1"):
        source.restore_reader(2, 2, [])
    # A split given as a plain tuple or a dict (e.g. from an older job) is accepted.
    assert drain(source.restore_reader(0, 1, [(str(path), 0, 2)])) == ["x"]
    assert drain(source.restore_reader(0, 1, [{"path": str(path), "start": 0, "end": 2}])) == ["x"]


# --- number sequence, data generator, collection ------------------------------------------


def number_replay(start: int, end: int) -> Replay:
    def expected(splits: list) -> list:
        return [n for split in splits for n in range(split.next, split.stop)]

    return Replay(NumberSequenceSource(start, end), expected, list(range(start, end + 1)))


def merged_indices(splits: list) -> Any:
    """The splits' indices merged, smallest first (what a generator reader emits)."""
    runs = []
    for split in splits:
        if split.stop is None:
            runs.append(itertools.count(split.next_index, split.step))
        else:
            runs.append(iter(range(split.next_index, split.stop, split.step)))
    return heapq.merge(*runs)


def generator_replay(count: int, strategy: RateLimiterStrategy | None = None) -> Replay:
    source = DataGeneratorSource(lambda i: f"e{i}", count, strategy)

    def expected(splits: list) -> list:
        return [f"e{i}" for i in merged_indices(splits)]

    return Replay(source, expected, [f"e{i}" for i in range(count)])


@pytest.mark.parametrize("old_p, new_p", RESCALINGS)
def test_number_sequence_replay(old_p, new_p):
    for seed in range(10):
        number_replay(-5, 40).run([old_p, new_p], random.Random(seed))
    number_replay(1, 3).run([old_p, new_p], random.Random(0))  # fewer numbers than readers


def test_number_sequence_replay_across_jobs():
    replay = number_replay(0, 200)
    for seed in range(30):
        rng = random.Random(seed)
        replay.run([rng.choice([1, 2, 3, 5]) for _ in range(4)], rng)


class TickClock:
    """A clock that moves 7 ms whenever it is read: a rate limiter grants a few records often."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.007
        return self.now


@pytest.mark.parametrize("old_p, new_p", RESCALINGS)
@pytest.mark.parametrize("limited", [False, True], ids=["unlimited", "rate_limited"])
def test_bounded_generator_replay(old_p, new_p, limited):
    strategy = RateLimiterStrategy.per_second(500, clock=TickClock()) if limited else None
    for seed in range(10):
        generator_replay(37, strategy).run([old_p, new_p], random.Random(seed))
        generator_replay(2, strategy).run([old_p, new_p], random.Random(seed))


def test_bounded_generator_replay_across_jobs():
    replay = generator_replay(150)
    for seed in range(30):
        rng = random.Random(seed)
        replay.run([rng.choice([1, 2, 3, 5]) for _ in range(4)], rng)


@pytest.mark.parametrize("old_p, new_p", RESCALINGS)
@pytest.mark.parametrize("limited", [False, True], ids=["unlimited", "rate_limited"])
def test_unbounded_generator_replay(old_p, new_p, limited):
    """Endless: every index below a bound comes out exactly once, each split in order."""
    bound = 300
    for seed in range(8):
        rng = random.Random(seed)
        clock = TickClock()
        strategy = RateLimiterStrategy.per_second(2000, clock=clock) if limited else None
        source = DataGeneratorSource(lambda i: i, None, strategy)
        readers = [source.create_reader(i, old_p) for i in range(old_p)]
        before, snapshots = [], []
        for reader in readers:
            reader.open()
            work = merged_indices(reader.snapshot_state(1))
            got = poll_some(reader, rng)
            assert got == list(itertools.islice(work, len(got)))
            rest = reader.snapshot_state(1)
            assert list(itertools.islice(merged_indices(rest), 50)) == list(
                itertools.islice(work, 50)
            )
            snapshots.append(rest)
            before += got
        after = []
        for index, splits in enumerate(redistribute_splits(snapshots, new_p)):
            reader = source.restore_reader(index, new_p, splits)
            reader.open()
            work = merged_indices(splits)
            got: list[int] = []
            for _ in range(100_000):
                if not splits or (got and got[-1] >= bound):
                    break
                got += reader.poll(rng.randint(1, 9))
            if not splits:  # nothing to do: an endless reader idles instead of finishing
                assert reader.poll(10) == [] and reader.next_wakeup() is None
            assert got == list(itertools.islice(work, len(got)))
            after += got
        everything = before + after
        assert len(everything) == len(set(everything)), "duplicates"
        assert sorted(i for i in everything if i < bound) == list(range(bound))


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def records_in_ten_seconds(readers: list[SourceReader], clock: ManualClock) -> list[list]:
    """What each reader emits when polled every 10 ms for 10 seconds from time 0."""
    outputs: list[list] = [[] for _ in readers]
    for step in range(1001):
        clock.now = step * 0.01
        for index, reader in enumerate(readers):
            outputs[index] += reader.poll(10_000)
    return outputs


def test_unbounded_generator_rescaling_keeps_the_total_rate():
    clock = ManualClock()
    source = DataGeneratorSource(lambda i: i, None, RateLimiterStrategy.per_second(60, clock=clock))
    old = [source.create_reader(i, 2) for i in range(2)]
    snapshots = [r.snapshot_state(1) for r in old]
    assert snapshots == [[GeneratorSplit(0, None, 2, 0.5)], [GeneratorSplit(1, None, 2, 0.5)]]
    shares = redistribute_splits(snapshots, 3)
    restored = [source.restore_reader(i, 3, shares[i]) for i in range(3)]
    # The readers holding half the work each keep 30/s (the first record at once); the third
    # has no work and idles, so the source still makes 60/s, not 2/3 of it.
    outputs = records_in_ten_seconds(restored, clock)
    assert outputs == [list(range(0, 602, 2)), list(range(1, 603, 2)), []]
    assert restored[2].next_wakeup() is None
    single = source.restore_reader(0, 1, redistribute_splits(snapshots, 1)[0])
    # Both halves at the full 60/s, merged into index order.
    assert records_in_ten_seconds([single], clock) == [list(range(601))]


def test_generator_restore_refuses_bad_or_foreign_splits():
    bounded = DataGeneratorSource(str, 10)
    endless = DataGeneratorSource(str, None)
    with pytest.raises(ValueError, match="recorded by an unbounded generator.*count=10"):
        bounded.restore_reader(0, 1, [GeneratorSplit(3, None, 2, 0.5)])
    with pytest.raises(ValueError, match="recorded by a bounded generator.*count=None"):
        endless.restore_reader(0, 1, [GeneratorSplit(3, 10, 1, 0.5)])
    with pytest.raises(ValueError, match="step >= 1"):
        bounded.restore_reader(0, 1, [GeneratorSplit(3, 10, 0, 0.5)])
    with pytest.raises(ValueError, match=r"expected GeneratorSplit\(next_index, stop, step"):
        bounded.restore_reader(0, 1, [(1, 2)])
    assert drain(bounded.restore_reader(0, 1, [(7, 10, 1, 0.5)])) == ["7", "8", "9"]


def test_collection_replay():
    items = [f"item-{i}" for i in range(23)] + [None, (1, 2), "item-0"]
    source = CollectionSource(items)

    def expected(splits: list) -> list:
        return [x for split in splits for x in items[split.index :]]

    replay = Replay(source, expected, items)
    for seed in range(20):
        replay.run([1, 1, 1, 1], random.Random(seed))


def test_collection_restore_rules():
    source = CollectionSource(["a", "b", "c"])
    assert drain(source.restore_reader(0, 1, [CollectionSplit(1)])) == ["b", "c"]
    assert drain(source.restore_reader(0, 1, [])) == []  # everything was emitted
    with pytest.raises(ValueError, match="parallelism 1"):
        source.restore_reader(1, 2, [])
    with pytest.raises(ValueError, match="cannot restore 2 splits"):
        source.restore_reader(0, 1, [CollectionSplit(0), CollectionSplit(1)])
    with pytest.raises(ValueError, match="bad index"):
        source.restore_reader(0, 1, [CollectionSplit(-1)])


def test_number_sequence_restore_refuses_bad_splits():
    source = NumberSequenceSource(1, 10)
    with pytest.raises(ValueError, match="number sequence source cannot restore split"):
        source.restore_reader(0, 1, [{"next": 1}])
    with pytest.raises(ValueError, match="not ints"):
        source.restore_reader(0, 1, [NumberSequenceSplit("1", 5)])
    assert drain(source.restore_reader(0, 1, [NumberSequenceSplit(8, 11), (2, 4)])) == [
        8,
        9,
        10,
        2,
        3,
    ]


# --- sources that cannot replay ----------------------------------------------------------


def test_socket_source_is_at_most_once_and_reconnects_on_restore():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    first_read = threading.Event()

    def serve() -> None:
        for payload in (b"one\ntwo\nthr", b"fresh\n"):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(payload)
                if payload.startswith(b"one"):
                    # keep the connection open: at EOF the reader would emit "thr" as well
                    first_read.wait(timeout=10)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    source = SocketTextSource("127.0.0.1", port)
    reader = source.create_reader(0, 1)
    reader.open()
    got: list = []
    while len(got) < 2:
        got += reader.poll(10)
    assert got == ["one", "two"]
    assert reader.snapshot_state(1) == []  # nothing to replay: "thr" is lost on a failure
    reader.close()
    first_read.set()
    restored = source.restore_reader(0, 1, [])
    restored.open()
    again: list = []
    while (batch := restored.poll(10)) is not None:
        again += batch
    assert again == ["fresh"]  # a new connection; nothing old comes back
    restored.close()
    server.join(timeout=10)
    listener.close()
    with pytest.raises(ValueError, match="socket source records no splits"):
        source.restore_reader(0, 1, [("x", 1)])


def test_default_contract_for_sources_that_keep_no_state():
    class Once(Source):
        def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
            return OnceReader()

    class OnceReader(SourceReader):
        def __init__(self) -> None:
            self.done = False

        def poll(self, max_records: int) -> list | None:
            if self.done:
                return None
            self.done = True
            return ["hello"]

    reader = Once().create_reader(0, 1)
    assert reader.poll(1) == ["hello"] and reader.snapshot_state(1) == []
    # Without splits a restored reader starts afresh, as a non-checkpointed Flink source does.
    assert drain(Once().restore_reader(0, 1, [])) == ["hello"]
    with pytest.raises(NotImplementedError, match="Once cannot restore its readers' splits"):
        Once().restore_reader(0, 1, [("some", "split")])
