"""Flink's stream partitioners, applied to whole batches instead of single records.

A partitioner decides which output channel (downstream subtask) each record of a batch goes
to. Records travel in batches, either a Python ``list`` (row API) or a ``pyarrow.RecordBatch``
(Arrow API), so each partitioner splits one batch into one part per channel:

* :meth:`StreamPartitioner.split_rows` returns ``num_channels`` lists (possibly empty);
* :meth:`StreamPartitioner.split_batch` returns ``num_channels`` batches, ``None`` where a
  channel gets nothing.

Within each channel the records keep their input order, as in Flink; per-key order downstream
depends on it. Channel selection is vectorised with numpy; records are moved between lists at C
speed (a stable sort of the channel ids and one gather), because this runs for every record of
every shuffle.

Parts may share objects with the input: broadcast hands every channel the very same list or
batch, and forward returns the input list itself. Nothing here mutates a batch, and callers
must not mutate an input after splitting it.

Keyed partitioning routes by key group exactly as Flink (see :mod:`flowrun.state.key_groups`),
so records land on the subtask whose :class:`~flowrun.state.key_groups.KeyGroupRange` holds
their state, whichever process computed the route.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from operator import is_, itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from flowrun.core.functions import field_getter
from flowrun.core.reprs import short_repr as _short_repr
from flowrun.state.key_groups import (
    UnhashableKeyError,
    assign_key_groups,
    assign_key_groups_arrow,
    check_parallelism,
    compute_operator_index_for_key_group,
    java_hash,
    murmur_hash,
    picklable_or_repr,
)

__all__ = [
    "ArrowKeyGroupPartitioner",
    "BroadcastPartitioner",
    "CustomPartitionerWrapper",
    "ForwardPartitioner",
    "GlobalPartitioner",
    "KeyGroupStreamPartitioner",
    "KeyColumnError",
    "KeySelectorError",
    "RebalancePartitioner",
    "RescalePartitioner",
    "ShufflePartitioner",
    "StreamPartitioner",
    "split_batch_by_channel",
    "split_rows_by_channel",
]

# Lists are split in chunks of this many records: the gather stays in cache, which measured
# about 1.5x faster than one pass over a 1M-record list.
_SPLIT_CHUNK = 1 << 14


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


class KeySelectorError(Exception):
    """A key selector raised, or returned a key that cannot be hashed, for ``record``.

    ``cause`` is the original exception (also chained as ``__cause__``).
    """

    def __init__(self, record: Any, cause: BaseException, message: str | None = None) -> None:
        self.record = record
        self.cause = cause
        super().__init__(
            message
            or f"key selector failed on record {_short_repr(record)}: "
            f"{type(cause).__name__}: {cause}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries; an unpicklable record must not mask the error.
        return (
            type(self),
            (picklable_or_repr(self.record), picklable_or_repr(self.cause), str(self)),
        )


class KeyColumnError(KeyError):
    """The key column of an :class:`ArrowKeyGroupPartitioner` is missing or ambiguous."""

    def __str__(self) -> str:  # KeyError would print the message wrapped in quotes
        return str(self.args[0]) if self.args else ""


# ------------------------------------------------------------------------------------------
# Splitting helpers
# ------------------------------------------------------------------------------------------


def _channel_bounds(channels: np.ndarray, num_channels: int) -> tuple[np.ndarray, list[int]]:
    counts = np.bincount(channels, minlength=num_channels)
    bounds = np.zeros(num_channels + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    return counts, bounds.tolist()


def _stable_order(channels: np.ndarray, num_channels: int) -> np.ndarray:
    # numpy's stable sort is a radix sort for 16-bit keys, and channel ids fit in 16 bits.
    narrow = np.int16 if num_channels <= np.iinfo(np.int16).max + 1 else np.int32
    return np.argsort(channels.astype(narrow, copy=False), kind="stable")


def _split_chunk(records: Sequence[Any], channels: np.ndarray, num_channels: int) -> list[list]:
    counts, bounds = _channel_bounds(channels, num_channels)
    parts: list[list] = [[] for _ in range(num_channels)]
    nonempty = np.flatnonzero(counts).tolist()
    if len(nonempty) == 1:
        parts[nonempty[0]] = list(records)
        return parts
    gathered = np.fromiter(records, dtype=object, count=len(records))[
        _stable_order(channels, num_channels)
    ]
    for channel in nonempty:
        parts[channel] = gathered[bounds[channel] : bounds[channel + 1]].tolist()
    return parts


def split_rows_by_channel(
    records: Sequence[Any], channels: np.ndarray, num_channels: int
) -> list[list]:
    """Split ``records`` by per-record channel ids, keeping input order within each channel."""
    if len(records) <= _SPLIT_CHUNK:
        return _split_chunk(records, channels, num_channels)
    parts: list[list] = [[] for _ in range(num_channels)]
    for lo in range(0, len(records), _SPLIT_CHUNK):
        hi = lo + _SPLIT_CHUNK
        for part, piece in zip(
            parts, _split_chunk(records[lo:hi], channels[lo:hi], num_channels), strict=True
        ):
            if piece:
                part.extend(piece)
    return parts


def split_batch_by_channel(
    batch: pa.RecordBatch, channels: np.ndarray, num_channels: int
) -> list[pa.RecordBatch | None]:
    """Split ``batch`` by per-row channel ids; ``None`` for channels that get no rows.

    One ``take`` reorders the batch by channel (stably), and each part is a zero-copy slice.
    """
    parts: list[pa.RecordBatch | None] = [None] * num_channels
    if batch.num_rows == 0:
        return parts
    counts, bounds = _channel_bounds(channels, num_channels)
    nonempty = np.flatnonzero(counts).tolist()
    if len(nonempty) == 1:
        parts[nonempty[0]] = batch
        return parts
    reordered = batch.take(pa.array(_stable_order(channels, num_channels)))
    for channel in nonempty:
        parts[channel] = reordered.slice(bounds[channel], bounds[channel + 1] - bounds[channel])
    return parts


# ------------------------------------------------------------------------------------------
# Partitioners
# ------------------------------------------------------------------------------------------


class StreamPartitioner:
    """Base class: decides the output channel of each record, one batch at a time.

    A partitioner instance lives in one producing subtask; :meth:`setup` tells it how many
    channels that subtask writes to and which subtask it is. Subclasses either override
    :meth:`split_rows`/:meth:`split_batch` or just compute channel ids in
    :meth:`_row_channels`/:meth:`_batch_channels`.
    """

    name: str = "UNKNOWN"
    is_broadcast: bool = False
    is_pointwise: bool = False

    def __init__(self) -> None:
        self.num_channels = 0
        self.subtask_index = 0

    def setup(self, num_channels: int, subtask_index: int = 0) -> None:
        """Bind to this subtask's output channels; must be called before splitting."""
        check_parallelism(num_channels, "number of channels")
        if subtask_index < 0:
            raise ValueError(f"subtask index must be >= 0, got {subtask_index}")
        self.num_channels = num_channels
        self.subtask_index = subtask_index

    def _require_setup(self) -> int:
        if self.num_channels <= 0:
            raise RuntimeError(f"{self.name} partitioner used before setup(num_channels, ...)")
        return self.num_channels

    def split_rows(self, records: list) -> list[list]:
        """One list per channel (``num_channels`` of them), empty where nothing goes."""
        num_channels = self._require_setup()
        if not records:
            return [[] for _ in range(num_channels)]
        return split_rows_by_channel(records, self._row_channels(records), num_channels)

    def split_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch | None]:
        """One batch per channel, ``None`` where nothing goes."""
        num_channels = self._require_setup()
        if batch.num_rows == 0:
            return [None] * num_channels
        return split_batch_by_channel(batch, self._batch_channels(batch), num_channels)

    def _row_channels(self, records: list) -> np.ndarray:
        raise NotImplementedError

    def _batch_channels(self, batch: pa.RecordBatch) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name


