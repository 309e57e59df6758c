"""Python records <-> Arrow record batches: how records cross process boundaries.

Every subtask is its own process, so every record that leaves an operator is serialized
into an Arrow record batch in shared memory and deserialized on the other side. This is the
hot path, so both directions work a column at a time (``pa.array(list, type=...)`` one way,
``to_pylist()`` + ``zip`` the other) and never call Python code per record unless the type
demands it (big ints/decimals, nested rows, instants).

Two encodings, chosen by the declared type (:func:`serializer_for`):

* **Pickled** (no type, or ``Types.PICKLED_BYTE_ARRAY()``): one binary column ``_pickled``;
  each row holds ``pickle.dumps(list_of_records, protocol=5)`` for a whole chunk of records,
  which costs about a third of pickling records one by one. Plain pickle is tried first
  (records of classes from the job's module pickle by reference; the module is importable
  in the subtask), cloudpickle only when that fails (lambdas, local classes).
* **Typed** (any other type): a top-level ``TUPLE``/``ROW`` becomes one column per field
  (``f0, f1, ...``, or the declared names of ``ROW_NAMED``), anything else one column
  ``f0``. Rows also get an ``int8`` column ``_row_kind`` so :class:`RowKind` survives the
  trip (nested rows come back as INSERT). Arrow types are those of
  :meth:`TypeInformation.to_arrow_type`.

A record that does not fit its declared type raises :class:`RecordTypeError` naming the
record, its position in the list, the field and the expected type. The conversion is tried
for the whole column first; only when that fails are the records scanned one by one to find
the culprit. Nullability follows Flink: the fields of a ``Row`` may be None; primitives
(``BYTE SHORT INT LONG FLOAT DOUBLE BOOLEAN CHAR``), tuples, rows, lists, maps and arrays may
not be None where they stand on their own (a record, a tuple field, a list element);
``STRING``, ``BIG_INT``, ``BIG_DEC``, the SQL time types and ``INSTANT`` may. Elements of
``BASIC_ARRAY``/``OBJECT_ARRAY`` and map values may be None; map keys may not.

``to_batches(records, max_bytes)`` cuts its output so that every batch's IPC message plus
the schema message fits in ``max_bytes`` (zero-copy ``batch.slice`` for typed batches); only
a batch holding a single record that is larger on its own exceeds it, and the network layer
fragments those. ``from_batch`` returns fresh Python objects that do not reference the
batch's memory, so the shared buffer can be recycled as soon as it returns.

Example::

    >>> from flowrun.core.records import serializer_for
    >>> from flowrun.core.typeinfo import Types
    >>> ser = serializer_for(Types.TUPLE([Types.STRING(), Types.LONG()]))
    >>> batches = ser.to_batches([("a", 1), ("b", 2)], max_bytes=1 << 20)
    >>> ser.schema.names, ser.from_batch(batches[0])
    (['f0', 'f1'], [('a', 1), ('b', 2)])
    >>> serializer_for(None).from_batch(serializer_for(None).to_batches([{"x": 1}], 4096)[0])
    [{'x': 1}]
"""

from __future__ import annotations

import functools
import gc
import operator
import pickle
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowrun.core.reprs import short_repr as _short_repr
from flowrun.core.row import Row, RowKind
from flowrun.core.typeinfo import (
    _NULLABLE_BASIC,
    BasicArrayTypeInfo,
    BasicType,
    BasicTypeInfo,
    ExternalTypeInfo,
    ListTypeInfo,
    MapTypeInfo,
    ObjectArrayTypeInfo,
    PickledBytesTypeInfo,
    PrimitiveArrayTypeInfo,
    RowTypeInfo,
    TupleTypeInfo,
    TypeInformation,
    normalize_type,
)

__all__ = ["RecordSerializer", "RecordTypeError", "serializer_for", "validator_for"]

PICKLED_COLUMN = "_pickled"
ROW_KIND_COLUMN = "_row_kind"

# Upper bound for one pickled chunk (one row of the pickled column). The pickler memoizes
# every container it writes, and a memo of 100k+ entries slows it down: measured on 1M
# ('word', i) tuples, 64 KiB chunks pickle at ~70 ns/record, 1 MiB chunks at ~115.
_PICKLE_CHUNK_BYTES = 64 * 1024
_PICKLE_SAMPLE = 64
_NONE_TYPE = type(None)
_KINDS = tuple(RowKind)
_INSERT = RowKind.INSERT
_get_values = operator.attrgetter("_values")
_get_fields = operator.attrgetter("_fields")
_get_kind = operator.attrgetter("_row_kind")


