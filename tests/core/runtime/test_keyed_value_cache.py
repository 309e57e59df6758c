"""The running-value cache of the built-in keyed aggregations, on both real backends.

What matters: results equal those of the per-record definition; a snapshot taken after
``prepare_snapshot`` holds every update (and restores at another parallelism and on the
other backend); keys that Python's dict would merge (1, True, 1.0; -0.0, 0.0) stay apart;
the bound writes back and starts over without losing updates.
"""

from __future__ import annotations

import types
from collections import Counter, defaultdict

import pytest

from flowrun.core.functions import RuntimeContext
from flowrun.core.runtime.keyed_operators import AggregationOperator, ReduceOperator
from flowrun.core.runtime.keyed_value_cache import KeyedValueCache
from flowrun.core.runtime.operators import UserCodeError
from flowrun.core.runtime.timer_service import InternalTimerService
from flowrun.core.typeinfo import Types
from flowrun.state.backends.hashmap import HashMapStateBackend
from flowrun.state.backends.lmdb import EmbeddedLmdbStateBackend
from flowrun.state.descriptors import ValueStateDescriptor
from flowrun.state.key_groups import KeyGroupRange, assign_to_key_group

MAX_P = 128
PAIR = Types.TUPLE([Types.STRING(), Types.LONG()])
BACKENDS = {"hashmap": HashMapStateBackend, "lmdb": EmbeddedLmdbStateBackend}


class _Collect:
    def __init__(self) -> None:
        self.records: list = []

    def emit(self, records: list) -> None:
        self.records.extend(records)


def _backend(kind: str, tmp_path, index: int = 0, parallelism: int = 1, name: str = "b"):
    key_groups = KeyGroupRange.of_operator(MAX_P, parallelism, index)
    return BACKENDS[kind]().create_keyed_backend(
        "op", key_groups, MAX_P, None, str(tmp_path / f"{name}-{index}-of-{parallelism}"), None
    )


def _open(operator, backend, index: int = 0, parallelism: int = 1, restored: bool = False):
    """``restored``: ``backend`` holds restored state (as ``restore_operator_state`` says)."""
    ctx = types.SimpleNamespace(
        keyed_backend=backend,
        timer_service=InternalTimerService(),
        max_parallelism=MAX_P,
        index=index,
        parallelism=parallelism,
        restored=restored,
        runtime_context=RuntimeContext("op", index, parallelism, MAX_P, 0, {}),
    )
    out = _Collect()
    operator.setup(ctx, out)
    operator.open()
    return out


def _add(a: tuple, b: tuple) -> tuple:
    return (a[0], a[1] + b[1])


def _words(n: int, distinct: int) -> list[tuple[str, int]]:
    return [(f"w{(i * 7919) % distinct}", 1) for i in range(n)]