class _SingleChannelPartitioner(StreamPartitioner):
    """Everything to channel 0."""

    def split_rows(self, records: list) -> list[list]:
        num_channels = self._require_setup()
        return [records] + [[] for _ in range(num_channels - 1)]

    def split_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch | None]:
        num_channels = self._require_setup()
        return [batch if batch.num_rows else None] + [None] * (num_channels - 1)


class ForwardPartitioner(_SingleChannelPartitioner):
    """Subtask i feeds only subtask i of the next operator (chaining-compatible)."""

    name = "FORWARD"
    is_pointwise = True

    def setup(self, num_channels: int, subtask_index: int = 0) -> None:
        if num_channels != 1:
            raise ValueError(
                f"FORWARD connects each subtask to exactly one downstream subtask, got "
                f"{num_channels} channels; upstream and downstream parallelism must be equal"
            )
        super().setup(num_channels, subtask_index)


class GlobalPartitioner(_SingleChannelPartitioner):
    """Everything to the first downstream subtask."""

    name = "GLOBAL"


class BroadcastPartitioner(StreamPartitioner):
    """Every channel gets every record (the same list or batch object)."""

    name = "BROADCAST"
    is_broadcast = True

    def split_rows(self, records: list) -> list[list]:
        return [records] * self._require_setup()

    def split_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch | None]:
        num_channels = self._require_setup()
        return [batch if batch.num_rows else None] * num_channels