def _gc_paused(method: Callable) -> Callable:
    """Run ``method`` with the cyclic GC paused.

    Decoding allocates a container per record; with the collector running, each batch of
    700 new objects triggers a young collection, and the growing heap makes older
    collections scan everything again: building 1M Rows costs ~870 ns each with the GC on
    and ~240 ns with it paused. The objects are live (nothing for the GC to find), so
    pausing only defers the collector's bookkeeping to after the batch.
    """

    @functools.wraps(method)
    def wrapper(*args: Any) -> Any:
        if not gc.isenabled():
            return method(*args)
        gc.disable()
        try:
            return method(*args)
        finally:
            gc.enable()

    return wrapper


class RecordTypeError(TypeError):
    """A record does not match the type declared for its stream.

    Attributes: ``record`` (the offending record), ``index`` (its position in the list given
    to ``to_batches``), ``field`` (the field name, or None when the record as a whole is
    wrong), ``expected`` (the TypeInformation of the record or field) and ``cause`` (the
    underlying Arrow or Python exception).
    """

    def __init__(
        self,
        record: Any,
        index: int | None,
        field: str | None,
        expected: TypeInformation | None,
        cause: BaseException | str | None,
    ) -> None:
        self.record = record
        self.index = index
        self.field = field
        self.expected = expected
        self.cause = cause
        where = f" in field {field!r}" if field is not None else ""
        reason = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else cause
        super().__init__(
            f"record #{index} {_short_repr(record)} does not match the declared type{where}: "
            f"expected {expected!r}; {reason}"
        )

    def __reduce__(self) -> tuple:
        # Errors travel to the JobManager pickled; the record or cause may not pickle.
        return (
            _restore_record_type_error,
            (_short_repr(self.record), self.index, self.field, self.expected, str(self)),
        )


def _restore_record_type_error(
    record_repr: str, index: Any, field: Any, expected: Any, message: str
) -> RecordTypeError:
    err = RecordTypeError.__new__(RecordTypeError)
    TypeError.__init__(err, message)
    err.record, err.index, err.field, err.expected, err.cause = (
        record_repr,
        index,
        field,
        expected,
        message,
    )
    return err


class _Mismatch(ValueError):
    """A value that Arrow would accept but the declared type forbids (None, wrong kind)."""


# --------------------------------------------------------------------------------------
# Column codecs: one per TypeInformation node; encode a list of values to an Arrow array
# (checking everything below the array itself; the caller checks the array's own nulls)
# and decode an array back to a list of Python values.
# --------------------------------------------------------------------------------------


_STRING = pa.string()


class _Codec:
    arrow_type: pa.DataType
    plain_read = True  # arr.to_pylist(maps_as_pydicts="strict") yields the Python values

    def encode(self, values: list) -> pa.Array:
        return pa.array(values, type=self.arrow_type)

    def decode(self, arr: pa.Array) -> list:
        return arr.to_pylist()


class _PlainCodec(_Codec):
    """Types whose typed ``pa.array`` conversion is already strict: float, bool, dates."""

    def __init__(self, arrow_type: pa.DataType) -> None:
        self.arrow_type = arrow_type


class _IntCodec(_Codec):
    """Integers. ``pa.array(floats, type=int32)`` silently truncates 1.5 to 1, so let Arrow
    infer the type (int64 only if every value is an int) and cast with overflow checks."""

    def __init__(self, arrow_type: pa.DataType) -> None:
        self.arrow_type = arrow_type

    def encode(self, values: list) -> pa.Array:
        arr = pa.array(values)
        if arr.type == self.arrow_type:
            return arr
        if pa.types.is_integer(arr.type) or pa.types.is_null(arr.type):
            return arr.cast(self.arrow_type)
        raise _Mismatch(f"expected int values, got values Arrow reads as {arr.type}")


class _StrCodec(_Codec):
    """STRING: ``str`` only. Given the type, ``pa.array`` would take ``bytes`` too and
    decode them as UTF-8, where PyFlink's string coder fails; so Arrow infers the type
    (at the same cost per value) and anything but strings and None is refused."""

    arrow_type = pa.string()

    def encode(self, values: list) -> pa.Array:
        arr = pa.array(values)
        if arr.type == _STRING:
            return arr
        if pa.types.is_null(arr.type):
            return arr.cast(_STRING)
        got = "bytes" if pa.types.is_binary(arr.type) else f"values Arrow reads as {arr.type}"
        raise _Mismatch(f"expected str, got {got}")


class _CharCodec(_StrCodec):
    def encode(self, values: list) -> pa.Array:
        arr = super().encode(values)
        if len(arr) and pc.any(pc.not_equal(pc.utf8_length(arr), 1)).as_py():
            raise _Mismatch("CHAR values must be strings of exactly one character")
        return arr


class _BytesCodec(_Codec):
    """PRIMITIVE_ARRAY(BYTE): ``bytes``. Arrow would accept (and encode) str; we do not."""

    arrow_type = pa.binary()

    def encode(self, values: list) -> pa.Array:
        for t in set(map(type, values)):
            if not (t is _NONE_TYPE or issubclass(t, (bytes, bytearray, memoryview))):
                raise _Mismatch(f"expected bytes, got {t.__name__}")
        return pa.array(values, type=pa.binary())


