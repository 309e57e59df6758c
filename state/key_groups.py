"""Key hashing and key-group assignment, bit for bit as Flink's ``KeyGroupRangeAssignment``.

Every subtask runs in its own OS process, so a key's route and the key group its state lives in
must not depend on anything process-local. Python's ``hash()`` is salted per process
(``PYTHONHASHSEED``), so it is never used here. Instead each key is hashed like the
``hashCode()`` of its natural Java counterpart:

========================  =============================================================
Python key                Java ``hashCode()`` it reproduces
========================  =============================================================
``str``                   ``String.hashCode()`` over UTF-16 code units
``int`` (int64 range)     ``Long.hashCode()``: ``(int) (v ^ (v >>> 32))``
``int`` (beyond int64)    ``BigInteger.hashCode()`` (stable, if rarely useful)
``bool``                  ``Boolean.hashCode()``: 1231 / 1237
``float``                 ``Double.hashCode()`` (NaN canonicalised)
``bytes``/``bytearray``   ``Arrays.hashCode(byte[])`` (signed bytes)
``None``                  0 (``Objects.hashCode(null)``)
``tuple`` (any subclass)  Flink ``TupleN.hashCode()``: ``h = 31 * h + hash(field)``
flowrun ``Row``           as the tuple of its field values
========================  =============================================================

numpy scalars count as their Python counterparts. Anything else raises
:class:`UnhashableKeyError`.

The key group is then ``murmurHash(hashCode) % maxParallelism`` and the operator index
``keyGroup * parallelism // maxParallelism``, exactly as Flink computes them, so a key lands in
the same key group (and hence the same savepoint slot) as Flink would put it.

Hashing sits on the hot path of every keyed shuffle, so :func:`hash_keys` and
:func:`hash_arrow` are vectorised with numpy over whole batches and only fall back to a Python
loop for key kinds that cannot be vectorised (tuples of mixed kinds, non-ASCII strings).

Arrow integer columns of any width hash like ``Long.hashCode`` of the value (not
``Integer.hashCode`` for int8/16/32), and float32 like ``Double.hashCode`` of the widened
value, because a value must hash the same whether it reaches a partitioner as a Python ``int``
or ``float`` in a row or inside an Arrow column; otherwise state written through one API would
be unreachable through the other.
"""

from __future__ import annotations

import math
import pickle
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from flowrun.core.reprs import short_repr as _short_repr

__all__ = [
    "DEFAULT_LOWER_BOUND_MAX_PARALLELISM",
    "UPPER_BOUND_MAX_PARALLELISM",
    "KeyBatch",
    "KeyGroupRange",
    "UnhashableKeyError",
    "assign_key_groups",
    "assign_key_groups_arrow",
    "assign_to_key_group",
    "check_parallelism",
    "compute_default_max_parallelism",
    "compute_key_group_for_key_hash",
    "compute_operator_index_for_key_group",
    "hash_arrow",
    "hash_keys",
    "java_hash",
    "murmur_hash",
    "murmur_hash_scalar",
    "picklable_or_repr",
]

DEFAULT_LOWER_BOUND_MAX_PARALLELISM = 1 << 7
"""Smallest default max parallelism, leaving room to scale up a job that never set one."""

UPPER_BOUND_MAX_PARALLELISM = 1 << 15
"""Largest max parallelism (number of key groups) Flink allows."""

_MASK32 = 0xFFFFFFFF
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_CANONICAL_NAN_BITS = 0x7FF8000000000000
_UTF16_NATIVE = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"


