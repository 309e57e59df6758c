"""Dense slot numbers for the distinct keys of Arrow key columns, without a Python object per key.

Why: a keyed Arrow aggregate (``key_by("word").count()``) keeps one running value per key. With
a Python dict every key of every batch becomes a Python object (``to_pylist``) and a dict
lookup -- most of the aggregating subtask's time. :class:`KeySlots` gives each distinct key a
slot ``0, 1, 2, ...`` in order of first appearance, so the values can live in numpy arrays
indexed by slot and a batch is folded in with a few vectorised operations.

How: an open-addressing hash table (linear probing, load <= 1/2) held in two numpy arrays --
the slot stored at each table position and a 32-bit hash of its key -- probed for a whole
column at once: every round gathers the table entries at the current positions and moves the
keys whose position holds another hash one step on. The hash is the key's Java ``hashCode()``
(:func:`~flowrun.state.key_groups.hash_arrow`, the one partitioning uses, vectorised for every
key type a key column may have) through murmur3's finaliser, which spreads it over the table.
Equal hashes do not prove equal keys, so every hash match is checked against the stored key
with Arrow's ``equal`` (nulls equal nulls, NaN equals NaN); a mismatch keeps probing. Keys are
thus the same as for Java's ``equals`` and Arrow's ``value_counts``: -0.0 and 0.0, whose hashes
differ, are two keys. The keys themselves stay in Arrow (a few chunks, merged as they grow,
so appending stays cheap however many keys there are) for that check and for snapshots.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowrun.state.key_groups import hash_arrow

__all__ = ["KeySlots"]

_MIN_TABLE = 1 << 10
_EMPTY = -1
_WINDOW = 8  #: table positions a probe looks at per round after the first
_STEPS = np.arange(1, _WINDOW + 1, dtype=np.uint32)


def _spread(codes: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finaliser: Java string hashes differ mostly in their high bits."""
    h = codes.view(np.uint32).copy()
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _plain(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One non-dictionary array: keys are compared and stored by value."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if isinstance(keys, pa.DictionaryArray):
        keys = keys.dictionary_decode()
    return keys


def _same(a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Element-wise key equality as a bool array: null equals null, NaN equals NaN."""
    equal = pc.fill_null(pc.equal(a, b), False)
    if a.null_count or b.null_count:
        equal = pc.or_(equal, pc.and_(pc.is_null(a), pc.is_null(b)))
    if pa.types.is_floating(a.type):
        equal = pc.or_(equal, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    if isinstance(equal, pa.ChunkedArray):
        equal = equal.combine_chunks()
    return equal.to_numpy(zero_copy_only=False)


class KeySlots:
    """Maps the keys of Arrow columns to dense slots ``0..len(self)-1``, first come first.

    >>> slots = KeySlots()
    >>> slots.find_or_add(pa.array(["to", "be", "or"])).tolist()
    [0, 1, 2]
    >>> slots.find_or_add(pa.array(["not", "to", "be"])).tolist()
    [3, 0, 1]
    >>> slots.keys().to_pylist()
    ['to', 'be', 'or', 'not']
    """

    def __init__(self) -> None:
        self._size = _MIN_TABLE  # table positions, a power of two
        self._slot_at = np.full(self._size, _EMPTY, dtype=np.int32)
        self._hash_at = np.zeros(self._size, dtype=np.uint32)
        self._chunks: list[pa.Array] = []  # the keys in slot order
        self._count = 0
        self.type: pa.DataType | None = None  #: the stored keys' type, from the first keys

    def __len__(self) -> int:
        return self._count

    def keys(self) -> pa.ChunkedArray:
        """Every key, in slot order."""
        return pa.chunked_array(self._chunks, type=self.type or pa.null())

    def take(self, slots: np.ndarray) -> pa.Array:
        """The keys of ``slots`` (an int array), in that order."""
        indices = pa.array(slots)
        if len(self._chunks) == 1:
            return self._chunks[0].take(indices)
        return self.keys().take(indices).combine_chunks()

    def find_or_add(
        self, keys: pa.Array | pa.ChunkedArray, java_hashes: np.ndarray | None = None
    ) -> np.ndarray:
        """Slot of every key (int32); keys not seen before get the next free slots.

        ``keys`` must hold distinct values (as a partial aggregate's keys do): two equal new
        keys in one call would get two slots. Keys of another type than the stored ones are
        cast to it (a restored table's type is inferred from Python values). ``java_hashes``
        may pass the keys' :func:`~flowrun.state.key_groups.hash_arrow` codes if known.
        """
        keys = self._conform(keys)
        hashes = _spread(hash_arrow(keys) if java_hashes is None else java_hashes)
        slots = self._find(keys, hashes)
        new = np.flatnonzero(slots == _EMPTY)
        if len(new):
            slots[new] = self._add(keys.take(pa.array(new)), hashes[new])
        return slots

    def _conform(self, keys: pa.Array | pa.ChunkedArray) -> pa.Array:
        keys = _plain(keys)
        if self.type is None:
            self.type = keys.type
        elif self.type == pa.null() and keys.type != pa.null():
            # only nulls so far (e.g. restored ones): the first typed keys set the type
            self._chunks = [chunk.cast(keys.type) for chunk in self._chunks]
            self.type = keys.type
        if keys.type != self.type:
            try:
                keys = keys.cast(self.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise TypeError(
                    f"key column of type {keys.type} cannot be matched with the keys seen "
                    f"before, of type {self.type}: {exc}"
                ) from exc
        return keys

    def _probe(self, positions: np.ndarray, hashes: np.ndarray | None) -> np.ndarray:
        """Moves each position on (from itself) to the first empty one or, with ``hashes``,
        the first holding that key's hash. A window of positions per key and round, so that
        the rare long probe sequences cost a few rounds of numpy calls, not one per step."""
        mask = np.uint32(self._size - 1)
        slot_at, hash_at = self._slot_at, self._hash_at
        stop = slot_at[positions] == _EMPTY
        if hashes is not None:
            stop |= hash_at[positions] == hashes
        moving = np.flatnonzero(~stop)
        while len(moving):
            window = (positions[moving, None] + _STEPS) & mask
            hit = slot_at[window] == _EMPTY
            if hashes is not None:
                hit |= hash_at[window] == hashes[moving, None]
            first = hit.argmax(axis=1)
            rows = np.arange(len(moving))
            done = hit[rows, first]
            positions[moving] = window[rows, np.where(done, first, _WINDOW - 1)]
            moving = moving[~done]
        return positions

    def _find(self, keys: pa.Array, hashes: np.ndarray) -> np.ndarray:
        positions = self._probe(hashes & np.uint32(self._size - 1), hashes)
        found = self._slot_at[positions]
        todo = np.flatnonzero(found != _EMPTY)  # hash matches, to be checked by value
        mine = keys
        while len(todo):
            stored = self.take(found[todo])
            if len(todo) != len(keys):
                mine = keys.take(pa.array(todo))
            equal = _same(mine, stored)
            if equal.all():
                break
            # Another key with the same hash sits there: these keys probe on.
            todo = todo[~equal]
            step = (positions[todo] + np.uint32(1)) & np.uint32(self._size - 1)
            positions[todo] = self._probe(step, hashes[todo])
            found[todo] = self._slot_at[positions[todo]]
            todo = todo[found[todo] != _EMPTY]
        return found

    def _add(self, new_keys: pa.Array, hashes: np.ndarray) -> np.ndarray:
        first = self._count
        slots = np.arange(first, first + len(new_keys), dtype=np.int32)
        self._count += len(new_keys)
        if 2 * self._count > self._size:
            self._grow()
        self._place(hashes, slots)
        self._append(new_keys)
        return slots

    def _append(self, new_keys: pa.Array) -> None:
        # Merge the newest chunks while the last is at least half the one before: each key is
        # copied O(log n) times in all and there are O(log n) chunks to take from.
        chunks = self._chunks
        chunks.append(new_keys)
        while len(chunks) > 1 and 2 * len(chunks[-1]) >= len(chunks[-2]):
            last = chunks.pop()
            chunks[-1] = pa.concat_arrays([chunks[-1], last])

    def _grow(self) -> None:
        size = self._size
        while 2 * self._count > size:
            size *= 2
        used = self._slot_at != _EMPTY
        slots, hashes = self._slot_at[used], self._hash_at[used]
        self._size = size
        self._slot_at = np.full(size, _EMPTY, dtype=np.int32)
        self._hash_at = np.zeros(size, dtype=np.uint32)
        self._place(hashes, slots)

    def _place(self, hashes: np.ndarray, slots: np.ndarray) -> None:
        """Store new entries: each takes the first empty position from its hash on."""
        slot_at = self._slot_at
        positions = hashes & np.uint32(self._size - 1)
        pending = np.arange(len(slots))
        while len(pending):
            at = self._probe(positions[pending], None)
            # Entries that found the same empty position: one write wins, the others probe on.
            slot_at[at] = slots[pending]
            won = slot_at[at] == slots[pending]
            self._hash_at[at[won]] = hashes[pending[won]]
            positions[pending] = at
            pending = pending[~won]