class _RoundRobinPartitioner(StreamPartitioner):
    """Record i of the stream goes to channel (first + i) % n, continuing across batches.

    Round robin needs no per-record work: channel c's share of a batch is the slice
    ``records[(c - next) % n :: n]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def _first_channel(self, num_channels: int, subtask_index: int) -> int:
        return 0

    def setup(self, num_channels: int, subtask_index: int = 0) -> None:
        super().setup(num_channels, subtask_index)
        self._next = self._first_channel(num_channels, subtask_index)

    def split_rows(self, records: list) -> list[list]:
        n = self._require_setup()
        first = self._next
        self._next = (first + len(records)) % n
        return [records[(channel - first) % n :: n] for channel in range(n)]

    def split_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch | None]:
        n = self._require_setup()
        rows = batch.num_rows
        first = self._next
        self._next = (first + rows) % n
        if rows == 0:
            return [None] * n
        if n == 1:
            return [batch]
        # Row i goes to (first + i) % n; reorder once by channel and slice.
        order = np.concatenate([np.arange((channel - first) % n, rows, n) for channel in range(n)])
        reordered = batch.take(pa.array(order))
        parts: list[pa.RecordBatch | None] = []
        start = 0
        for channel in range(n):
            count = len(range((channel - first) % n, rows, n))
            parts.append(reordered.slice(start, count) if count else None)
            start += count
        return parts


class RebalancePartitioner(_RoundRobinPartitioner):
    """Round robin over all channels, to even out skew.

    Like Flink, each subtask starts at a random channel so that many producers do not all hit
    channel 0 first; the start is seeded by the subtask index, so runs are reproducible.
    """

    name = "REBALANCE"

    def _first_channel(self, num_channels: int, subtask_index: int) -> int:
        return random.Random(subtask_index).randrange(num_channels)


class RescalePartitioner(_RoundRobinPartitioner):
    """Round robin over this subtask's pointwise-connected channels, starting at the first."""

    name = "RESCALE"
    is_pointwise = True


class ShufflePartitioner(StreamPartitioner):
    """A uniformly random channel per record (numpy generator seeded by the subtask index)."""

    name = "SHUFFLE"

    def __init__(self) -> None:
        super().__init__()
        self._rng = np.random.default_rng(0)

    def setup(self, num_channels: int, subtask_index: int = 0) -> None:
        super().setup(num_channels, subtask_index)
        self._rng = np.random.default_rng([subtask_index, 0x5F1F])

    def _row_channels(self, records: list) -> np.ndarray:
        return self._rng.integers(0, self.num_channels, len(records), dtype=np.int32)

    def _batch_channels(self, batch: pa.RecordBatch) -> np.ndarray:
        return self._rng.integers(0, self.num_channels, batch.num_rows, dtype=np.int32)