def _running_counts(records: list) -> list:
    seen: Counter = Counter()
    out = []
    for word, _ in records:
        seen[word] += 1
        out.append((word, seen[word]))
    return out


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_reduce_emits_every_update_across_batches_and_a_small_bound(kind, tmp_path, monkeypatch):
    monkeypatch.setattr("flowrun.core.runtime.keyed_value_cache.CACHE_CAPACITY", 7)
    records = _words(3000, 40)
    op = ReduceOperator("reduce", _add, lambda r: r[0], PAIR)
    out = _open(op, _backend(kind, tmp_path))
    assert op._cache.capacity == 7
    for start in range(0, len(records), 250):
        op.process(records[start : start + 250])
    assert out.records == _running_counts(records)


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_prepare_snapshot_writes_back_and_restores_at_another_parallelism(kind, tmp_path):
    records = _words(5000, 300)
    first, second = records[:3000], records[3000:]
    old = [_backend(kind, tmp_path, i, 2, "old") for i in range(2)]
    ops = [ReduceOperator("reduce", _add, lambda r: r[0], PAIR) for _ in old]
    for i, (op, backend) in enumerate(zip(ops, old, strict=True)):
        _open(op, backend, i, 2)
    for start in range(0, len(first), 500):
        for i, op in enumerate(ops):
            op.process([r for r in first[start : start + 500] if _owner(r[0], 2) == i])
    for op in ops:
        op.prepare_snapshot(1, 0)
    streams = [buf for backend in old for buf in backend.snapshot()]
    # restore into three subtasks of the other backend, then run the rest of the input
    other = "lmdb" if kind == "hashmap" else "hashmap"
    outs = []
    for i in range(3):
        backend = _backend(other, tmp_path, i, 3, "new")
        backend.restore(streams)
        op = ReduceOperator("reduce", _add, lambda r: r[0], PAIR)
        outs.append(_open(op, backend, i, 3, restored=True))
        op.process([r for r in second if _owner(r[0], 3) == i])
        op.end_input()
    final = {}
    for out in outs:
        final.update(out.records)
    assert final == dict(Counter(w for w, _ in records))


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_a_complete_cache_reads_nothing_until_the_bound_empties_it(kind, tmp_path, monkeypatch):
    """Not restored, the cache holds every value there is and reads no key from the backend;
    once the bound has emptied it, keys entering it again are read back (with their values),
    for a reduce and a sum alike; the results are those of the per-record definition."""
    monkeypatch.setattr("flowrun.core.runtime.keyed_value_cache.CACHE_CAPACITY", 150)
    # new keys keep coming: key i first appears around record 20 * i (300 keys in all)
    records = [(f"w{(i * 7919) % (1 + i // 20)}", 1) for i in range(6000)]
    for name, op in (
        ("reduce", ReduceOperator("reduce", _add, lambda r: r[0], PAIR)),
        ("sum", AggregationOperator("sum", "sum", 1, lambda r: r[0], PAIR)),
    ):
        backend = _backend(kind, tmp_path, name=name)
        out = _open(op, backend)
        reads = []
        read_values = backend.read_values
        monkeypatch.setattr(
            backend,
            "read_values",
            lambda state, groups, reads=reads, read_values=read_values: (
                reads.append(len(groups)) or read_values(state, groups)
            ),
        )
        op.process(records[:2500])  # 125 keys: within the bound
        assert op._cache.complete and reads == []
        for start in range(2500, len(records), 500):
            op.process(records[start : start + 500])
        assert not op._cache.complete and sum(reads) > 0
        assert out.records == _running_counts(records)


def _owner(key: str, parallelism: int) -> int:
    return assign_to_key_group(key, MAX_P) * parallelism // MAX_P


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_keys_a_dict_would_merge_stay_apart(kind, tmp_path):
    """1, True and 1.0 (and -0.0 and 0.0) are different keys in keyed state, as in Flink."""
    batches = [
        [(1, 10), (2, 1), (1, 5)],  # plain ints: the cache
        [(True, 1), (1, 1), (1.0, 100), (-0.0, 7), (0.0, 3)],  # the per-record path
        [(1, 1), (2, 2)],  # the cache again, after the write-back
        [(1.0, 1), (True, 1), (-0.0, 1)],
    ]
    op = AggregationOperator("sum", "sum", 1, lambda r: r[0], None)
    out = _open(op, _backend(kind, tmp_path))
    for batch in batches:
        op.process(batch)
    expected, totals = [], defaultdict(int)
    for batch in batches:
        for key, value in batch:
            tag = (type(key), repr(key))
            first = tag not in totals
            totals[tag] += value
            expected.append((key, totals[tag]) if not first else (key, value))
    assert [(type(k), repr(k), v) for k, v in out.records] == [
        (type(k), repr(k), v) for k, v in expected
    ]


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_tuple_keys_use_the_cache_unless_an_element_could_merge(kind, tmp_path):
    backend = _backend(kind, tmp_path)
    state = backend.get_state(ValueStateDescriptor("v", Types.PICKLED_BYTE_ARRAY()))
    cache = KeyedValueCache(backend, state, MAX_P)
    assert cache.values_for([("a", 1), ("b", 2), (None, b"x")]) is cache.values
    assert cache.values_for([("a", 1), ("a", True)]) is None
    assert cache.values_for([("a", (1, 2))]) is None  # nested: not checked, so not cached
    assert cache.values_for([1.5]) is None


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_a_key_of_another_subtask_is_reported_with_the_operator(kind, tmp_path):
    op = ReduceOperator("my reduce", _add, lambda r: r[0], PAIR)
    _open(op, _backend(kind, tmp_path, 0, 2), 0, 2)
    foreign = next(f"k{i}" for i in range(1000) if _owner(f"k{i}", 2) == 1)
    with pytest.raises(UserCodeError, match="my reduce.*outside this backend"):
        op.process([(foreign, 1)])


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_a_failing_reduce_names_the_record(kind, tmp_path):
    def bad(a, b):
        raise ValueError("boom")

    op = ReduceOperator("my reduce", bad, lambda r: r[0], PAIR)
    _open(op, _backend(kind, tmp_path))
    with pytest.raises(UserCodeError, match=r"my reduce.*\('a', 2\).*boom"):
        op.process([("a", 1), ("a", 2)])