class _ConvertCodec(_Codec):
    """Types that need a Python conversion per value (big numbers, instants, pickles)."""

    plain_read = False

    def __init__(
        self,
        arrow_type: pa.DataType,
        to_arrow: Callable[[Any], Any],
        from_arrow: Callable[[Any], Any],
        storage_type: pa.DataType | None = None,
    ) -> None:
        self.arrow_type = arrow_type
        self._to = to_arrow
        self._from = from_arrow
        self._storage = storage_type

    def encode(self, values: list) -> pa.Array:
        to = self._to
        converted = [None if v is None else to(v) for v in values]
        if self._storage is not None:
            return pa.array(converted, type=self._storage).cast(self.arrow_type)
        return pa.array(converted, type=self.arrow_type)

    def decode(self, arr: pa.Array) -> list:
        if self._storage is not None:
            arr = arr.cast(self._storage)
        conv = self._from
        return [None if v is None else conv(v) for v in arr.to_pylist()]


def _big_int_to_str(v: Any) -> str:
    if isinstance(v, bool):
        raise _Mismatch("expected int, got bool")
    return str(operator.index(v))


def _big_dec_to_str(v: Any) -> str:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise _Mismatch(f"expected decimal.Decimal, got {type(v).__name__}")


def _instant_class() -> type:
    """The Instant class of ``flowrun.core.time`` (PyFlink's ``pyflink.common.time``)."""
    from flowrun.core.time import Instant  # type: ignore[import-not-found]

    return Instant


def _instant_codec() -> _ConvertCodec:
    try:
        instant = _instant_class()
    except ImportError as exc:
        raise NotImplementedError(
            "Types.INSTANT() needs flowrun.core.time.Instant, which is not available"
        ) from exc

    def to_nanos(v: Any) -> int:
        return v.seconds * 1_000_000_000 + v.nanos

    def from_nanos(n: int) -> Any:
        seconds, nanos = divmod(n, 1_000_000_000)
        return instant(seconds, nanos)

    return _ConvertCodec(pa.timestamp("ns", tz="UTC"), to_nanos, from_nanos, pa.int64())


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=5)


def _offsets(arr: pa.Array) -> tuple[list[int], int, int]:
    """Row offsets of a (possibly sliced) list or map array, rebased to 0, and the child
    range they cover."""
    offs = arr.offsets.to_numpy()
    base, end = int(offs[0]), int(offs[-1])
    return (offs - base).tolist(), base, end - base


def _mask_and_present(
    values: list, kind: type | tuple, what: str, empty: Any
) -> tuple[pa.Array | None, list]:
    """Check the container type of every value; return the null mask (or None) and the
    values with None replaced by ``empty``."""
    has_none = False
    for t in set(map(type, values)):
        if t is _NONE_TYPE:
            has_none = True
        elif not issubclass(t, kind) or issubclass(t, (str, bytes)):
            raise _Mismatch(f"expected {what}, got {t.__name__}")
    if has_none:
        mask = pa.array([v is None for v in values], type=pa.bool_())
        return mask, [empty if v is None else v for v in values]
    return None, values


def _lengths_to_offsets(items: list) -> pa.Array:
    offsets = np.zeros(len(items) + 1, dtype=np.int32)
    if items:
        np.cumsum(np.fromiter(map(len, items), dtype=np.int64, count=len(items)), out=offsets[1:])
    return pa.array(offsets)


class _ListCodec(_Codec):
    def __init__(self, elem: _Codec, elem_nullable: bool, what: str) -> None:
        self._elem = elem
        self._elem_nullable = elem_nullable
        self._what = what
        self.arrow_type = pa.list_(elem.arrow_type)
        self.plain_read = elem.plain_read

    def encode(self, values: list) -> pa.Array:
        mask, present = _mask_and_present(values, (list, tuple), "a list", ())
        child = self._elem.encode(list(chain.from_iterable(present)))
        if not self._elem_nullable and child.null_count:
            raise _Mismatch(f"{self._what} elements must not be None")
        offsets = _lengths_to_offsets(present)
        return pa.ListArray.from_arrays(offsets, child, type=self.arrow_type, mask=mask)

    def decode(self, arr: pa.Array) -> list:
        if self.plain_read:
            return arr.to_pylist(maps_as_pydicts="strict")
        offs, base, size = _offsets(arr)
        vals = self._elem.decode(arr.values.slice(base, size))
        out = [vals[offs[i] : offs[i + 1]] for i in range(len(arr))]
        return _apply_nulls(arr, out)


