"""Keyed Arrow ``count()`` / ``sum(col)``: a local-global aggregation on whole batches.

``key_by("word").count()`` on an Arrow stream runs as two operators (Flink's local-global
aggregation). :class:`ArrowLocalAggregateOperator`, chained to the producer, folds each batch to
one row per distinct key with its partial count or sum; the shuffle carries those; and
:class:`ArrowKeyedAggregateOperator` folds them into running totals and emits one row
``(key, total)`` per key a batch touched -- the batch-at-a-time counterpart of Flink's rolling
aggregation.

The running totals are numpy arrays indexed by a key slot (:class:`~.key_slots.KeySlots`), so a
batch costs a few vectorised operations and no Python object per key. They reach checkpoints
through the operator's keyed state backend: the totals of the keys changed since the previous
checkpoint are written into a ValueState (by key group) when a checkpoint is taken, and a
restore reads them back, at any parallelism, from whichever backend wrote them.

The arrays are a bounded cache of that state, not all of it: past :data:`MAX_KEYS_IN_MEMORY`
keys the changed totals are written back and the arrays start empty, and from then on (and
after a restore) a key entering the arrays first reads its total from the backend -- so with
LMDB the number of keys is bounded by the disk, not by memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowrun.state.key_groups import assign_key_groups_arrow, hash_arrow

from .key_slots import KeySlots
from .operators import StreamOperator, _batch_summary

__all__ = [
    "KEY_HASH_COLUMN",
    "MAX_KEYS_IN_MEMORY",
    "ArrowKeyedAggregateOperator",
    "ArrowLocalAggregateOperator",
]

#: keys whose totals the global phase keeps in numpy arrays at most (~50 bytes each plus the
#: key): beyond, it writes them back to the keyed backend and starts over
MAX_KEYS_IN_MEMORY = 1 << 20

_NAN = float("nan")  #: the one NaN key object handed to the keyed backend (see _parts)

#: int32 Java hash codes of the keys, added by the local phase: the shuffle routes by them and
#: the global phase's key table indexes by them, so each partial key is hashed once.
KEY_HASH_COLUMN = "__flowrun_key_hash"


def _partial_aggregate(batch: pa.RecordBatch, key_column: str, column: str | None):
    """(distinct keys, per-key partial) of one batch: value_counts for a count, else group_by."""
    if column is None:
        counts = pc.value_counts(batch.column(key_column))
        return counts.field("values"), counts.field("counts")
    table = pa.Table.from_batches([batch])
    grouped = table.group_by(key_column, use_threads=False).aggregate([(column, "sum")])
    return (
        grouped.column(key_column).combine_chunks(),
        grouped.column(f"{column}_sum").combine_chunks(),
    )


class ArrowLocalAggregateOperator(StreamOperator):
    """First phase of a keyed Arrow ``count()``/``sum(col)``, before the shuffle.

    Chained to the producer, it folds each batch to one row per distinct key with its
    partial count or sum (Flink's local-global aggregation). The shuffle then carries
    distinct keys instead of every row: on Zipf-distributed words that is several times
    fewer rows to hash, serialise and merge downstream, and the result is the same.
    """

    def __init__(self, name: str, key_column: str, column: str | None, out_name: str) -> None:
        self.name = name
        self.key_column = key_column
        self.column = column
        self.out_name = out_name

    def process(self, batch: pa.RecordBatch, input_index: int = 0) -> None:
        if not batch.num_rows:
            return
        try:
            keys, partial = _partial_aggregate(batch, self.key_column, self.column)
            codes = pa.array(hash_arrow(keys))
        except Exception as exc:
            raise self.fail(_batch_summary(batch), exc) from exc
        self.output.emit(
            pa.RecordBatch.from_arrays(
                [keys, partial, codes], names=[self.key_column, self.out_name, KEY_HASH_COLUMN]
            )
        )


def _partial_values(partial: pa.Array) -> np.ndarray:
    """A partial count or sum as int64 or float64 numpy values (a sum of only nulls adds 0)."""
    if partial.null_count:
        partial = pc.fill_null(partial, 0)
    kind = np.float64 if pa.types.is_floating(partial.type) else np.int64
    return partial.to_numpy(zero_copy_only=False).astype(kind, copy=False)


class ArrowKeyedAggregateOperator(StreamOperator):
    """Second phase of a keyed Arrow ``count()``/``sum(col)``: the running totals.

    Its input holds partial aggregates from :class:`ArrowLocalAggregateOperator`, whose keys
    are distinct within every batch (a partitioner only splits batches), which is what lets
    one vectorised fold per batch be exact: ``totals[slots] += partial``.
    """

    keyed_state = True  #: totals are checkpointed in a keyed backend, by key group

    def __init__(self, name: str, key_column: str, out_name: str) -> None:
        self.name = name
        self.key_column = key_column
        self.out_name = out_name

    @property
    def _state_name(self) -> str:
        return f"_flowrun_{self.out_name}"

    def open(self) -> None:
        super().open()
        from flowrun.state.descriptors import ValueStateDescriptor

        from ..typeinfo import Types

        self.max_keys = MAX_KEYS_IN_MEMORY
        self._start_over()
        backend = self.ctx.keyed_backend
        self._state = backend.get_state(
            ValueStateDescriptor(self._state_name, Types.PICKLED_BYTE_ARRAY())
        )
        #: the backend may hold totals of keys not in the arrays (restored, or written back)
        self._backed = bool(self.ctx.restored)

    def _start_over(self) -> None:
        self.slots = KeySlots()
        self.totals = np.zeros(0, dtype=np.int64)  #: by slot; grows with the slots
        self._dirty = np.zeros(0, dtype=bool)  #: slots changed since the last write-back

    def _parts(self, keys: pa.Array) -> list[tuple[np.ndarray, list, dict]]:
        """``(positions, keys as Python objects, {key: key group})`` for the backend's bulk
        calls, which take dicts. Float keys need care there: -0.0 and 0.0 are two keys (as
        for Java's ``equals`` and the key serializer) but one dict key, so a column with both
        is split in two; NaN equals NaN as a key but not as a dict key, so every NaN becomes
        one shared object (which a dict finds by identity)."""
        positions = np.arange(len(keys))
        parts = [positions]
        nan = None
        if pa.types.is_floating(keys.type):
            values = keys.to_numpy(zero_copy_only=False)
            negative_zero = (values == 0) & np.signbit(values)
            if negative_zero.any() and ((values == 0) & ~negative_zero).any():
                parts = [positions[~negative_zero], positions[negative_zero]]
            nan = np.isnan(values)
        groups = assign_key_groups_arrow(keys, self.ctx.max_parallelism)
        out = []
        for part in parts:
            listed = keys.take(pa.array(part)).to_pylist() if len(parts) > 1 else keys.to_pylist()
            if nan is not None and nan[part].any():
                listed = [_NAN if nan[p] else key for p, key in zip(part, listed, strict=True)]
            out.append((part, listed, dict(zip(listed, groups[part].tolist(), strict=True))))
        return out

    def _load(self, keys: pa.Array, slots: np.ndarray) -> None:
        """Totals of keys new to the arrays that the backend already holds (bulk reads)."""
        for positions, listed, groups in self._parts(keys):
            stored = self.ctx.keyed_backend.read_values(self._state, groups)
            if not stored:
                continue
            found = [i for i, key in enumerate(listed) if key in stored]
            values = [stored[listed[i]] for i in found]
            kind = np.float64 if any(isinstance(v, float) for v in values) else np.int64
            self._reserve(len(self.slots), kind)
            self.totals[slots[positions[found]]] = np.array(values, dtype=self.totals.dtype)

    def _reserve(self, count: int, kind: Any) -> None:
        """Room for ``count`` slots, in a dtype that holds ``kind`` (int totals become float
        when a float partial arrives)."""
        if kind is np.float64 and self.totals.dtype != np.float64:
            self.totals = self.totals.astype(np.float64)
        if count > len(self.totals):
            size = max(count, 2 * len(self.totals), 1024)
            grown = np.zeros(size, dtype=self.totals.dtype)
            grown[: len(self.totals)] = self.totals
            self.totals = grown
            dirty = np.zeros(size, dtype=bool)
            dirty[: len(self._dirty)] = self._dirty
            self._dirty = dirty

    def prepare_snapshot(self, checkpoint_id: int, timestamp: int) -> None:
        self._write_back()

    def _write_back(self) -> None:
        """Write the totals changed since the last write-back into the keyed backend."""
        changed = np.flatnonzero(self._dirty[: len(self.slots)])
        if not len(changed):
            return
        backend = self.ctx.keyed_backend
        backend.begin_batch()
        try:
            for positions, keys, groups in self._parts(self.slots.take(changed)):
                totals = self.totals[changed[positions]].tolist()
                backend.write_values(self._state, dict(zip(keys, totals, strict=True)), groups)
        finally:
            backend.end_batch()
        self._dirty[changed] = False

    def process(self, batch: pa.RecordBatch, input_index: int = 0) -> None:
        try:
            keys = batch.column(self.key_column)
            partial = _partial_values(batch.column(self.out_name))
            codes = None
            if KEY_HASH_COLUMN in batch.schema.names:
                codes = batch.column(KEY_HASH_COLUMN).to_numpy(zero_copy_only=False)
            known = len(self.slots)
            slots = self.slots.find_or_add(keys, codes)
            self._reserve(len(self.slots), partial.dtype.type)
            if self._backed and len(self.slots) > known:
                new = np.arange(known, len(self.slots))
                self._load(self.slots.take(new), new)
        except Exception as exc:
            raise self.fail(_batch_summary(batch), exc) from exc
        totals = self.totals
        totals[slots] += partial
        self._dirty[slots] = True
        out = pa.RecordBatch.from_arrays(
            [keys, pa.array(totals[slots])], names=[self.key_column, self.out_name]
        )
        self.output.emit(out)
        if len(self.slots) > self.max_keys:
            self._write_back()
            self._start_over()
            self._backed = True