class _KillOnce:
    """Map that SIGKILLs its own subtask once, on the first attempt, after a checkpoint
    (the source is paced, so that checkpoints complete while records still flow)."""

    def __init__(self, flag: str) -> None:
        self.flag = flag
        self.seen = 0
        self.kill_at = None

    def open(self, runtime_context) -> None:
        self.attempt = runtime_context.get_attempt_number()

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        # the second checkpoint holds the reducer's state of the records seen before it
        if checkpoint_id >= 2 and self.kill_at is None:
            self.kill_at = self.seen + 100

    def map(self, word: str) -> tuple[str, int]:
        import os
        import signal

        self.seen += 1
        if self.attempt == 0 and self.kill_at is not None and self.seen > self.kill_at:
            open(self.flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return (word, 1)


def _word(i: int) -> str:
    return f"w{(i * 31) % 257}"


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_a_reduce_job_killed_after_a_checkpoint_resumes_exactly(kind, tmp_path):
    from flowrun.core import MapFunction, StreamExecutionEnvironment
    from flowrun.core.connectors import DataGeneratorSource, RateLimiterStrategy

    class KillOnce(_KillOnce, MapFunction):
        pass

    n = 12_000
    words = [_word(i) for i in range(n)]
    source = DataGeneratorSource(_word, n, RateLimiterStrategy.per_second(10_000), Types.STRING())
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    env.set_state_backend(BACKENDS[kind]())
    env.enable_checkpointing(50)
    env.get_configuration().set("restart-strategy", "fixed-delay")
    env.get_configuration().set("restart-strategy.fixed-delay.delay", "10 ms")
    out = list(
        env.from_source(source, None, "words")
        .map(KillOnce(str(tmp_path / "killed")), output_type=PAIR)
        .key_by(lambda t: t[0])
        .reduce(_add)
        .execute_and_collect()
    )
    assert (tmp_path / "killed").exists(), "the map was not killed: nothing was restored"
    per_key = defaultdict(list)
    for word, count in out:
        per_key[word].append(count)
    assert per_key == {w: list(range(1, n + 1)) for w, n in Counter(words).items()}


@pytest.mark.parametrize("kind", sorted(BACKENDS))
@pytest.mark.parametrize("capacity", [None, 7])
def test_every_snapshot_holds_the_updates_since_the_one_before(kind, tmp_path, capacity):
    """Write-backs before and after the first snapshot (all cached keys, then the changed
    ones), with and without the bound emptying the cache in between."""
    backend = _backend(kind, tmp_path, name="src")
    op = ReduceOperator("reduce", _add, lambda r: r[0], PAIR)
    _open(op, backend)
    if capacity is not None:
        op._cache.capacity = capacity
    records = _words(400, 20)
    snapshots = []
    for start, stop in [(0, 100), (100, 130), (130, 131), (131, 400)]:
        op.process(records[start:stop])
        op.prepare_snapshot(len(snapshots) + 1, 0)
        snapshots.append((stop, [buf for buf in backend.snapshot()]))
    for stop, streams in snapshots:
        restored = _backend(kind, tmp_path, name=f"restored-{stop}-{capacity}")
        restored.restore(streams)
        check = ReduceOperator("reduce", _add, lambda r: r[0], PAIR)
        out = _open(check, restored, restored=True)
        words = sorted({w for w, _ in records})
        check.process([(w, 1) for w in words])
        expected = Counter(w for w, _ in records[:stop])
        assert out.records == [(w, expected[w] + 1) for w in words]
