"""The keyed Arrow count/sum's running totals are a bounded cache of its keyed state.

What matters: past its bound the operator writes the totals back and starts over, and a key
that enters again continues from its stored total -- so the results stay exact while memory
holds at most the bound; the same after a restore at another parallelism on the other
backend (the totals are read back per key as keys arrive); -0.0 and 0.0 stay two keys.
"""

from __future__ import annotations

import random
import types
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from flowrun.core.functions import RuntimeContext
from flowrun.core.runtime.arrow_aggregates import ArrowKeyedAggregateOperator
from flowrun.state.backends.hashmap import HashMapStateBackend
from flowrun.state.backends.lmdb import EmbeddedLmdbStateBackend
from flowrun.state.key_groups import KeyGroupRange, assign_key_groups_arrow

MAX_P = 128
BACKENDS = {"hashmap": HashMapStateBackend, "lmdb": EmbeddedLmdbStateBackend}


class _Collect:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def emit(self, batch: pa.RecordBatch) -> None:
        self.rows.extend(zip(*(c.to_pylist() for c in batch.columns), strict=True))


def _operator(kind, tmp_path, name, index=0, parallelism=1, streams=None, max_keys=None):
    key_groups = KeyGroupRange.of_operator(MAX_P, parallelism, index)
    backend = BACKENDS[kind]().create_keyed_backend(
        "op", key_groups, MAX_P, None, str(tmp_path / f"{name}-{index}-of-{parallelism}"), None
    )
    if streams is not None:
        backend.restore(streams)
    ctx = types.SimpleNamespace(
        keyed_backend=backend,
        timer_service=None,
        max_parallelism=MAX_P,
        index=index,
        parallelism=parallelism,
        restored=streams is not None,
        runtime_context=RuntimeContext("op", index, parallelism, MAX_P, 0, {}),
    )
    op = ArrowKeyedAggregateOperator("count", "word", "count")
    out = _Collect()
    op.setup(ctx, out)
    op.open()
    if max_keys is not None:
        op.max_keys = max_keys
    return op, out


def _partials(seed: int, batches: int, distinct: int) -> list[pa.RecordBatch]:
    """Partial counts as the local phase emits them: distinct keys within each batch."""
    rng = random.Random(seed)
    out = []
    for _ in range(batches):
        words = rng.sample(range(distinct), rng.randint(1, 40))
        out.append(
            pa.record_batch(
                [pa.array([f"w{w}" for w in words]), pa.array([rng.randint(1, 5)] * len(words))],
                names=["word", "count"],
            )
        )
    return out


def _check_running_totals(batches, rows, start: Counter | None = None) -> Counter:
    """Every emitted total is the key's running total at that batch (in order)."""
    totals = Counter(start or {})
    expected = []
    for batch in batches:
        for word, n in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            totals[word] += n
            expected.append((word, totals[word]))
    assert rows == expected
    return totals


def _owned(batch: pa.RecordBatch, index: int, parallelism: int) -> pa.RecordBatch:
    groups = assign_key_groups_arrow(batch.column(0), MAX_P)
    return batch.filter(pa.array(groups * parallelism // MAX_P == index))


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_past_the_bound_totals_are_written_back_and_read_again(kind, tmp_path):
    batches = _partials(1, 300, 400)
    op, out = _operator(kind, tmp_path, "bounded", max_keys=50)
    for batch in batches:
        op.process(batch)
        assert len(op.slots) <= 50 + 40  # the bound plus at most one batch of new keys
    _check_running_totals(batches, out.rows)
    assert op._backed  # it did start over


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_totals_restore_at_another_parallelism_and_load_per_key(kind, tmp_path):
    first, second = _partials(2, 200, 300), _partials(3, 200, 300)
    old = [_operator(kind, tmp_path, "old", i, 2, max_keys=60) for i in range(2)]
    for batch in first:
        for i, (op, _) in enumerate(old):
            op.process(_owned(batch, i, 2))
    for op, _ in old:
        op.prepare_snapshot(1, 0)
    streams = [buf for op, _ in old for buf in op.ctx.keyed_backend.snapshot()]
    before = Counter()
    for batch in first:
        for word, n in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            before[word] += n
    other = "lmdb" if kind == "hashmap" else "hashmap"
    for i in range(3):
        op, out = _operator(other, tmp_path, "new", i, 3, streams=streams)
        assert len(op.slots) == 0  # nothing is loaded up front
        mine = [b for b in (_owned(batch, i, 3) for batch in second) if b.num_rows]
        for batch in mine:
            op.process(batch)
        _check_running_totals(mine, out.rows, before)


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_negative_zero_and_zero_stay_two_keys_through_write_back(kind, tmp_path):
    op, out = _operator(kind, tmp_path, "zeros", max_keys=2)
    keys = [-0.0, 0.0, 1.5, float("nan")]
    batches = [
        pa.record_batch(
            [pa.array(keys[: i % 4 + 1]), pa.array([1] * (i % 4 + 1))], ["word", "count"]
        )
        for i in range(12)
    ]
    for batch in batches:
        op.process(batch)
    final: dict = {}
    for key, total in out.rows:
        final[(np.signbit(key), repr(key))] = total
    assert final == {
        (True, "-0.0"): 12,
        (False, "0.0"): 9,
        (False, "1.5"): 6,
        (False, "nan"): 3,
    }