class UnhashableKeyError(TypeError):
    """A key has no stable, process-independent hash, so it cannot be used for routing."""

    def __init__(self, key: Any, message: str | None = None) -> None:
        self.key = key
        super().__init__(
            message
            or f"cannot use a key of type {type(key).__qualname__} for partitioning or keyed "
            f"state: {_short_repr(key)}. Keys must be str, int, float, bool, bytes, None or "
            f"tuples of these (Python's hash() is salted per process and cannot route records "
            f"between subtasks)."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries; an unpicklable key must not mask the error itself.
        return (type(self), (picklable_or_repr(self.key), str(self)))


def picklable_or_repr(value: Any) -> Any:
    """``value`` if it pickles, else its (truncated) repr: for exceptions sent between processes."""
    try:
        pickle.dumps(value)
    except Exception:
        return _short_repr(value)
    return value


def _to_int32(value: int) -> int:
    value &= _MASK32
    return value - (1 << 32) if value & 0x80000000 else value


# ------------------------------------------------------------------------------------------
# Scalar hashes
# ------------------------------------------------------------------------------------------


def _string_hash(value: str) -> int:
    """Java ``String.hashCode()``: polynomial base 31 over UTF-16 code units, as unsigned."""
    if value.isascii():
        units: Any = value.encode("ascii")
    else:
        # surrogatepass: a lone surrogate is a legal Java char, so hash it like Java would.
        units = array("H", value.encode(_UTF16_NATIVE, "surrogatepass"))
    h = 0
    for unit in units:
        h = (31 * h + unit) & _MASK32
    return h


def _long_hash(value: int) -> int:
    """Java ``Long.hashCode()`` of a value in int64 range, as unsigned 32 bits."""
    bits = value & 0xFFFFFFFFFFFFFFFF
    return (bits ^ (bits >> 32)) & _MASK32


def _big_integer_hash(value: int) -> int:
    """Java ``BigInteger.hashCode()``: 31-polynomial over big-endian magnitude words, signed."""
    magnitude = abs(value)
    h = 0
    shift = ((magnitude.bit_length() + 31) // 32 - 1) * 32
    while shift >= 0:
        h = (31 * h + ((magnitude >> shift) & _MASK32)) & _MASK32
        shift -= 32
    return (h * (1 if value > 0 else -1)) & _MASK32


def _double_hash(value: float) -> int:
    """Java ``Double.hashCode()`` with ``doubleToLongBits`` (all NaNs are one NaN)."""
    if math.isnan(value):
        bits = _CANONICAL_NAN_BITS
    else:
        bits = struct.unpack("<q", struct.pack("<d", value))[0] & 0xFFFFFFFFFFFFFFFF
    return (bits ^ (bits >> 32)) & _MASK32


def _bytes_hash(value: bytes | bytearray) -> int:
    """Java ``Arrays.hashCode(byte[])``: starts at 1, bytes are signed."""
    h = 1
    for byte in value:
        h = (31 * h + (byte - 256 if byte > 127 else byte)) & _MASK32
    return h


def _hash_unsigned(key: Any) -> int:
    if key is None:
        return 0
    if isinstance(key, (bool, np.bool_)):
        return 1231 if key else 1237
    if isinstance(key, str):
        return _string_hash(key)
    if isinstance(key, (int, np.integer)):
        value = int(key)
        if _INT64_MIN <= value <= _INT64_MAX:
            return _long_hash(value)
        return _big_integer_hash(value)
    if isinstance(key, (float, np.floating)):
        return _double_hash(float(key))
    if isinstance(key, (bytes, bytearray)):
        return _bytes_hash(key)
    if isinstance(key, tuple) or isinstance(key, _row_types()):
        h = 0
        for field in key:
            h = (31 * h + _hash_unsigned(field)) & _MASK32
        return h
    raise UnhashableKeyError(key)


def _row_types() -> tuple[type, ...]:
    """flowrun's ``Row`` (mutable, so not a tuple subclass), imported lazily.

    A Row key hashes like the tuple of its field values; its RowKind is ignored, so that an
    update and a retraction of the same key reach the same subtask.
    """
    global _ROW_TYPES
    if _ROW_TYPES is None:
        try:
            from flowrun.core.row import Row
        except Exception:  # flowrun.core still importing (cycle) or absent: not cached
            return ()
        _ROW_TYPES = (Row,)
    return _ROW_TYPES


_ROW_TYPES: tuple[type, ...] | None = None


def java_hash(key: Any) -> int:
    """The Java ``hashCode()`` of ``key``'s natural Java counterpart, as a signed int32.

    >>> java_hash("hello"), java_hash(""), java_hash(True), java_hash(None)
    (99162322, 0, 1231, 0)
    """
    return _to_int32(_hash_unsigned(key))


def murmur_hash_scalar(code: int) -> int:
    """Flink's ``MathUtils.murmurHash(int)``: non-negative, ``Integer.MIN_VALUE`` maps to 0."""
    c = (code * 0xCC9E2D51) & _MASK32
    c = ((c << 15) | (c >> 17)) & _MASK32
    c = (c * 0x1B873593) & _MASK32
    c = ((c << 13) | (c >> 19)) & _MASK32
    c = (c * 5 + 0xE6546B64) & _MASK32
    c ^= 4
    c ^= c >> 16
    c = (c * 0x85EBCA6B) & _MASK32
    c ^= c >> 13
    c = (c * 0xC2B2AE35) & _MASK32
    c ^= c >> 16
    signed = _to_int32(c)
    if signed >= 0:
        return signed
    return 0 if signed == -(1 << 31) else -signed


# ------------------------------------------------------------------------------------------
# Vectorised hashes
# ------------------------------------------------------------------------------------------


def murmur_hash(codes: np.ndarray | Sequence[int]) -> np.ndarray:
    """Vectorised :func:`murmur_hash_scalar` over int32 hash codes; returns int32 >= 0."""
    # astype is a C cast: negative int32/int64 codes wrap to their unsigned 32-bit pattern.
    c = np.asarray(codes, dtype=np.int64 if not isinstance(codes, np.ndarray) else None)
    c = c.astype(np.uint32)
    c *= np.uint32(0xCC9E2D51)
    c = (c << np.uint32(15)) | (c >> np.uint32(17))
    c *= np.uint32(0x1B873593)
    c = (c << np.uint32(13)) | (c >> np.uint32(19))
    c *= np.uint32(5)
    c += np.uint32(0xE6546B64)
    c ^= np.uint32(4)
    c ^= c >> np.uint32(16)
    c *= np.uint32(0x85EBCA6B)
    c ^= c >> np.uint32(13)
    c *= np.uint32(0xC2B2AE35)
    c ^= c >> np.uint32(16)
    signed = c.view(np.int32)
    # abs() in int32 leaves MIN_VALUE as MIN_VALUE; Flink maps it to 0.
    result = np.abs(signed)
    result[result < 0] = 0
    return result


# Powers of 31 and of its inverse modulo 2**32 (31 is odd, hence invertible). With them the
# polynomial hash of every row is a prefix-sum difference, with no per-row Python work:
#   sum_{p in row} b[p] * 31**(end-1-p) = 31**end * sum_{p in row} b[p] * inv31**(p+1).
# Rows are processed in groups that start at multiples of _SPAN, so positions stay below
# 2 * _SPAN and the tables stay small (8 MiB) however large the batch.
_SPAN = 1 << 19
_INV31 = pow(31, -1, 1 << 32)
_POW31: np.ndarray | None = None
_INV_POW31: np.ndarray | None = None


def _table_size() -> int:
    return 2 * _SPAN + 1


def _power_tables(size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The tables with at least ``size`` entries (all of them: ``_table_size()``, if None).

    They grow on demand, in powers of two: every subtask process builds its own, and the
    full 8 MiB would cost a subtask that only ever hashes small batches ~60 ms at start-up.
    """
    global _POW31, _INV_POW31
    cap = _table_size()
    size = cap if size is None else min(size, cap)
    if _POW31 is None or _INV_POW31 is None or len(_POW31) < size:
        size = min(max(1 << (size - 1).bit_length(), 4096), cap)
        base = np.full(size, 31, dtype=np.uint32)
        base[0] = 1
        inv = np.full(size, _INV31, dtype=np.uint32)
        inv[0] = 1
        _POW31 = np.cumprod(base, dtype=np.uint32)
        _INV_POW31 = np.cumprod(inv, dtype=np.uint32)
    return _POW31, _INV_POW31


def _pow31(exponents: np.ndarray) -> np.ndarray:
    """31**e mod 2**32 for an int64 array of non-negative exponents."""
    pow31, _ = _power_tables(int(exponents.max()) + 1 if len(exponents) else 1)
    small = exponents < len(pow31)
    if small.all():
        return pow31[exponents]
    out = np.empty(len(exponents), dtype=np.uint32)
    out[small] = pow31[exponents[small]]
    out[~small] = [pow(31, int(e), 1 << 32) for e in exponents[~small]]
    return out


def _poly31(offsets: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Per row, sum of units[p] * 31**(end-1-p) mod 2**32: Java's ``h = 31 * h + unit`` loop.

    ``offsets`` (int64, rows + 1 entries, starting at 0) delimit the rows in ``units`` (uint8
    code units, or int8 for Java's signed bytes), which are widened to uint32 group by group.
    """
    rows = len(offsets) - 1
    out = np.zeros(max(rows, 0), dtype=np.uint32)
    if rows <= 0:
        return out
    # A group never spans more units than the batch holds: small batches, small tables.
    pow31, inv_pow31 = _power_tables(int(offsets[-1]) + 1)
    starts = offsets[:-1]
    ends = offsets[1:]
    marks = np.arange(0, int(offsets[-1]) + _SPAN, _SPAN)
    bounds = np.unique(np.append(np.searchsorted(starts, marks, side="left"), rows))
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        base = int(starts[lo])
        span = int(ends[hi - 1]) - base
        if span >= _table_size():
            # Only reachable with rows longer than _SPAN units: hash this group row by row.
            for i in range(lo, hi):
                out[i] = _poly31_single(units[int(starts[i]) : int(ends[i])])
            continue
        rel_start = starts[lo:hi] - base
        rel_end = ends[lo:hi] - base
        # One pass: the units widen to uint32 inside the multiply (int8 wraps as astype does).
        weighted = np.multiply(
            units[base : base + span], inv_pow31[1 : span + 1], dtype=np.uint32, casting="unsafe"
        )
        prefix = np.zeros(span + 1, dtype=np.uint32)
        np.cumsum(weighted, dtype=np.uint32, out=prefix[1:])
        out[lo:hi] = pow31[rel_end] * (prefix[rel_end] - prefix[rel_start])
    return out


def _poly31_single(units: np.ndarray) -> int:
    """:func:`_poly31` of one long row, Horner-style over table-sized chunks."""
    pow31, _ = _power_tables()
    step = len(pow31) - 1
    h = 0
    for lo in range(0, len(units), step):
        chunk = units[lo : lo + step].astype(np.uint32)
        weights = pow31[: len(chunk)][::-1]
        chunk_hash = int(np.sum(chunk * weights, dtype=np.uint32))
        h = (h * pow(31, len(chunk), 1 << 32) + chunk_hash) & _MASK32
    return h


def _string_like_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (int64, rebased to start at 0) and the bytes they delimit, zero-copy.

    Honours the array's slice offset, so a slice of a large batch touches only its own bytes.
    """
    kind = array.type
    if pa.types.is_fixed_size_binary(kind):
        width = kind.byte_width
        offsets = np.arange(len(array) + 1, dtype=np.int64) * width
        first = array.offset * width
    else:
        wide = pa.types.is_large_string(kind) or pa.types.is_large_binary(kind)
        raw = np.frombuffer(array.buffers()[1], dtype=np.int64 if wide else np.int32)
        offsets = raw[array.offset : array.offset + len(array) + 1].astype(np.int64)
        first = int(offsets[0])
        offsets -= first
    data_buffer = array.buffers()[-1]
    if data_buffer is None or len(offsets) == 1 or offsets[-1] == 0:
        return offsets, np.zeros(0, dtype=np.uint8)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[first : first + int(offsets[-1])]
    return offsets, data


def _hash_utf8(array: pa.Array) -> np.ndarray:
    offsets, data = _string_like_buffers(array)
    hashes = _poly31(offsets, data)
    # Java hashes UTF-16 code units, which equal UTF-8 bytes only for ASCII. Find the rows
    # holding any byte >= 0x80 in one vectorised pass and redo just those in Python.
    high = np.flatnonzero(data >= 0x80)
    if len(high):
        rows = np.unique(np.searchsorted(offsets, high, side="right") - 1)
        for row in rows.tolist():
            raw = data[int(offsets[row]) : int(offsets[row + 1])].tobytes()
            # "replace" only matters for the garbage a null slot may hold; it is zeroed later.
            hashes[row] = _string_hash(raw.decode("utf-8", errors="replace"))
    return hashes


def _hash_binary(array: pa.Array) -> np.ndarray:
    offsets, data = _string_like_buffers(array)
    return _poly31(offsets, data.view(np.int8)) + _pow31(offsets[1:] - offsets[:-1])


def _hash_int64_values(values: np.ndarray) -> np.ndarray:
    bits = values.astype(np.int64, copy=False).view(np.uint64)
    return (bits ^ (bits >> np.uint64(32))).astype(np.uint32)


def _hash_float64_values(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64, copy=False)
    bits = values.view(np.uint64).copy()
    bits[np.isnan(values)] = np.uint64(_CANONICAL_NAN_BITS)
    return (bits ^ (bits >> np.uint64(32))).astype(np.uint32)


def _unsigned_hash_arrow(array: pa.Array) -> np.ndarray:
    """Per-element Java hash of one (non-chunked) Arrow array as uint32; nulls give 0."""
    kind = array.type
    if isinstance(array, pa.DictionaryArray):
        dictionary_hashes = _unsigned_hash_arrow(array.dictionary)
        indices = array.indices.fill_null(0).to_numpy(zero_copy_only=False)
        hashes = (
            dictionary_hashes[indices]
            if len(dictionary_hashes)
            else np.zeros(len(array), dtype=np.uint32)
        )
    elif pa.types.is_null(kind):
        return np.zeros(len(array), dtype=np.uint32)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        hashes = _hash_utf8(array)
    elif pa.types.is_string_view(kind):
        return _unsigned_hash_arrow(array.cast(pa.large_string()))
    elif pa.types.is_binary_view(kind):
        return _unsigned_hash_arrow(array.cast(pa.large_binary()))
    elif (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    ):
        hashes = _hash_binary(array)
    elif pa.types.is_boolean(kind):
        values = array.fill_null(False).to_numpy(zero_copy_only=False)
        hashes = np.where(values, np.uint32(1231), np.uint32(1237)).astype(np.uint32)
    elif pa.types.is_integer(kind):
        values = array.fill_null(0).to_numpy(zero_copy_only=False)
        hashes = _hash_int64_values(values)
        if kind == pa.uint64():
            big = np.flatnonzero(values > np.uint64(_INT64_MAX))
            for i in big.tolist():
                hashes[i] = _big_integer_hash(int(values[i]))
    elif pa.types.is_floating(kind):
        hashes = _hash_float64_values(array.fill_null(0.0).to_numpy(zero_copy_only=False))
    else:
        raise UnhashableKeyError(
            array,
            f"cannot hash an Arrow column of type {kind} for partitioning or keyed state: key "
            f"columns must be string, binary, integer, floating point, bool, null or dictionary "
            f"arrays of these.",
        )
    if array.null_count:
        hashes[~array.is_valid().to_numpy(zero_copy_only=False)] = 0
    return hashes


# Dictionary-encoding a long string column with repeated keys and hashing only the distinct
# values is faster than hashing every row (measured on 1M Zipf-distributed words, ~45k of them
# distinct: 22 ms vs 27 ms). A sample of the head decides, so columns of mostly distinct values
# skip the extra pass.
_DICTIONARY_MIN_ROWS = 1 << 14
_DICTIONARY_SAMPLE = 1 << 12
_DICTIONARY_MAX_DISTINCT_RATIO = 0.5


def _prefers_dictionary(array: pa.Array) -> bool:
    if len(array) < _DICTIONARY_MIN_ROWS:
        return False
    sample = array.slice(0, _DICTIONARY_SAMPLE)
    import pyarrow.compute as pc  # not at module level: the JobManager never needs it

    distinct = len(pc.unique(sample))
    return distinct <= _DICTIONARY_MAX_DISTINCT_RATIO * len(sample)


def _unsigned_hash_column(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(array, pa.ChunkedArray):
        parts = [_unsigned_hash_column(chunk) for chunk in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
    kind = array.type
    if (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and _prefers_dictionary(array):
        array = array.dictionary_encode()
    return _unsigned_hash_arrow(array)


def hash_arrow(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Java hash codes (int32) of every element of an Arrow array; nulls hash to 0.

    Supported: (large_)string, string_view, (large_/fixed_size_)binary, bool, all integer and
    floating types, null and dictionary arrays of those. Other types raise
    :class:`UnhashableKeyError`.
    """
    return _unsigned_hash_column(array).view(np.int32)


def _hash_python_loop(keys: Sequence[Any]) -> np.ndarray:
    return np.fromiter(map(_hash_unsigned, keys), dtype=np.uint32, count=len(keys))


def _hash_keys_unsigned(keys: Sequence[Any]) -> np.ndarray:
    if len(keys) == 0:
        return np.zeros(0, dtype=np.uint32)
    kinds = set(map(type, keys))
    if all(issubclass(k, str) or k is type(None) for k in kinds):
        try:
            strings = pa.array(keys, type=pa.string())  # chunks itself past 2 GiB
        except (pa.ArrowException, UnicodeError, ValueError, TypeError):
            pass  # e.g. lone surrogates, which UTF-8 cannot hold; the loop handles them
        else:
            return _unsigned_hash_column(strings)
    elif kinds == {int}:
        try:
            values = np.array(keys, dtype=np.int64)
        except OverflowError:
            pass  # some key beyond int64: BigInteger semantics in the loop
        else:
            return _hash_int64_values(values)
    elif kinds == {bool}:
        return np.where(np.array(keys, dtype=bool), np.uint32(1231), np.uint32(1237))
    elif kinds == {float}:
        return _hash_float64_values(np.array(keys, dtype=np.float64))
    elif all(issubclass(k, tuple) or issubclass(k, _row_types()) for k in kinds):
        if not all(issubclass(k, tuple) for k in kinds):
            keys = list(map(tuple, keys))
        widths = set(map(len, keys))
        if len(widths) == 1:
            # Hash column by column so each column gets its own fast path.
            h = np.zeros(len(keys), dtype=np.uint32)
            for column in zip(*keys, strict=True):
                h *= np.uint32(31)
                h += _hash_keys_unsigned(column)
            return h
    return _hash_python_loop(keys)


def hash_keys(keys: Sequence[Any]) -> np.ndarray:
    """Java hash codes (int32) of a batch of Python keys, vectorised for common key kinds.

    All-``str`` (``None`` allowed), all-``int``, all-``float`` and same-width tuple batches are
    hashed with numpy/Arrow; anything else goes through :func:`java_hash` key by key.
    Raises :class:`UnhashableKeyError` for keys that have no stable hash.
    """
    return _hash_keys_unsigned(keys).view(np.int32)


# ------------------------------------------------------------------------------------------
# Key groups
# ------------------------------------------------------------------------------------------


def check_parallelism(parallelism: int, what: str = "parallelism") -> None:
    """Flink's ``checkParallelismPreconditions``: 0 < parallelism <= 32768."""
    if not 0 < parallelism <= UPPER_BOUND_MAX_PARALLELISM:
        raise ValueError(
            f"Operator {what} not within bounds (1..{UPPER_BOUND_MAX_PARALLELISM}): {parallelism}"
        )


def _round_up_to_power_of_two(value: int) -> int:
    return 1 << max(0, (value - 1).bit_length())


def compute_default_max_parallelism(parallelism: int) -> int:
    """Default number of key groups for an operator: room to scale up 1.5x, at least 128."""
    check_parallelism(parallelism)
    return min(
        max(
            _round_up_to_power_of_two(parallelism + parallelism // 2),
            DEFAULT_LOWER_BOUND_MAX_PARALLELISM,
        ),
        UPPER_BOUND_MAX_PARALLELISM,
    )


def compute_key_group_for_key_hash(key_hash: int, max_parallelism: int) -> int:
    """Key group of a Java hash code: ``murmurHash(hash) % maxParallelism``."""
    return murmur_hash_scalar(key_hash) % max_parallelism


def assign_to_key_group(key: Any, max_parallelism: int) -> int:
    """Key group (0 <= kg < max_parallelism) of one key."""
    return compute_key_group_for_key_hash(java_hash(key), max_parallelism)


def assign_key_groups(keys: Sequence[Any], max_parallelism: int) -> np.ndarray:
    """Key groups (int32 array) of a batch of Python keys."""
    check_parallelism(max_parallelism, "max parallelism")
    return murmur_hash(hash_keys(keys)) % np.int32(max_parallelism)


class KeyBatch:
    """The keys of one input batch, classified once, with their key groups.

    Why: the keyed runtime hashes a batch's keys and then has its state backend check and
    encode them; both need to know whether the keys are plain ints, and the backend needs
    the key groups' range. Working that out once per batch, vectorised, keeps it out of
    the per-record path. ``ints`` is the keys as an int64 array when every key is an exact
    ``int`` (no bool, no numpy scalar) within int64, else None; ``groups`` the key groups
    (int32 array) and ``group_list`` the same as Python ints. ``floats``: some key is a
    ``float`` (a NaN key needs care in a dict-based backend).
    """

    __slots__ = ("keys", "ints", "floats", "groups", "group_list")

    def __init__(self, keys: list, max_parallelism: int) -> None:
        check_parallelism(max_parallelism, "max parallelism")
        self.keys = keys
        ints = None
        kinds = set(map(type, keys))
        self.floats = any(issubclass(kind, float) for kind in kinds)
        if keys and kinds == _JUST_INT:
            try:
                ints = np.array(keys, dtype=np.int64)
            except OverflowError:
                pass  # some key beyond int64: hashed as a BigInteger by hash_keys
        self.ints = ints
        hashes = _hash_keys_unsigned(keys) if ints is None else _hash_int64_values(ints)
        self.groups = murmur_hash(hashes.view(np.int32)) % np.int32(max_parallelism)
        self.group_list: list[int] = self.groups.tolist()


_JUST_INT = {int}


def assign_key_groups_arrow(array: pa.Array | pa.ChunkedArray, max_parallelism: int) -> np.ndarray:
    """Key groups (int32 array) of every element of an Arrow array."""
    check_parallelism(max_parallelism, "max parallelism")
    return murmur_hash(hash_arrow(array)) % np.int32(max_parallelism)


def compute_operator_index_for_key_group(
    max_parallelism: int, parallelism: int, key_group: int | np.ndarray
) -> int | np.ndarray:
    """Subtask owning a key group: ``keyGroup * parallelism // maxParallelism``.

    Accepts a scalar key group (returns int) or a numpy array of them (returns int32 array).
    """
    if isinstance(key_group, np.ndarray):
        wide = key_group.astype(np.int64) * parallelism
        return (wide // max_parallelism).astype(np.int32)
    return int(key_group) * parallelism // max_parallelism


class KeyGroupRange:
    """Inclusive range ``[start, end]`` of key groups, as Flink's ``KeyGroupRange``.

    ``end == start - 1`` is the empty range. Ranges are value objects: equal when their bounds
    are, hashable, and iterable over their key groups.
    """

    __slots__ = ("start", "end")

    def __init__(self, start: int, end: int) -> None:
        if start < 0:
            raise ValueError(f"key group range start must be >= 0, got {start}")
        if end < start - 1:
            raise ValueError(f"key group range end {end} is before start {start} - 1")
        self.start = start
        self.end = end

    @classmethod
    def empty(cls) -> KeyGroupRange:
        """The range with no key groups (Flink's ``EMPTY_KEY_GROUP_RANGE``)."""
        return cls(0, -1)

    @classmethod
    def of_operator(
        cls, max_parallelism: int, parallelism: int, operator_index: int
    ) -> KeyGroupRange:
        """Key groups owned by subtask ``operator_index`` (``computeKeyGroupRangeForOperatorIndex``).

        The ranges of subtasks 0..parallelism-1 partition 0..max_parallelism-1 and agree with
        :func:`compute_operator_index_for_key_group`.
        """
        check_parallelism(parallelism)
        check_parallelism(max_parallelism, "max parallelism")
        if max_parallelism < parallelism:
            raise ValueError(
                f"Maximum parallelism {max_parallelism} must not be smaller than "
                f"parallelism {parallelism}."
            )
        if not 0 <= operator_index < parallelism:
            raise ValueError(
                f"operator index {operator_index} out of range for parallelism {parallelism}"
            )
        start = (operator_index * max_parallelism + parallelism - 1) // parallelism
        end = ((operator_index + 1) * max_parallelism - 1) // parallelism
        return cls(start, end)

    def contains(self, key_group: int) -> bool:
        """Whether ``key_group`` belongs to this range."""
        return self.start <= key_group <= self.end

    def __contains__(self, key_group: object) -> bool:
        return isinstance(key_group, (int, np.integer)) and self.contains(int(key_group))

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end + 1))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyGroupRange):
            return NotImplemented
        return self.start == other.start and self.end == other.end

    def __hash__(self) -> int:
        return self.start * 31 + self.end

    def __repr__(self) -> str:
        return f"KeyGroupRange(start={self.start}, end={self.end})"