class _MapCodec(_Codec):
    def __init__(self, key: _Codec, value: _Codec) -> None:
        self._key = key
        self._value = value
        self.arrow_type = pa.map_(key.arrow_type, value.arrow_type)
        self.plain_read = key.plain_read and value.plain_read

    def encode(self, values: list) -> pa.Array:
        mask, present = _mask_and_present(values, dict, "a dict", {})
        keys = self._key.encode(list(chain.from_iterable(present)))
        if keys.null_count:
            raise _Mismatch("map keys must not be None")
        items = self._value.encode(list(chain.from_iterable(d.values() for d in present)))
        offsets = _lengths_to_offsets(present)
        return pa.MapArray.from_arrays(offsets, keys, items, type=self.arrow_type, mask=mask)

    def decode(self, arr: pa.Array) -> list:
        if self.plain_read:
            return arr.to_pylist(maps_as_pydicts="strict")
        offs, base, size = _offsets(arr)
        keys = self._key.decode(arr.keys.slice(base, size))
        items = self._value.decode(arr.items.slice(base, size))
        out = [
            dict(zip(keys[offs[i] : offs[i + 1]], items[offs[i] : offs[i + 1]], strict=True))
            for i in range(len(arr))
        ]
        return _apply_nulls(arr, out)


def _apply_nulls(arr: pa.Array, out: list) -> list:
    if arr.null_count:
        valid = arr.is_valid().to_pylist()
        return [v if ok else None for v, ok in zip(out, valid, strict=True)]
    return out


def _rows_from_columns(columns: list[list], fields: tuple | None, n: int) -> list[Row]:
    """Build Row objects without calling ``Row.__init__`` per row (about 3x cheaper)."""
    new = object.__new__
    out = []
    append = out.append
    for values in zip(*columns, strict=True) if columns else repeat((), n):
        row = new(Row)
        row._values = values
        row._fields = fields
        row._row_kind = _INSERT
        append(row)
    return out


class _StructCodec(_Codec):
    """A ROW or TUPLE: nested as an Arrow struct, or spread over columns at the top level."""

    plain_read = False

    def __init__(self, type_info: RowTypeInfo | TupleTypeInfo) -> None:
        self.type_info = type_info
        self.is_row = isinstance(type_info, RowTypeInfo)
        types = type_info.get_field_types()
        self.arity = len(types)
        if self.is_row:
            self.names = tuple(type_info.get_field_names())
            self.by_name = type_info.has_field_names()
            self.row_fields = self.names if self.by_name else None
            self.nullable = [True] * self.arity  # Flink rows carry a null mask
        else:
            self.names = tuple(f"f{i}" for i in range(self.arity))
            self.by_name = False
            self.row_fields = None
            self.nullable = [t._nullable for t in types]
        self.field_types = types
        self.codecs = [_codec_for(t) for t in types]
        self.arrow_type = pa.struct(
            [pa.field(n, c.arrow_type) for n, c in zip(self.names, self.codecs, strict=True)]
        )
        self._nones = (None,) * self.arity

    def field_values(self, record: Any) -> Sequence:
        """The field values of one record, in declared order (PyFlink's accepted inputs)."""
        if isinstance(record, Row):
            values = record._values
            fields = record._fields
            if self.by_name and fields is not None and fields != self.names:
                try:
                    values = [record[n] for n in self.names]
                except KeyError:
                    raise _Mismatch(
                        f"row has fields {list(fields)}, the type declares {list(self.names)}"
                    ) from None
        elif isinstance(record, (tuple, list)):
            values = record
        elif record is None:
            raise _Mismatch(f"a {'ROW' if self.is_row else 'TUPLE'} value must not be None")
        elif self.is_row and isinstance(record, dict):
            values = [record.get(n) for n in self.names]
        elif self.is_row and hasattr(record, "__dict__") and not isinstance(record, type):
            attrs = vars(record)
            values = [attrs.get(n) for n in self.names]
        else:
            accepted = "Row, tuple, list, dict or object" if self.is_row else "tuple, list or Row"
            raise _Mismatch(f"expected a {accepted}, got {type(record).__name__}")
        if len(values) != self.arity:
            raise _Mismatch(f"expected {self.arity} fields, got {len(values)}")
        return values

    def encode_field(self, j: int, column: list, known_nulls: int = 0) -> pa.Array:
        arr = self.codecs[j].encode(column)
        if not self.nullable[j] and arr.null_count > known_nulls:
            raise _Mismatch(f"field {self.names[j]!r} must not be None")
        return arr

    def encode(self, values: list) -> pa.Array:
        seqs = []
        n_null = 0
        for v in values:
            if v is None:
                seqs.append(self._nones)
                n_null += 1
            else:
                seqs.append(self.field_values(v))
        mask = pa.array([v is None for v in values], type=pa.bool_()) if n_null else None
        if not self.arity:
            return pa.array([None if v is None else {} for v in values], type=self.arrow_type)
        children = [
            self.encode_field(j, list(map(operator.itemgetter(j), seqs)), n_null)
            for j in range(self.arity)
        ]
        return pa.StructArray.from_arrays(children, fields=list(self.arrow_type), mask=mask)

    def build(self, columns: list[list], n: int) -> list:
        if self.is_row:
            return _rows_from_columns(columns, self.row_fields, n)
        return list(zip(*columns, strict=True)) if columns else [()] * n

    def decode(self, arr: pa.Array) -> list:
        columns = [c.decode(arr.field(j)) for j, c in enumerate(self.codecs)]
        return _apply_nulls(arr, self.build(columns, len(arr)))