def _extract_keys(
    key_selector: Callable[[Any], Any],
    records: Sequence[Any],
    fast: Callable[[Any], Any] | None = None,
) -> list:
    """The keys of ``records``; ``fast`` is an equivalent of ``key_selector`` to try first
    (``field_getter``): if it raises, the user's selector runs, for its own error."""
    if fast is not None:
        try:
            return list(map(fast, records))
        except Exception:
            pass
    keys: list = []
    try:
        # extend() keeps the keys produced before a failure, so len(keys) finds the culprit.
        keys.extend(map(key_selector, records))
    except Exception as exc:
        raise KeySelectorError(
            records[len(keys)],
            exc,
            f"key selector {_callable_name(key_selector)} failed on record "
            f"{_short_repr(records[len(keys)])}: {type(exc).__name__}: {exc}",
        ) from exc
    return keys


def _hash_failure(key: Any) -> UnhashableKeyError | None:
    try:
        java_hash(key)
    except UnhashableKeyError as exc:
        return exc
    return None


def _unhashable_key_error(
    selector: str, records: Sequence[Any], keys: Sequence[Any], exc: UnhashableKeyError
) -> KeySelectorError:
    """Find the first record whose key cannot be hashed and describe it."""
    for index, key in enumerate(keys):
        found = _hash_failure(key)
        if found is not None:
            return KeySelectorError(
                records[index],
                found,
                f"key selector {selector} returned a key that cannot be hashed for record "
                f"{_short_repr(records[index])}: {found}",
            )
    return KeySelectorError(records[0], exc, f"key selector {selector} failed: {exc}")


Encode = Callable[[list], tuple[pa.RecordBatch, list[list], bool]]
"""Records -> (one batch of them, the Python values of each of its columns, whether those are
positional: ``columns[j][i] is records[i][j]``)."""

#: Python key types whose Java hash equals that of the string column holding them
_STRING_KEYS = frozenset({str, type(None)})


def _key_column(keys: list, batch: pa.RecordBatch, columns: list[list]) -> pa.Array | None:
    """The column of ``batch`` holding exactly ``keys``, when hashing it gives their hashes.

    The keys must *be* a column's values (identity, one C-level pass; the first element
    rules other columns out), and of types that :func:`~flowrun.state.key_groups.hash_keys`
    hashes through the same Arrow representation: ``str``/None in a string column (it
    hashes them as a string array too; a ``bytes`` value that a string column accepted
    would hash as bytes), exact ``int`` in an integer column (int64 hashes). Else None,
    and the caller hashes the keys themselves.
    """
    for index, values in enumerate(columns):
        if values is not keys and (len(values) != len(keys) or not all(map(is_, keys, values))):
            continue
        column = batch.column(index)
        kind = column.type
        types = list(map(type, keys))  # counting one type is cheaper than a set of them
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            exact = types.count(str) == len(types) or set(types) <= _STRING_KEYS
        else:
            exact = pa.types.is_integer(kind) and types.count(int) == len(types)
        return column if exact else None
    return None


def _getter_index(getter: Callable[[Any], Any] | None) -> int | None:
    """``j`` for ``operator.itemgetter(j)`` with one int ``j`` (from ``field_getter``), else None."""
    if type(getter) is not itemgetter:
        return None
    try:
        index = getter(_IndexProbe())
    except Exception:
        return None
    return index if type(index) is int else None


class _IndexProbe:
    """Subscripting it returns the subscript: what an itemgetter of one item looks up."""

    def __getitem__(self, item: Any) -> Any:
        return item


