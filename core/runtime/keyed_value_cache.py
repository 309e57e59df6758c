"""A bounded write-back cache of one ValueState, for built-in keyed aggregations.

Why: a rolling reduce or sum reads and writes the running value of every key a batch
touches. Going to the keyed backend for each batch costs a lookup and a write per distinct
key -- on LMDB a B-tree search, a decode, an encode and a put, several times the cost of the
user's reduce function -- and on skewed streams (word counts are Zipf-distributed) the hot
keys are touched by almost every batch. The cache keeps the running values of recently used
keys as Python objects in one dict, which the operator's per-record loop uses directly:

* a key is read from the backend once, when it enters the cache (its key group is computed
  then, vectorised, for the keys entering only) -- unless the cache is *complete*: it holds
  every key the backend has a value for, so a key it lacks has no value and nothing is read.
  A cache starts complete when its operator's state was not restored (the backend is new
  and empty) and stays so until the bound empties it; until then, which on a job that
  fits the bound is the whole run, a batch costs no pass over its keys to find the new
  ones (a set of a 32k-word batch and its difference with the cache: ~5% of a word-count
  reducer);
* values are written back when a checkpoint or savepoint is taken (the operator's
  ``prepare_snapshot``, which runs before its keyed backend is snapshotted), at the end of
  the input, and when the cache outgrows its bound (then it is also emptied).

So every snapshot holds exactly the state it held without the cache (restores at any
parallelism and on either backend are unchanged), memory stays bounded, and state beyond the
bound lives in the backend (on disk with LMDB). Between snapshots the backend lags the cache;
only the operator that owns the state reads it, so nothing can observe that.

A Python dict can stand for keyed state only where Python's equality is the state's key
equality. It is for ``str``, ``bytes``, ``int``, None and tuples of these (exact types);
it is not for floats (``-0.0 == 0.0``, NaN), bools (``True == 1``) and others, which are
different state keys that a dict would merge. :meth:`KeyedValueCache.values_for` therefore
checks the types of a batch's keys (``dict_safe_keys``: C-level passes) and refuses batches
with any other key; the operator then runs that batch per record against the backend, after
a write-back.
"""

from __future__ import annotations

from typing import Any

from flowrun.state.key_groups import assign_key_groups, assign_to_key_group
from flowrun.state.serializers import dict_safe_keys

__all__ = ["CACHE_CAPACITY", "KeyedValueCache"]

CACHE_CAPACITY = 1 << 16
"""Keys whose running values the cache holds at most (beyond it: write back and empty)."""

_FEW_KEYS = 16
"""Up to this many keys, key groups are computed key by key (see ``_groups``)."""


class KeyedValueCache:
    """Running values of one ValueState of one operator subtask (see the module doc)."""

    def __init__(
        self,
        backend: Any,
        state: Any,
        max_parallelism: int,
        capacity: int | None = None,
        complete: bool = False,
    ) -> None:
        self.backend = backend
        self.state = state
        self.max_parallelism = max_parallelism
        self.capacity = CACHE_CAPACITY if capacity is None else capacity
        #: key -> running value; keys the backend has no value for are absent until written
        self.values: dict = {}
        #: Whether every key the backend has a value for is in ``values`` (pass True only
        #: for a state the backend holds nothing of, e.g. not restored). Write-backs keep
        #: it; emptying the cache ends it.
        self.complete = complete
        #: Whether batches record the keys they change. Until a write-back keeps the cache
        #: (a snapshot's), every cached key was changed since the cache was last empty: a
        #: key enters it only for a batch that stores its new value. Then :meth:`flush`
        #: writes all of them and no batch pays for a set of its keys.
        self._tracking = False
        self._dirty: set = set()
        self._batch: set = set()

    def values_for(self, keys: list) -> dict | None:
        """The cache's dict, holding the value of every key of ``keys`` that has one.

        The caller stores each key's new value in it and then calls :meth:`batch_done`.
        None: some key cannot live in a dict; the cache has been written back and emptied,
        so the caller may run the batch against the backend itself.
        Raises what the backend raises for a key outside its key-group range, and
        :class:`~flowrun.state.key_groups.UnhashableKeyError` for a key without a hash.
        """
        if not dict_safe_keys(keys):
            self._empty()
            return None
        values = self.values
        if self.complete:  # a key not in the dict has no value anywhere: nothing to read
            if self._tracking:
                self._batch = set(keys)
            return values
        distinct = set(keys)
        missing = distinct.difference(values)
        if missing:
            self._load(list(missing))
        if self._tracking:
            self._batch = distinct
        return values

    def check_keys(self, keys: list) -> None:
        """Raise what reading ``keys`` from the backend would raise (a key of another
        subtask's key groups, a key without a hash), without reading them.

        For a complete cache, which reads nothing for the keys entering it.
        """
        groups = self._groups(keys)
        key_groups = self.backend.key_group_range
        if min(groups) < key_groups.start or max(groups) > key_groups.end:
            bad = next(
                i for i, g in enumerate(groups) if not key_groups.start <= g <= key_groups.end
            )
            self.backend.read_values(self.state, {keys[bad]: groups[bad]})  # raises its error
            raise ValueError(f"key {keys[bad]!r} is outside this subtask's key groups")

    def _groups(self, keys: list) -> list[int]:
        """Key groups of ``keys``: key by key for a few (the vectorised pass costs ~65 us
        whatever the number of keys, one ~4 us), vectorised beyond."""
        if len(keys) <= _FEW_KEYS:
            return [assign_to_key_group(key, self.max_parallelism) for key in keys]
        return assign_key_groups(keys, self.max_parallelism).tolist()

    def batch_done(self) -> None:
        """The batch's new values are stored: mark its keys for write-back, keep the bound."""
        if self._tracking:
            self._dirty |= self._batch
            self._batch = set()
        if len(self.values) > self.capacity:
            self._empty()

    def _empty(self) -> None:
        """Write back and start over with an empty cache (whose values are all new then).

        The backend now holds values the cache does not: it is no longer complete.
        """
        self.flush()
        self.values.clear()
        self._tracking = False
        self.complete = False

    def _load(self, keys: list) -> None:
        groups = self._groups(keys)
        backend = self.backend
        backend.begin_batch()
        try:
            self.values.update(
                backend.read_values(self.state, dict(zip(keys, groups, strict=True)))
            )
        finally:
            backend.end_batch()

    def flush(self) -> None:
        """Write every value changed since the last write-back into the backend.

        The cache is kept; from now on batches record the keys they change.
        """
        keys = list(self._dirty if self._tracking else self.values)
        if keys:
            groups = self._groups(keys)
            values = self.values
            backend = self.backend
            backend.begin_batch()
            try:
                backend.write_values(
                    self.state,
                    {key: values[key] for key in keys},
                    dict(zip(keys, groups, strict=True)),
                )
            finally:
                backend.end_batch()
        self._dirty = set()
        self._tracking = True