_SCALAR_CODECS: dict[BasicType, Callable[[], _Codec]] = {
    BasicType.STRING: _StrCodec,
    BasicType.BOOLEAN: lambda: _PlainCodec(pa.bool_()),
    BasicType.FLOAT: lambda: _PlainCodec(pa.float32()),
    BasicType.DOUBLE: lambda: _PlainCodec(pa.float64()),
    BasicType.BYTE: lambda: _IntCodec(pa.int8()),
    BasicType.SHORT: lambda: _IntCodec(pa.int16()),
    BasicType.INT: lambda: _IntCodec(pa.int32()),
    BasicType.LONG: lambda: _IntCodec(pa.int64()),
    BasicType.CHAR: _CharCodec,
    BasicType.BIG_INT: lambda: _ConvertCodec(pa.string(), _big_int_to_str, int),
    BasicType.BIG_DEC: lambda: _ConvertCodec(pa.string(), _big_dec_to_str, Decimal),
    BasicType.INSTANT: _instant_codec,
}


def _codec_for(t: TypeInformation) -> _Codec:
    if isinstance(t, ExternalTypeInfo):
        return _codec_for(t._type_info)
    if isinstance(t, BasicTypeInfo):
        return _SCALAR_CODECS[t._basic_type]()
    if isinstance(t, (RowTypeInfo, TupleTypeInfo)):
        return _StructCodec(t)
    if isinstance(t, PrimitiveArrayTypeInfo):
        elem = t.get_element_type()
        if elem == BasicTypeInfo(BasicType.BYTE):
            return _BytesCodec()
        return _ListCodec(_codec_for(elem), False, "PRIMITIVE_ARRAY")
    if isinstance(t, (BasicArrayTypeInfo, ObjectArrayTypeInfo)):
        return _ListCodec(_codec_for(t.get_element_type()), True, repr(t))
    if isinstance(t, ListTypeInfo):
        elem = t.get_element_type()
        return _ListCodec(_codec_for(elem), elem._nullable, repr(t))
    if isinstance(t, MapTypeInfo):
        return _MapCodec(_codec_for(t.get_key_type()), _codec_for(t.get_value_type()))
    if isinstance(t, PickledBytesTypeInfo):
        return _ConvertCodec(pa.binary(), _dumps, pickle.loads)
    try:
        return _PlainCodec(t.to_arrow_type())  # SQL date/time and future plain types
    except NotImplementedError:
        raise TypeError(f"no serializer for type {t!r}") from None


# --------------------------------------------------------------------------------------
# Batch sizing
# --------------------------------------------------------------------------------------


def _fit(batch: pa.RecordBatch, budget: int, out: list) -> None:
    """Append ``batch`` to ``out``, halved (zero-copy) until each piece fits ``budget``."""
    if batch.num_rows <= 1 or pa.ipc.get_record_batch_size(batch) <= budget:
        out.append(batch)
        return
    half = batch.num_rows // 2
    _fit(batch.slice(0, half), budget, out)
    _fit(batch.slice(half), budget, out)


def _split_batch(batch: pa.RecordBatch, budget: int) -> list[pa.RecordBatch]:
    n = batch.num_rows
    size = pa.ipc.get_record_batch_size(batch)
    if size <= budget or n <= 1:
        return [batch]
    # A one-row slice measures the fixed cost (metadata, padding); an empty slice does not:
    # the IPC writer then emits whole buffers.
    overhead = pa.ipc.get_record_batch_size(batch.slice(0, 1))
    per_row = max((size - overhead) / (n - 1), 1e-9)
    # 3% headroom for padding and uneven rows, so that few slices need halving.
    rows = max(1, int((budget - overhead) * 0.97 / per_row)) if budget > overhead else 1
    out: list[pa.RecordBatch] = []
    for start in range(0, n, rows):
        _fit(batch.slice(start, rows), budget, out)
    return out


# --------------------------------------------------------------------------------------
# Serializers
# --------------------------------------------------------------------------------------