class KeyGroupStreamPartitioner(StreamPartitioner):
    """keyBy: route each record to the subtask owning its key's key group (Flink's "HASH").

    ``max_parallelism`` is the number of key groups of the downstream operator; it must match
    the one its keyed state uses.
    """

    name = "HASH"

    def __init__(self, key_selector: Callable[[Any], Any], max_parallelism: int) -> None:
        super().__init__()
        check_parallelism(max_parallelism, "max parallelism")
        self.key_selector = key_selector
        self._fast = field_getter(key_selector)  #: lambda r: r[0] as an itemgetter
        #: the field index of a selector ``lambda r: r[j]`` (int j), else None
        self._field = _getter_index(self._fast)
        self.max_parallelism = max_parallelism

    def setup(self, num_channels: int, subtask_index: int = 0) -> None:
        if num_channels > self.max_parallelism:
            raise ValueError(
                f"{num_channels} downstream subtasks exceed the max parallelism "
                f"{self.max_parallelism} (number of key groups)"
            )
        super().setup(num_channels, subtask_index)

    def _channels_for_keys(self, records: Sequence[Any], keys: list) -> np.ndarray:
        try:
            key_groups = assign_key_groups(keys, self.max_parallelism)
        except UnhashableKeyError as exc:
            raise _unhashable_key_error(
                _callable_name(self.key_selector), records, keys, exc
            ) from exc
        return compute_operator_index_for_key_group(
            self.max_parallelism, self.num_channels, key_groups
        )

    def _row_channels(self, records: list) -> np.ndarray:
        return self._channels_for_keys(
            records, _extract_keys(self.key_selector, records, self._fast)
        )

    def split_encoded(self, records: list, encode: Encode) -> list[pa.RecordBatch | None]:
        """Serialise ``records`` once with ``encode`` and split that batch by channel.

        ``encode(records)`` returns one batch whose row i is ``records[i]`` and the Python
        values of its columns. Why: serialising each channel's list apart repeats the
        per-batch work, and gathering the records per channel costs a pass of object
        moves; one ``take`` of the batch does it in C. When the keys are the values of a
        column themselves (the selector returns a field), its Arrow column is hashed
        directly -- the same key groups as hashing the keys, see :func:`_key_column` --
        instead of converting the keys to Arrow a second time. The key selector's errors
        come first, as with :meth:`split_rows`: it runs before ``encode``, except for a
        selector ``r[j]``, whose keys are the positional column ``j`` that ``encode``
        builds anyway (no pass to extract them, none to compare them with the column); if
        ``encode`` raises, the selector runs first then, for its own error.
        """
        num_channels = self._require_setup()
        if not records:
            return [None] * num_channels
        field = self._field
        if field is None:
            keys = _extract_keys(self.key_selector, records, self._fast)
            batch, columns, _ = encode(records)
        else:
            try:
                batch, columns, positional = encode(records)
            except Exception:
                _extract_keys(self.key_selector, records, self._fast)
                raise
            if positional and 0 <= field < len(columns):
                keys = columns[field]
            else:
                keys = _extract_keys(self.key_selector, records, self._fast)
        column = _key_column(keys, batch, columns)
        if column is None:
            channels = self._channels_for_keys(records, keys)
        else:
            channels = compute_operator_index_for_key_group(
                self.max_parallelism,
                num_channels,
                assign_key_groups_arrow(column, self.max_parallelism),
            )
        return split_batch_by_channel(batch, channels, num_channels)

    def _batch_channels(self, batch: pa.RecordBatch) -> np.ndarray:
        # The key selector sees each row as a dict, the row form of an Arrow batch.
        rows = batch.to_pylist()
        return self._channels_for_keys(rows, _extract_keys(self.key_selector, rows, self._fast))