class RecordSerializer(ABC):
    """Turns lists of records into Arrow record batches and back, for one stream type.

    ``schema`` is fixed per serializer (the network layer sends it once per channel);
    ``schema_size`` is the size of its IPC message, which ``to_batches`` keeps room for.
    """

    schema: pa.Schema
    type_info: TypeInformation | None
    #: whether ``encode(records)`` and ``fit(batch, max_bytes)`` exist: column encodings,
    #: whose batches can be reordered and sliced per row (the pickled one packs chunks)
    encodes_rows: bool = False

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.schema_size = len(schema.serialize())

    @abstractmethod
    def to_batches(self, records: list, max_bytes: int) -> list[pa.RecordBatch]:
        """Serialize ``records``, in order, into batches whose IPC size plus the schema's is
        at most ``max_bytes`` (a batch of one oversized record excepted)."""

    @abstractmethod
    def from_batch(self, batch: pa.RecordBatch) -> list:
        """The records of one batch, as fresh Python objects."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.type_info!r})"


class _PickledSerializer(RecordSerializer):
    type_info = None

    def __init__(self) -> None:
        super().__init__(pa.schema([pa.field(PICKLED_COLUMN, pa.binary(), nullable=False)]))
        probe = pa.RecordBatch.from_arrays([pa.array([b""], pa.binary())], schema=self.schema)
        self._batch_overhead = pa.ipc.get_record_batch_size(probe)

    def _pickle(self, chunk: list, start: int) -> bytes:
        try:
            return _dumps(chunk)
        except Exception:
            for i, record in enumerate(chunk):
                try:
                    _dumps(record)
                except Exception as exc:
                    raise RecordTypeError(
                        record, start + i, None, PickledBytesTypeInfo(), exc
                    ) from exc
            raise

    def to_batches(self, records: list, max_bytes: int) -> list[pa.RecordBatch]:
        if not isinstance(records, list):
            records = list(records)
        n = len(records)
        if not n:
            return []
        budget = max_bytes - self.schema_size
        target = max(1, min(budget - self._batch_overhead - 64, _PICKLE_CHUNK_BYTES))
        payloads: list[bytes] = []
        start = 0
        count = min(n, _PICKLE_SAMPLE)  # the first chunk doubles as the size estimate
        while start < n:
            chunk = records[start : start + count]
            data = self._pickle(chunk, start)
            if len(data) > target and len(chunk) > 1:
                count = max(1, int(len(chunk) * target / len(data) * 0.9))
                continue
            payloads.append(data)
            start += len(chunk)
            count = max(1, int(len(chunk) * target / max(len(data), 1) * 0.9))
        return self._pack(payloads, budget)

    def _pack(self, payloads: list[bytes], budget: int) -> list[pa.RecordBatch]:
        batches: list[pa.RecordBatch] = []
        group: list[bytes] = []
        size = self._batch_overhead
        for data in payloads:
            cost = len(data) + 8
            if group and size + cost > budget:
                batches.append(self._batch(group))
                group, size = [], self._batch_overhead
            group.append(data)
            size += cost
        if group:
            batches.append(self._batch(group))
        return batches

    def _batch(self, group: list[bytes]) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([pa.array(group, type=pa.binary())], schema=self.schema)

    @_gc_paused
    def from_batch(self, batch: pa.RecordBatch) -> list:
        col = batch.column(0)
        n = len(col)
        if not n:
            return []
        _, offsets_buf, data_buf = col.buffers()
        offs = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=col.offset * 4)
        offs = offs.tolist()
        data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
        loads = pickle.loads
        if n == 1:
            return loads(data[offs[0] : offs[1]])
        out: list = []
        extend = out.extend
        for i in range(n):
            extend(loads(data[offs[i] : offs[i + 1]]))
        return out


class _TypedSerializer(RecordSerializer):
    encodes_rows = True

    def __init__(self, type_info: TypeInformation) -> None:
        self.type_info = type_info
        inner = type_info
        while isinstance(inner, ExternalTypeInfo):
            inner = inner._type_info
        self._struct: _StructCodec | None = None
        if isinstance(inner, (RowTypeInfo, TupleTypeInfo)):
            struct = self._struct = _StructCodec(inner)
            if not struct.is_row and not struct.arity:
                raise TypeError("a TUPLE with no fields cannot carry records")
            if struct.is_row and ROW_KIND_COLUMN in struct.names:
                raise TypeError(f"field name {ROW_KIND_COLUMN!r} is reserved")
            fields = [
                pa.field(name, codec.arrow_type, nullable=nullable)
                for name, codec, nullable in zip(
                    struct.names, struct.codecs, struct.nullable, strict=True
                )
            ]
            if struct.is_row:
                fields.append(pa.field(ROW_KIND_COLUMN, pa.int8(), nullable=False))
        else:
            self._codec = _codec_for(inner)
            fields = [pa.field("f0", self._codec.arrow_type, nullable=inner._nullable)]
            self._nullable = inner._nullable
        super().__init__(pa.schema(fields))

    # -- encoding ----------------------------------------------------------------------

    def to_batches(self, records: list, max_bytes: int) -> list[pa.RecordBatch]:
        if not isinstance(records, list):
            records = list(records)
        if not records:
            return []
        return self.fit(self.encode(records)[0], max_bytes)

    def encode(self, records: list) -> tuple[pa.RecordBatch, list[list], bool]:
        """All of ``records`` (a non-empty list) as one batch, not cut to any size, the
        Python values of each field column it was built from (``[records]`` for a scalar
        type), and whether those columns are positional: ``columns[j][i] is records[i][j]``
        (every record a tuple or list, subscripted by ``operator.itemgetter(j)``).

        For a writer that partitions after serialising: the columns tell it whether the
        keys are a field's values (then it hashes that Arrow column) -- for a key selector
        ``r[j]`` on positional columns, ``columns[j]`` *are* its keys --, and ``batch.take``
        plus :meth:`fit` split the batch per channel without touching the records again.
        """
        if self._struct is None:
            arrays, columns, positional = [self._encode_single(records)], [records], False
        else:
            arrays, columns, positional = self._encode_struct(records)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema), columns, positional

    def fit(self, batch: pa.RecordBatch, max_bytes: int) -> list[pa.RecordBatch]:
        """``batch`` cut (zero-copy) into batches that fit ``max_bytes`` with the schema."""
        return _split_batch(batch, max_bytes - self.schema_size)

    def _encode_single(self, records: list) -> pa.Array:
        try:
            arr = self._codec.encode(records)
            if not self._nullable and arr.null_count:
                raise _Mismatch("None is not allowed for this type")
            return arr
        except Exception as exc:
            self._raise_culprit(records, records, None, self.type_info, self._check_one, exc)
            raise

    def _check_one(self, value: Any) -> None:
        arr = self._codec.encode([value])
        if not self._nullable and arr.null_count:
            raise _Mismatch("None is not allowed for this type")

    def _encode_struct(self, records: list) -> tuple[list[pa.Array], list[list], bool]:
        struct = self._struct
        assert struct is not None
        columns, kinds, positional = self._columns(records)
        arrays = []
        for j in range(struct.arity):
            try:
                arrays.append(struct.encode_field(j, columns[j]))
            except Exception as exc:

                def check(value: Any, j: int = j) -> None:
                    struct.encode_field(j, [value])

                self._raise_culprit(
                    records, columns[j], struct.names[j], struct.field_types[j], check, exc
                )
                raise
        if struct.is_row:
            arrays.append(self._kind_array(records, kinds))
        return arrays, columns, positional

    def _columns(self, records: list) -> tuple[list[list], list | None, bool]:
        """Transpose records into field columns, without a Python call per record in the
        common cases (all tuples/lists, or all Rows whose names match the type); also
        whether the columns are positional (``itemgetter(j)`` of the records themselves)."""
        struct = self._struct
        assert struct is not None
        n = len(records)
        seqs: list | None = None
        kinds = None
        # Counting exact types is a cheaper C pass than a set of them: plain tuples first.
        if list(map(type, records)).count(tuple) == n:
            seqs = records
        else:
            types = set(map(type, records))
            if all(issubclass(t, (tuple, list)) for t in types):
                seqs = records
            elif all(issubclass(t, Row) for t in types):
                if not struct.by_name or set(map(_get_fields, records)) <= {None, struct.names}:
                    seqs = list(map(_get_values, records))
                if struct.is_row:
                    kinds = list(map(_get_kind, records))
        if seqs is not None and list(map(len, seqs)).count(struct.arity) != n:
            seqs = None  # some record has the wrong arity: let the slow path name it
        if seqs is None:
            seqs = []
            append = seqs.append
            for i, record in enumerate(records):
                try:
                    append(struct.field_values(record))
                except Exception as exc:
                    raise RecordTypeError(record, i, None, self.type_info, exc) from exc
            if struct.is_row and kinds is None:
                kinds = [r._row_kind if isinstance(r, Row) else _INSERT for r in records]
        columns = [list(map(operator.itemgetter(j), seqs)) for j in range(struct.arity)]
        return columns, kinds, seqs is records

    def _kind_array(self, records: list, kinds: list | None) -> pa.Array:
        n = len(records)
        if kinds is None or kinds.count(_INSERT) == n:
            return pa.array(np.zeros(n, dtype=np.int8))
        try:
            return pa.array([k.value for k in kinds], type=pa.int8())
        except Exception as exc:
            for i, k in enumerate(kinds):
                if not isinstance(k, RowKind):
                    raise RecordTypeError(
                        records[i], i, None, self.type_info, f"row kind {k!r} is not a RowKind"
                    ) from exc
            raise

    def _raise_culprit(
        self,
        records: list,
        column: list,
        field: str | None,
        expected: TypeInformation | None,
        check: Callable[[Any], None],
        exc: BaseException,
    ) -> None:
        """Find the first value of ``column`` that fails on its own and raise for it."""
        for i, value in enumerate(column):
            try:
                check(value)
            except Exception as cause:
                raise RecordTypeError(records[i], i, field, expected, cause) from exc

    # -- decoding ----------------------------------------------------------------------

    @_gc_paused
    def from_batch(self, batch: pa.RecordBatch) -> list:
        n = batch.num_rows
        if not n:
            return []
        struct = self._struct
        if struct is None:
            return self._codec.decode(batch.column(0))
        columns = [c.decode(batch.column(j)) for j, c in enumerate(struct.codecs)]
        out = struct.build(columns, n)
        if struct.is_row:
            kinds = batch.column(struct.arity).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(kinds).tolist():
                out[i]._row_kind = _KINDS[kinds[i]]
        return out


_PICKLED = _PickledSerializer()


@functools.lru_cache(maxsize=256)
def _typed_serializer(type_info: TypeInformation) -> _TypedSerializer:
    return _TypedSerializer(type_info)


def serializer_for(type_info: TypeInformation | list | None) -> RecordSerializer:
    """The serializer for a stream of the given declared type (None: pickled).

    A list of type infos means ``Types.ROW(list)`` (see :func:`normalize_type`).
    Serializers hold no per-call state and are shared.

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> serializer_for(Types.ROW_NAMED(["w"], [Types.STRING()])).schema.names
        ['w', '_row_kind']
    """
    t = normalize_type(type_info)
    if t is None or isinstance(t, PickledBytesTypeInfo):
        return _PICKLED
    return _typed_serializer(t)


# --------------------------------------------------------------------------------------
# Validation without serialising (chained edges)
# --------------------------------------------------------------------------------------


def _int_typecode(size: int) -> str:
    """The signed ``array`` typecode of ``size`` bytes (its range is that of the Java type)."""
    return next(code for code in "bhilq" if array(code).itemsize == size)


_INT_TYPECODES = {
    BasicType.BYTE: _int_typecode(1),
    BasicType.SHORT: _int_typecode(2),
    BasicType.INT: _int_typecode(4),
    BasicType.LONG: _int_typecode(8),
}


def _types_within(values: Iterable, main: type, allowed: frozenset) -> bool:
    """Whether the exact type of every value is in ``allowed`` (which holds ``main``).

    Counting ``main`` in the list of types is one cheap C pass (identity compares); only
    columns with other types (None in a nullable column) pay for a set of the types.
    """
    types = list(map(type, values))
    return types.count(main) == len(types) or set(types) <= allowed


def _column_check(t: TypeInformation, nullable: bool) -> Callable[[Iterable], bool] | None:
    """A C-speed check that a column of values certainly fits ``t`` (False: look closer).

    The values may be any iterable: a ``map`` over records spares a list of the values for
    the checks of types only.
    """
    if not isinstance(t, BasicTypeInfo):
        return None
    basic = t._basic_type
    if basic in _INT_TYPECODES:
        code = _INT_TYPECODES[basic]
        just_int = frozenset({int})

        def check_int(values: Iterable) -> bool:
            values = values if isinstance(values, list) else list(values)  # two passes
            if not _types_within(values, int, just_int):
                return False
            try:
                array(code, values)  # one C pass; OverflowError outside the type's range
            except OverflowError:
                return False
            return True

        return check_int
    main = {BasicType.STRING: str, BasicType.BOOLEAN: bool, BasicType.DOUBLE: float}.get(basic)
    if main is None:
        return None
    allowed = frozenset({main, _NONE_TYPE} if nullable or basic in _NULLABLE_BASIC else {main})
    return lambda values: _types_within(values, main, allowed)


def validator_for(type_info: TypeInformation | list | None) -> Callable[[list], None] | None:
    """A function that raises :class:`RecordTypeError` for records not matching the type.

    Used where records are *not* serialised (between chained operators), so it must cost
    far less than a conversion: scalar and flat tuple types are checked with C-level
    passes (counting exact types, an ``array`` of the integers for their range); anything it cannot
    prove right -- and every nested type -- goes through the full serializer, which also
    produces the precise error. None means there is nothing to check (pickled stream).
    """
    t = normalize_type(type_info)
    if t is None or isinstance(t, PickledBytesTypeInfo):
        return None
    full = serializer_for(t)
    fast: Callable[[list], bool] | None = None
    if isinstance(t, TupleTypeInfo):
        fields = [_column_check(f, nullable=False) for f in t.get_field_types()]
        if all(f is not None for f in fields):
            n = len(fields)

            def fast(records: list) -> bool:
                size = len(records)
                if (
                    list(map(type, records)).count(tuple) != size
                    or list(map(len, records)).count(n) != size
                ):
                    return False
                # one C-level pass per field (zip(*records) is ~10x slower on long lists)
                return all(check(map(itemgetter(i), records)) for i, check in enumerate(fields))

    else:
        fast = _column_check(t, nullable=False)

    def validate(records: list) -> None:
        if not records or (fast is not None and fast(records)):
            return
        full.to_batches(records, 1 << 30)

    return validate