class ArrowKeyGroupPartitioner(StreamPartitioner):
    """keyBy on a column of Arrow batches, hashed column-at-a-time (Flink's "HASH").

    Routes exactly like :class:`KeyGroupStreamPartitioner` with a selector returning that
    column's Python value, so Arrow and row stages can share keyed state.

    ``hash_column`` names an int32 column that, where a batch has it, already holds the key
    column's Java hash codes (a keyed Arrow aggregate's local phase computes them once for the
    shuffle and for the global phase's key table), so the keys are not hashed again here.
    """

    name = "HASH"

    def __init__(self, column: str, max_parallelism: int, hash_column: str | None = None) -> None:
        super().__init__()
        check_parallelism(max_parallelism, "max parallelism")
        self.column = column
        self.max_parallelism = max_parallelism
        self.hash_column = hash_column

    def setup(self, num_channels: int, subtask_index: int = 0) -> None:
        if num_channels > self.max_parallelism:
            raise ValueError(
                f"{num_channels} downstream subtasks exceed the max parallelism "
                f"{self.max_parallelism} (number of key groups)"
            )
        super().setup(num_channels, subtask_index)

    def _key_column(self, batch: pa.RecordBatch) -> pa.Array:
        names = batch.schema.names
        matches = names.count(self.column)
        if matches != 1:
            problem = "is not a column" if matches == 0 else "names several columns"
            raise KeyColumnError(
                f"key column {self.column!r} {problem} of the batch; its columns are: "
                f"{', '.join(repr(name) for name in names) or '(none)'}"
            )
        return batch.column(names.index(self.column))

    def _batch_channels(self, batch: pa.RecordBatch) -> np.ndarray:
        keys = self._key_column(batch)
        if self.hash_column is not None and self.hash_column in batch.schema.names:
            codes = batch.column(self.hash_column).to_numpy(zero_copy_only=False)
            key_groups = murmur_hash(codes) % np.int32(self.max_parallelism)
        else:
            key_groups = assign_key_groups_arrow(keys, self.max_parallelism)
        return compute_operator_index_for_key_group(
            self.max_parallelism, self.num_channels, key_groups
        )

    def _row_channels(self, records: list) -> np.ndarray:
        # Rows (e.g. dicts from RecordBatch.to_pylist) are keyed by the same field name.
        selector = itemgetter(self.column)
        keys = _extract_keys(selector, records)
        try:
            key_groups = assign_key_groups(keys, self.max_parallelism)
        except UnhashableKeyError as exc:
            raise _unhashable_key_error(f"[{self.column!r}]", records, keys, exc) from exc
        return compute_operator_index_for_key_group(
            self.max_parallelism, self.num_channels, key_groups
        )


class CustomPartitionerWrapper(StreamPartitioner):
    """partitionCustom: ``partitioner_fn(key, num_partitions)`` picks each record's channel."""

    name = "CUSTOM"

    def __init__(
        self,
        partitioner_fn: Callable[[Any, int], int],
        key_selector: Callable[[Any], Any],
    ) -> None:
        super().__init__()
        self.partitioner_fn = partitioner_fn
        self.key_selector = key_selector
        self._fast = field_getter(key_selector)

    def _channels_for_keys(self, records: Sequence[Any], keys: list) -> np.ndarray:
        n = self.num_channels
        fn = self.partitioner_fn
        chosen = [fn(key, n) for key in keys]
        channels = np.array(chosen)
        if channels.shape != (len(keys),) or channels.dtype.kind not in "iu":
            bad = next((i for i, c in enumerate(chosen) if type(c) is not int), 0)
            raise TypeError(
                f"custom partitioner {_callable_name(fn)} must return an int channel, returned "
                f"{_short_repr(chosen[bad])} for key {_short_repr(keys[bad])} "
                f"(record {_short_repr(records[bad])})"
            )
        out_of_range = np.flatnonzero((channels < 0) | (channels >= n))
        if len(out_of_range):
            bad = int(out_of_range[0])
            raise ValueError(
                f"custom partitioner {_callable_name(fn)} returned channel {chosen[bad]} for key "
                f"{_short_repr(keys[bad])}, outside 0..{n - 1} (num_partitions={n}); "
                f"record {_short_repr(records[bad])}"
            )
        return channels.astype(np.int32, copy=False)

    def _row_channels(self, records: list) -> np.ndarray:
        return self._channels_for_keys(
            records, _extract_keys(self.key_selector, records, self._fast)
        )

    def _batch_channels(self, batch: pa.RecordBatch) -> np.ndarray:
        rows = batch.to_pylist()
        return self._channels_for_keys(rows, _extract_keys(self.key_selector, rows, self._fast))
