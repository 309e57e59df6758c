"""Typed binary serializers for state values and keys.

State outlives the process that wrote it: it is checkpointed, restored into other processes
(possibly another backend or parallelism) and read back long after the job that wrote it
changed. So values are stored in a typed, self-describing-enough binary form derived from the
descriptor's ``TypeInformation``, and **nothing is unpickled unless the user declared
``Types.PICKLED_BYTE_ARRAY()``**: restoring state never runs code from the snapshot.

Value encodings (:func:`serializer_for`), compact and deterministic:

=================================  ========================================================
type                               bytes
=================================  ========================================================
``BOOLEAN``                        1 byte, 0 or 1
``BYTE SHORT INT LONG``            fixed-width signed big-endian; range checked
``FLOAT DOUBLE``                   IEEE 754 big-endian (NaN canonicalised)
``STRING CHAR``                    UTF-8 (lone surrogates pass through); ``""`` is ``ff``
``BIG_INT BIG_DEC``                the decimal string (exact, any size and scale)
``SQL_DATE``                       int32 days since 1970-01-01
``SQL_TIME``                       int64 microseconds since midnight (tzinfo dropped)
``SQL_TIMESTAMP``                  int64 microseconds since the epoch (aware: as UTC)
``INSTANT``                        int64 seconds + int32 nanos
``PICKLED_BYTE_ARRAY``             pickle protocol 5 (cloudpickle when pickle cannot)
``PRIMITIVE_ARRAY(BYTE)``          size + the bytes
``PRIMITIVE_ARRAY`` of numbers     size + packed fixed-width values (no None possible)
other arrays, ``LIST``             size + one frame per element
``MAP``                            size + (key frame, value frame) per entry
``ROW`` / ``TUPLE``                header (null bitmap; for rows also the RowKind) + fields
=================================  ========================================================

A *size* is one byte below 255, else ``ff`` and a big-endian uint32. A *frame* is the size
``len + 1`` followed by the element's own top-level encoding, or the single byte ``00`` for
None, so a list element is stored exactly as it would be on its own. Row/tuple fields skip
the frame header when their type has a fixed width.

**None** is ``b""`` for every type at the top level (a map value may be None whatever its
type, as in Flink); no other value encodes to ``b""``. Inside containers the declared
nullability holds: primitives (``BYTE SHORT INT LONG FLOAT DOUBLE BOOLEAN CHAR``), rows,
tuples, lists, maps and arrays may not be None as tuple fields or list elements; ``ROW``
fields, ``BASIC_ARRAY``/``OBJECT_ARRAY`` elements and map values may.

A value that does not fit its type raises ``TypeError`` (wrong kind: a bool or float where
``INT`` is declared, a str where bytes are) or ``ValueError`` (out of range, None where not
allowed, wrong arity), naming the path inside the value; the state layer wraps it into
:class:`StateTypeError`. Malformed bytes raise ``ValueError`` on ``deserialize``.

**Keys** (:func:`key_serializer_for`) must give equal bytes for equal keys in every process,
because the bytes are the storage key (after a 2-byte key group and a 2-byte state id; only
equality matters, not order). A declared key type uses the typed encoding. Undeclared keys
(and ``PICKLED_BYTE_ARRAY`` keys: pickles are not canonical) use a tagged encoding that never
pickles: a tag byte per kind -- None, False, True, int64, big int (two's complement), float,
str, bytes, tuple, Row -- then the payload; nested elements are framed. Keys compare as Flink
and :mod:`flowrun.state.key_groups` see them: ``1``, ``1.0`` and ``True`` are different keys,
``-0.0`` and ``0.0`` too, all NaNs are one key, numpy scalars are their Python values, any
tuple subclass is a tuple, and a Row's RowKind is ignored (an update and a retraction of a
row key address the same state).

Example::

    >>> from flowrun.core.typeinfo import Types
    >>> from flowrun.state.serializers import key_serializer_for, serializer_for
    >>> s = serializer_for(Types.TUPLE([Types.STRING(), Types.INT()]))
    >>> data = s.serialize(("a", 1))
    >>> data.hex(), s.deserialize(data)
    ('00026100000001', ('a', 1))
    >>> k = key_serializer_for(None)
    >>> k.serialize("a") == k.serialize("a"), k.deserialize(k.serialize(("x", 2)))
    (True, ('x', 2))
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import numbers
import pickle
import struct
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from flowrun.core.reprs import short_repr as _short_repr
from flowrun.core.row import Row, RowKind
from flowrun.core.typeinfo import (
    BasicArrayTypeInfo,
    BasicType,
    BasicTypeInfo,
    DateTypeInfo,
    ExternalTypeInfo,
    ListTypeInfo,
    MapTypeInfo,
    ObjectArrayTypeInfo,
    PickledBytesTypeInfo,
    PrimitiveArrayTypeInfo,
    RowTypeInfo,
    TimestampTypeInfo,
    TimeTypeInfo,
    TupleTypeInfo,
    TypeInformation,
)

__all__ = [
    "PLAIN_KEY_TYPES",
    "StateTypeError",
    "TypeSerializer",
    "dict_safe_keys",
    "key_serializer_for",
    "pack_frames",
    "serializer_for",
    "unpack_frames",
]

_U32 = struct.Struct(">I")
_BYTE = tuple(bytes((i,)) for i in range(256))
_NULL_FRAME = b"\x00"
_EMPTY_STRING = b"\xff"  # never valid UTF-8, so it cannot collide with a real string
_KINDS = tuple(RowKind)


class StateTypeError(TypeError):
    """A value (or key) does not match the type declared for a state.

    Attributes: ``state_name``, ``key`` (the current key, or the map key being written),
    ``value`` (the offending value), ``expected`` (the declared ``TypeInformation``, None for
    an undeclared key) and ``cause`` (the underlying error).

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> try:
        ...     serializer_for(Types.INT()).serialize(2**40)
        ... except ValueError as exc:
        ...     err = StateTypeError("count", "k1", 2**40, Types.INT(), exc)
        >>> print(err)
        state 'count' (key 'k1'): value 1099511627776 does not match the declared type Integer: 1099511627776 is out of range for Integer [-2147483648, 2147483647]
    """

    def __init__(
        self,
        state_name: str,
        key: Any,
        value: Any,
        expected: TypeInformation | None,
        cause: BaseException | str | None = None,
    ) -> None:
        self.state_name = state_name
        self.key = key
        self.value = value
        self.expected = expected
        self.cause = cause
        declared = "no declared type" if expected is None else f"the declared type {expected!r}"
        reason = f": {cause}" if cause is not None else ""
        super().__init__(
            f"state {state_name!r} (key {_short_repr(key)}): value {_short_repr(value)} "
            f"does not match {declared}{reason}"
        )

    def __reduce__(self) -> tuple:
        # Errors travel between processes pickled; the key or value may not pickle.
        return (
            _restore_state_type_error,
            (
                self.state_name,
                _picklable(self.key),
                _picklable(self.value),
                self.expected,
                str(self),
            ),
        )


def _picklable(value: Any) -> Any:
    try:
        pickle.dumps(value)
    except Exception:
        return _short_repr(value)
    return value


def _restore_state_type_error(
    state_name: str, key: Any, value: Any, expected: Any, message: str
) -> StateTypeError:
    err = StateTypeError.__new__(StateTypeError)
    TypeError.__init__(err, message)
    err.state_name, err.key, err.value, err.expected, err.cause = (
        state_name,
        key,
        value,
        expected,
        message,
    )
    return err


def _nested(exc: BaseException, where: str) -> Exception:
    """The error of an element, re-raised with its position in the enclosing value."""
    kind = TypeError if isinstance(exc, TypeError) else ValueError
    return kind(f"{where}: {exc}")


def _size(n: int) -> bytes:
    return _BYTE[n] if n < 255 else b"\xff" + _U32.pack(n)


def _read_size(buf: Any, pos: int) -> tuple[int, int]:
    n = buf[pos]
    if n < 255:
        return n, pos + 1
    return _U32.unpack_from(buf, pos + 1)[0], pos + 5


def _check_end(buf: Any, pos: int) -> None:
    if pos != len(buf):
        raise ValueError(f"{len(buf) - pos} bytes left over after the value")


# ------------------------------------------------------------------------------------------
# Codecs: one per TypeInformation node. ``enc`` turns a non-None value into its top-level
# bytes; ``dec`` reads them back from an exact span (bytes or memoryview). Fixed-width codecs
# (``width`` > 0) also decode in place with ``unpack_at``, so containers skip their frames.
# ------------------------------------------------------------------------------------------


class _Codec:
    width = 0
    nullable = False
    what = ""

    def enc(self, v: Any) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def dec(self, buf: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def unpack_at(self, buf: Any, pos: int) -> Any:  # pragma: no cover - fixed only
        raise NotImplementedError

    def int_layout(self) -> tuple[bytes, str] | None:
        """``(prefix, struct format)`` with ``enc(v) == prefix + struct.pack(format, v)`` for
        every exact ``int`` the format can hold, or None when the codec has no such form.

        Why: a batch of int keys can then be encoded with one ``struct`` call per key, in a
        comprehension, instead of going through the serializer's layers key by key.
        """
        return None

    def top_level(self, serialize: Callable, deserialize: Callable) -> tuple[Callable, Callable]:
        """Top-level ``(serialize, deserialize)`` functions, given the generic ones.

        Codecs of common types return specialised functions that handle the usual case inline
        and hand everything else (None, coercions, errors) to the generic ones.
        """
        return serialize, deserialize

    def dec_fixed(self, data: np.ndarray, width: int) -> np.ndarray | None:
        """Bulk decode: the values of ``len(data) // width`` items of ``width`` bytes each,
        packed in ``data`` (uint8), as a native int64 array; None when this codec has no bulk
        decoder for them.

        Restoring state decodes millions of values; common fixed-width types do it with one
        numpy conversion instead of a Python call per value.
        """
        return None


def _type_name(v: Any) -> str:
    return type(v).__name__


def _as_int(v: Any, what: str) -> int:
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"expected int for {what}, got bool")
    if isinstance(v, (int, np.integer)):
        return int(v)
    raise TypeError(f"expected int for {what}, got {_type_name(v)}")


def _as_float(v: Any, what: str) -> float:
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"expected float for {what}, got bool")
    if isinstance(v, numbers.Real):
        return float(v)
    raise TypeError(f"expected float for {what}, got {_type_name(v)}")


class _BoolCodec(_Codec):
    width = 1
    what = "Boolean"

    def enc(self, v: Any) -> bytes:
        if v is True:
            return b"\x01"
        if v is False:
            return b"\x00"
        if isinstance(v, np.bool_):
            return b"\x01" if v else b"\x00"
        raise TypeError(f"expected bool for Boolean, got {_type_name(v)}")

    def dec(self, buf: Any) -> bool:
        if len(buf) != 1:
            raise ValueError(f"a Boolean is 1 byte, got {len(buf)}")
        return self.unpack_at(buf, 0)

    def unpack_at(self, buf: Any, pos: int) -> bool:
        b = buf[pos]
        if b > 1:
            raise ValueError(f"invalid Boolean byte {b}")
        return b == 1


class _IntCodec(_Codec):
    def __init__(self, fmt: str, what: str, bits: int) -> None:
        self._st = struct.Struct(fmt)
        self.width = self._st.size
        self.what = what
        self._lo = -(1 << (bits - 1))
        self._hi = (1 << (bits - 1)) - 1

    def enc(self, v: Any) -> bytes:
        if type(v) is not int:
            v = _as_int(v, self.what)
        try:
            return self._st.pack(v)
        except struct.error:
            raise ValueError(
                f"{v} is out of range for {self.what} [{self._lo}, {self._hi}]"
            ) from None

    def dec(self, buf: Any) -> int:
        return self._st.unpack(buf)[0]

    def unpack_at(self, buf: Any, pos: int) -> int:
        return self._st.unpack_from(buf, pos)[0]

    def int_layout(self) -> tuple[bytes, str] | None:
        return b"", self._st.format

    def dec_fixed(self, data: np.ndarray, width: int) -> np.ndarray | None:
        if width != self.width:
            return None
        return data.view(f">i{width}").astype(np.int64)

    def top_level(self, serialize: Callable, deserialize: Callable) -> tuple[Callable, Callable]:
        pack, unpack, width = self._st.pack, self._st.unpack, self.width

        def fast_serialize(v: Any) -> bytes:
            if type(v) is int:
                try:
                    return pack(v)
                except struct.error:
                    pass
            return serialize(v)

        def fast_deserialize(data: Any) -> Any:
            if len(data) == width:
                return unpack(data)[0]
            return deserialize(data)

        return fast_serialize, fast_deserialize


#: types of keys whose Python equality is their state-key equality (see :func:`dict_safe_keys`)
PLAIN_KEY_TYPES = frozenset({str, bytes, int, type(None)})
_TUPLE_TYPE = frozenset({tuple})


def dict_safe_keys(keys: Iterable[Any]) -> bool:
    """Whether Python's equality of ``keys`` is their equality as state keys, so that they
    may be keys of one dict as they are.

    It is for ``str``, ``bytes``, ``int``, None and tuples of these (exact types). It is not
    for floats (``-0.0 == 0.0``, and NaN is unequal to itself), bools (``True == 1``), numpy
    scalars, Rows and others: different state keys that a dict would merge, or one key it
    would split (see :func:`key_serializer_for`). Checks every key, not the distinct ones:
    ``{1, True}`` is a one-element set. Counting ``str`` among the types (identity compares)
    is cheaper than a set of them, and string keys are the common case.

    Example::

        >>> dict_safe_keys(["a", 1, None]), dict_safe_keys([("b", 2)])
        (True, True)
        >>> dict_safe_keys([1, True]), dict_safe_keys([(1, 0.5)])
        (False, False)
    """
    types = list(map(type, keys))
    if types.count(str) == len(types):
        return True
    kinds = set(types)
    if kinds <= PLAIN_KEY_TYPES:
        return True
    if kinds != _TUPLE_TYPE:
        return False
    return set(map(type, itertools.chain.from_iterable(keys))) <= PLAIN_KEY_TYPES


#: the one NaN object decoding returns: NaN equals NaN as a key (Java's ``Double.equals``;
#: encoding already writes every NaN as the same bytes), and decoded NaN keys are then at
#: least equal among themselves in a Python dict, which finds this object by identity (the
#: heap backend stores keys that are not :func:`dict_safe_keys` by their bytes anyway)
NAN_KEY = float("nan")


class _FloatCodec(_Codec):
    def __init__(self, fmt: str, what: str) -> None:
        self._st = struct.Struct(fmt)
        self.width = self._st.size
        self.what = what
        self._nan = self._st.pack(math.nan)

    def enc(self, v: Any) -> bytes:
        if type(v) is not float:
            v = _as_float(v, self.what)
        if v != v:
            return self._nan
        try:
            return self._st.pack(v)
        except (OverflowError, struct.error):
            raise ValueError(f"{v!r} is out of range for {self.what}") from None

    def dec(self, buf: Any) -> float:
        v = self._st.unpack(buf)[0]
        return v if v == v else NAN_KEY

    def unpack_at(self, buf: Any, pos: int) -> float:
        return self._st.unpack_from(buf, pos)[0]

    def top_level(self, serialize: Callable, deserialize: Callable) -> tuple[Callable, Callable]:
        pack, unpack, width = self._st.pack, self._st.unpack, self.width

        def fast_serialize(v: Any) -> bytes:
            if type(v) is float and v == v:
                try:
                    return pack(v)
                except OverflowError:
                    pass
            return serialize(v)

        def fast_deserialize(data: Any) -> Any:
            if len(data) == width:
                v = unpack(data)[0]
                return v if v == v else NAN_KEY
            return deserialize(data)

        return fast_serialize, fast_deserialize


def _decode_str(buf: Any) -> str:
    try:
        return str(buf, "utf-8", "surrogatepass")
    except UnicodeDecodeError:
        if len(buf) == 1 and buf[0] == 0xFF:
            return ""
        raise


class _StringCodec(_Codec):
    nullable = True
    what = "String"

    def enc(self, v: Any) -> bytes:
        if type(v) is not str:
            if not isinstance(v, str):
                raise TypeError(f"expected str for String, got {_type_name(v)}")
            v = str(v)
        return v.encode("utf-8", "surrogatepass") or _EMPTY_STRING

    dec = staticmethod(_decode_str)  # type: ignore[assignment]

    def top_level(self, serialize: Callable, deserialize: Callable) -> tuple[Callable, Callable]:
        def fast_serialize(v: Any) -> bytes:
            if type(v) is str:
                return v.encode("utf-8", "surrogatepass") or _EMPTY_STRING
            return serialize(v)

        def fast_deserialize(data: Any) -> Any:
            if data:
                try:
                    return str(data, "utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    pass
            return deserialize(data)

        return fast_serialize, fast_deserialize


class _CharCodec(_Codec):
    what = "Char"

    def enc(self, v: Any) -> bytes:
        if not isinstance(v, str):
            raise TypeError(f"expected a 1-character str for Char, got {_type_name(v)}")
        if len(v) != 1:
            raise ValueError(f"Char values must be exactly one character, got {len(v)}")
        return str(v).encode("utf-8", "surrogatepass")

    def dec(self, buf: Any) -> str:
        text = str(buf, "utf-8", "surrogatepass")
        if len(text) != 1:
            raise ValueError(f"a Char decoded to {len(text)} characters")
        return text


class _BigIntCodec(_Codec):
    nullable = True
    what = "BigInteger"

    def enc(self, v: Any) -> bytes:
        return str(_as_int(v, self.what)).encode("ascii")

    def dec(self, buf: Any) -> int:
        return int(str(buf, "ascii"))


class _BigDecCodec(_Codec):
    nullable = True
    what = "BigDecimal"

    def enc(self, v: Any) -> bytes:
        if isinstance(v, Decimal):
            return str(v).encode("ascii")
        if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            return str(int(v)).encode("ascii")
        raise TypeError(f"expected decimal.Decimal for BigDecimal, got {_type_name(v)}")

    def dec(self, buf: Any) -> Decimal:
        return Decimal(str(buf, "ascii"))


_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_EPOCH = _dt.datetime(1970, 1, 1)
_MICROSECOND = _dt.timedelta(microseconds=1)
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class _DateCodec(_Codec):
    width = 4
    nullable = True
    what = "Date"

    def enc(self, v: Any) -> bytes:
        if not isinstance(v, _dt.date):
            raise TypeError(f"expected datetime.date for Date, got {_type_name(v)}")
        return _I32.pack(v.toordinal() - _EPOCH_ORDINAL)

    def dec(self, buf: Any) -> _dt.date:
        return _dt.date.fromordinal(_I32.unpack(buf)[0] + _EPOCH_ORDINAL)

    def unpack_at(self, buf: Any, pos: int) -> _dt.date:
        return _dt.date.fromordinal(_I32.unpack_from(buf, pos)[0] + _EPOCH_ORDINAL)


def _time_from_micros(micros: int) -> _dt.time:
    seconds, us = divmod(micros, 1_000_000)
    minutes, s = divmod(seconds, 60)
    h, m = divmod(minutes, 60)
    return _dt.time(h, m, s, us)


class _TimeCodec(_Codec):
    width = 8
    nullable = True
    what = "Time"

    def enc(self, v: Any) -> bytes:
        if not isinstance(v, _dt.time):
            raise TypeError(f"expected datetime.time for Time, got {_type_name(v)}")
        seconds = (v.hour * 60 + v.minute) * 60 + v.second
        return _I64.pack(seconds * 1_000_000 + v.microsecond)

    def dec(self, buf: Any) -> _dt.time:
        return _time_from_micros(_I64.unpack(buf)[0])

    def unpack_at(self, buf: Any, pos: int) -> _dt.time:
        return _time_from_micros(_I64.unpack_from(buf, pos)[0])


class _TimestampCodec(_Codec):
    width = 8
    nullable = True
    what = "Timestamp"

    def enc(self, v: Any) -> bytes:
        if not isinstance(v, _dt.datetime):
            raise TypeError(f"expected datetime.datetime for Timestamp, got {_type_name(v)}")
        if v.tzinfo is not None and v.utcoffset() is not None:
            v = v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        elif v.tzinfo is not None:
            v = v.replace(tzinfo=None)
        return _I64.pack((v - _EPOCH) // _MICROSECOND)

    def dec(self, buf: Any) -> _dt.datetime:
        return _EPOCH + _dt.timedelta(microseconds=_I64.unpack(buf)[0])

    def unpack_at(self, buf: Any, pos: int) -> _dt.datetime:
        return _EPOCH + _dt.timedelta(microseconds=_I64.unpack_from(buf, pos)[0])


_INSTANT = struct.Struct(">qi")


class _InstantCodec(_Codec):
    width = 12
    nullable = True
    what = "Instant"

    def __init__(self) -> None:
        # Imported here: flowrun.core.time is light, but keeps this module import-cycle free.
        from flowrun.core.time import Instant

        self._instant = Instant

    def enc(self, v: Any) -> bytes:
        if not isinstance(v, self._instant):
            raise TypeError(f"expected flowrun.core.time.Instant, got {_type_name(v)}")
        try:
            return _INSTANT.pack(v.seconds, v.nanos)
        except struct.error:
            raise ValueError(f"{v!r} is out of range for Instant") from None

    def dec(self, buf: Any) -> Any:
        return self._instant(*_INSTANT.unpack(buf))

    def unpack_at(self, buf: Any, pos: int) -> Any:
        return self._instant(*_INSTANT.unpack_from(buf, pos))


def _pickle_dumps(v: Any) -> bytes:
    try:
        return pickle.dumps(v, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):
        import cloudpickle

        return cloudpickle.dumps(v, protocol=5)


class _PickledCodec(_Codec):
    nullable = True
    what = "PickledByteArrayTypeInfo"

    enc = staticmethod(_pickle_dumps)  # type: ignore[assignment]

    def dec(self, buf: Any) -> Any:
        return pickle.loads(buf)


class _BytesCodec(_Codec):
    """``PRIMITIVE_ARRAY(BYTE)``: Python bytes (bytearray and memoryview accepted)."""

    what = "PrimitiveArrayTypeInfo<Byte>"

    def enc(self, v: Any) -> bytes:
        if isinstance(v, memoryview):
            v = v.tobytes()
        elif not isinstance(v, (bytes, bytearray)):
            raise TypeError(f"expected bytes for {self.what}, got {_type_name(v)}")
        return _size(len(v)) + v

    def dec(self, buf: Any) -> bytes:
        n, pos = _read_size(buf, 0)
        _check_end(buf, pos + n)
        return bytes(buf[pos:])


class _PackedArrayCodec(_Codec):
    """``PRIMITIVE_ARRAY`` of fixed-width numbers or bools: size + packed values.

    Elements can never be None, so per-element frames would only cost space and time.
    """

    def __init__(self, elem: _Codec, code: str, allowed: frozenset[type]) -> None:
        self._elem = elem
        self._code = code
        self._allowed = allowed
        self._width = struct.calcsize(code)
        self.what = f"PrimitiveArrayTypeInfo<{elem.what}>"

    def enc(self, v: Any) -> bytes:
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"expected a list for {self.what}, got {_type_name(v)}")
        if set(map(type, v)) <= self._allowed:
            try:
                return _size(len(v)) + struct.pack(f">{len(v)}{self._code}", *v)
            except (struct.error, OverflowError):
                pass  # fall through to find the culprit
        for i, x in enumerate(v):
            if x is None:
                raise ValueError(f"element {i}: {self.what} elements must not be None")
            try:
                self._elem.enc(x)
            except (TypeError, ValueError) as exc:
                raise _nested(exc, f"element {i}") from None
        return _size(len(v)) + b"".join(map(self._elem.enc, v))

    def dec(self, buf: Any) -> list:
        n, pos = _read_size(buf, 0)
        _check_end(buf, pos + n * self._width)
        return list(struct.unpack_from(f">{n}{self._code}", buf, pos))


class _ListCodec(_Codec):
    """Arrays and lists: size + one frame per element."""

    def __init__(self, elem: _Codec, elem_nullable: bool, what: str) -> None:
        self._elem = elem
        self._elem_nullable = elem_nullable
        self.what = what

    def enc(self, v: Any) -> bytes:
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"expected a list for {self.what}, got {_type_name(v)}")
        parts = [_size(len(v))]
        append = parts.append
        enc = self._elem.enc
        for i, x in enumerate(v):
            if x is None:
                if not self._elem_nullable:
                    raise ValueError(f"element {i}: {self.what} elements must not be None")
                append(_NULL_FRAME)
                continue
            try:
                b = enc(x)
            except (TypeError, ValueError) as exc:
                raise _nested(exc, f"element {i}") from None
            n = len(b) + 1
            append(_BYTE[n] if n < 255 else b"\xff" + _U32.pack(n))
            append(b)
        return b"".join(parts)

    def dec(self, buf: Any) -> list:
        count, pos = _read_size(buf, 0)
        dec = self._elem.dec
        out = []
        append = out.append
        for _ in range(count):
            n = buf[pos]
            if n < 255:
                pos += 1
            else:
                n = _U32.unpack_from(buf, pos + 1)[0]
                pos += 5
            if n == 0:
                append(None)
                continue
            end = pos + n - 1
            append(dec(buf[pos:end]))
            pos = end
        _check_end(buf, pos)
        return out


def _write_frame(parts: list, b: bytes) -> None:
    n = len(b) + 1
    parts.append(_BYTE[n] if n < 255 else b"\xff" + _U32.pack(n))
    parts.append(b)


def _read_frame(buf: Any, pos: int) -> tuple[Any, int]:
    """(the frame's content or None, the position after it)."""
    n, pos = _read_size(buf, pos)
    if n == 0:
        return None, pos
    end = pos + n - 1
    if end > len(buf):
        raise ValueError("a frame runs past the end of the value")
    return buf[pos:end], end


class _MapCodec(_Codec):
    """Dicts: size + (key frame, value frame) per entry; keys non-None, values may be None."""

    def __init__(self, key: _Codec, value: _Codec, what: str) -> None:
        self._key = key
        self._value = value
        self.what = what

    def enc(self, v: Any) -> bytes:
        if not isinstance(v, Mapping):
            raise TypeError(f"expected a dict for {self.what}, got {_type_name(v)}")
        parts = [_size(len(v))]
        kenc, venc = self._key.enc, self._value.enc
        for k, x in v.items():
            if k is None:
                raise ValueError(f"{self.what} keys must not be None")
            try:
                _write_frame(parts, kenc(k))
            except (TypeError, ValueError) as exc:
                raise _nested(exc, f"key {_short_repr(k)}") from None
            if x is None:
                parts.append(_NULL_FRAME)
                continue
            try:
                _write_frame(parts, venc(x))
            except (TypeError, ValueError) as exc:
                raise _nested(exc, f"value of key {_short_repr(k)}") from None
        return b"".join(parts)

    def dec(self, buf: Any) -> dict:
        count, pos = _read_size(buf, 0)
        kdec, vdec = self._key.dec, self._value.dec
        out = {}
        for _ in range(count):
            kb, pos = _read_frame(buf, pos)
            if kb is None:
                raise ValueError("a map key is None")
            vb, pos = _read_frame(buf, pos)
            out[kdec(kb)] = None if vb is None else vdec(vb)
        _check_end(buf, pos)
        return out


class _StructCodec(_Codec):
    """ROW and TUPLE: a little-endian header int (rows: RowKind in bits 0-1, then one null bit
    per field; tuples: the null bits), then each non-None field, framed unless fixed-width."""

    def __init__(self, type_info: RowTypeInfo | TupleTypeInfo) -> None:
        self.is_row = isinstance(type_info, RowTypeInfo)
        types = type_info.get_field_types()
        self.arity = len(types)
        self.codecs = [_codec_for(t) for t in types]
        self.widths = [c.width for c in self.codecs]
        if self.is_row:
            self.names = tuple(type_info.get_field_names())
            self.by_name = type_info.has_field_names()
            self.row_fields = self.names if self.by_name else None
            self.field_nullable = [True] * self.arity
            self._shift = 2
        else:
            self.names = tuple(f"f{i}" for i in range(self.arity))
            self.by_name = False
            self.field_nullable = [t._nullable for t in types]
            self._shift = 0
        self._header_bytes = max(1, (self.arity + self._shift + 7) // 8)
        self.what = repr(type_info)
        self._fields = list(
            zip(self.codecs, self.widths, self.field_nullable, self.names, strict=True)
        )
        self._compiled = 0 < self.arity <= _MAX_COMPILED_ARITY
        if self._compiled:
            self.enc, self.dec = _compile_struct(self, self.enc_generic, self.dec_generic)
        else:
            self.enc, self.dec = self.enc_generic, self.dec_generic

    def _values(self, v: Any) -> tuple[Any, int]:
        """The field values in declared order, and the RowKind value (0 for tuples)."""
        kind = 0
        if isinstance(v, tuple):
            values = v
        elif isinstance(v, Row):
            values = v._values
            if self.is_row:
                kind = v._row_kind.value
                fields = v._fields
                if self.by_name and fields is not None and fields != self.names:
                    try:
                        values = [v[n] for n in self.names]
                    except KeyError:
                        raise ValueError(
                            f"row has fields {list(fields)}, the type declares {list(self.names)}"
                        ) from None
        elif isinstance(v, list):
            values = v
        elif self.is_row and isinstance(v, Mapping):
            values = [v.get(n) for n in self.names]
        elif self.is_row and hasattr(v, "__dict__") and not isinstance(v, type):
            attrs = vars(v)
            values = [attrs.get(n) for n in self.names]
        else:
            accepted = "Row, tuple, list, dict or object" if self.is_row else "tuple, list or Row"
            raise TypeError(f"expected a {accepted} for {self.what}, got {_type_name(v)}")
        if len(values) != self.arity:
            raise ValueError(f"expected {self.arity} fields for {self.what}, got {len(values)}")
        return values, kind

    def top_level(self, serialize: Callable, deserialize: Callable) -> tuple[Callable, Callable]:
        if self._compiled:
            return _compile_struct(self, serialize, deserialize, top=True)
        return serialize, deserialize

    def enc_generic(self, v: Any) -> bytes:
        """The reference encoder; the compiled fast path hands it everything unusual."""
        values, kind = self._values(v)
        parts: list = [b""]
        append = parts.append
        mask = 0
        bit = 1
        for (codec, width, nullable, name), x in zip(self._fields, values):  # noqa: B905
            if x is None:
                if not nullable:
                    raise ValueError(f"field {name!r} of {self.what} must not be None")
                mask |= bit
            else:
                try:
                    b = codec.enc(x)
                except (TypeError, ValueError) as exc:
                    raise _nested(exc, f"field {name!r}") from None
                if not width:
                    n = len(b) + 1
                    append(_BYTE[n] if n < 255 else b"\xff" + _U32.pack(n))
                append(b)
            bit <<= 1
        header = (mask << self._shift) | kind
        nh = self._header_bytes
        parts[0] = _BYTE[header] if nh == 1 else header.to_bytes(nh, "little")
        return b"".join(parts)

    def dec_generic(self, buf: Any) -> Any:
        """The reference decoder; the compiled fast path hands it everything unusual."""
        nh = self._header_bytes
        header = buf[0] if nh == 1 else int.from_bytes(buf[:nh], "little")
        mask = header >> self._shift
        if mask >> self.arity:
            raise ValueError("null bitmap has bits beyond the last field")
        pos = nh
        out = []
        append = out.append
        for codec, width, _nullable, _name in self._fields:
            if mask & 1:
                append(None)
            elif width:
                append(codec.unpack_at(buf, pos))
                pos += width
            else:
                n, pos = _read_size(buf, pos)
                if n == 0:
                    raise ValueError("a row/tuple field has an empty frame")
                end = pos + n - 1
                append(codec.dec(buf[pos:end]))
                pos = end
            mask >>= 1
        _check_end(buf, pos)
        if not self.is_row:
            return tuple(out)
        row = object.__new__(Row)
        row._values = tuple(out)
        row._fields = self.row_fields
        row._row_kind = _KINDS[header & 3]
        return row


_MAX_COMPILED_ARITY = 64


def _compile_struct(
    codec: _StructCodec, fallback_enc: Callable, fallback_dec: Callable, top: bool = False
) -> tuple[Callable, Callable]:
    """Generate straight-line encode/decode functions for one ROW/TUPLE type.

    A loop over field codecs costs a few hundred ns per record in Python; unrolled code with
    the common scalar cases (str, int, float) inlined runs about twice as fast. The generated
    functions only handle the plain case -- a tuple or a Row of the declared arity whose
    fields have their exact Python types -- and hand anything else, including every error, to
    the fallbacks (the generic codec methods, or at the top level the serializer's generic
    functions), which produce the same bytes or the precise error. ``top`` adds the top-level
    None convention (``None`` <-> ``b""``).
    """
    n_fields = codec.arity
    ns: dict[str, Any] = {
        "Row": Row,
        "BYTE": _BYTE,
        "FF": _EMPTY_STRING,
        "SIZE": _size,
        "new": object.__new__,
        "KINDS": _KINDS,
        "NAMES": codec.names,
        "FIELDS": codec.row_fields if codec.is_row else None,
        "fallback_enc": fallback_enc,
        "fallback_dec": fallback_dec,
    }
    unpack_vars = "".join(f"f{i}, " for i in range(n_fields))
    kind_expr = "v._row_kind.value" if codec.is_row else "0"
    row_ok = (
        " and (v._fields is None or v._fields == NAMES)" if codec.is_row and codec.by_name else ""
    )
    enc = ["def enc(v):"]
    if top:
        enc += ["    if v is None:", '        return b""']
    enc += [
        "    try:",
        "        t = type(v)",
        "        if t is tuple:",
        f"            {unpack_vars}= v",
        "            kind = 0",
        f"        elif t is Row{row_ok}:",
        f"            {unpack_vars}= v._values",
        f"            kind = {kind_expr}",
        "        else:",
        "            return fallback_enc(v)",
        "        mask = 0",
    ]
    dec = ["def dec(buf):"]
    if top:
        dec += ["    if not buf:", "        return None"]
    header_expr = (
        "buf[0]"
        if codec._header_bytes == 1
        else f'int.from_bytes(buf[:{codec._header_bytes}], "little")'
    )
    dec += [
        "    try:",
        f"        header = {header_expr}",
        f"        mask = header >> {codec._shift}",
        f"        if mask >> {n_fields}:",
        "            return fallback_dec(buf)",
        f"        pos = {codec._header_bytes}",
    ]
    out_parts = []
    for i, (field_codec, width, nullable, _name) in enumerate(codec._fields):
        bit = 1 << i
        ns[f"enc{i}"] = field_codec.enc
        ns[f"dec{i}"] = field_codec.dec
        if isinstance(field_codec, (_IntCodec, _FloatCodec)):
            ns[f"pack{i}"] = field_codec._st.pack
            ns[f"unpack{i}"] = field_codec._st.unpack_from
        elif width:
            ns[f"unpack_at{i}"] = field_codec.unpack_at
        # encode
        if isinstance(field_codec, _StringCodec):
            body = [
                f"if type(f{i}) is str:",
                f'    b{i} = f{i}.encode("utf-8", "surrogatepass") or FF',
                "else:",
                f"    b{i} = enc{i}(f{i})",
            ]
        elif isinstance(field_codec, _IntCodec):
            body = [f"b{i} = pack{i}(f{i}) if type(f{i}) is int else enc{i}(f{i})"]
        elif isinstance(field_codec, _FloatCodec):
            body = [
                f"b{i} = pack{i}(f{i}) if type(f{i}) is float and f{i} == f{i} else enc{i}(f{i})"
            ]
        else:
            body = [f"b{i} = enc{i}(f{i})"]
        if not width:
            body += [f"n = len(b{i}) + 1", f"h{i} = BYTE[n] if n < 255 else SIZE(n)"]
            out_parts += [f"h{i}", f"b{i}"]
        else:
            out_parts.append(f"b{i}")
        if nullable:
            empty = [f'b{i} = b""'] + ([] if width else [f'h{i} = b""'])
            enc += [f"        if f{i} is None:", f"            mask |= {bit}"]
            enc += [f"            {line}" for line in empty]
            enc += ["        else:"] + [f"            {line}" for line in body]
        else:
            enc += [f"        if f{i} is None:", "            return fallback_enc(v)"]
            enc += [f"        {line}" for line in body]
        # decode
        if isinstance(field_codec, (_IntCodec, _FloatCodec)):
            read = [f"f{i} = unpack{i}(buf, pos)[0]", f"pos += {width}"]
        elif width:
            read = [f"f{i} = unpack_at{i}(buf, pos)", f"pos += {width}"]
        elif isinstance(field_codec, _StringCodec):
            read = [
                "n = buf[pos]",
                "if not 1 < n < 255:",
                "    return fallback_dec(buf)",
                "s = buf[pos + 1 : pos + n]",
                f'f{i} = str(s, "utf-8", "surrogatepass") if s != FF else ""',
                "pos += n",
            ]
        else:
            read = [
                "n = buf[pos]",
                "if not 0 < n < 255:",
                "    return fallback_dec(buf)",
                f"f{i} = dec{i}(buf[pos + 1 : pos + n])",
                "pos += n",
            ]
        dec += [f"        if mask & {bit}:", f"            f{i} = None", "        else:"]
        dec += [f"            {line}" for line in read]
    header_bytes = (
        "BYTE[header]"
        if codec._header_bytes == 1
        else f'header.to_bytes({codec._header_bytes}, "little")'
    )
    enc += [f"        header = (mask << {codec._shift}) | kind"]
    enc += [f'        return b"".join(({header_bytes}, {", ".join(out_parts)}))']
    enc += ["    except Exception:", "        return fallback_enc(v)"]
    values = "(" + unpack_vars + ")"
    dec += ["        if pos != len(buf):", "            return fallback_dec(buf)"]
    if codec.is_row:
        dec += [
            "        row = new(Row)",
            f"        row._values = {values}",
            "        row._fields = FIELDS",
            "        row._row_kind = KINDS[header & 3]",
            "        return row",
        ]
    else:
        dec += [f"        return {values}"]
    dec += ["    except Exception:", "        return fallback_dec(buf)"]
    source = "\n".join(enc) + "\n\n" + "\n".join(dec) + "\n"
    exec(compile(source, f"<state serializer for {codec.what}>", "exec"), ns)  # noqa: S102
    return ns["enc"], ns["dec"]


_INT_CODECS = {
    BasicType.BYTE: (">b", "Byte", 8),
    BasicType.SHORT: (">h", "Short", 16),
    BasicType.INT: (">i", "Integer", 32),
    BasicType.LONG: (">q", "Long", 64),
}
_BASIC_CODECS: dict[BasicType, Callable[[], _Codec]] = {
    BasicType.BOOLEAN: _BoolCodec,
    BasicType.FLOAT: lambda: _FloatCodec(">f", "Float"),
    BasicType.DOUBLE: lambda: _FloatCodec(">d", "Double"),
    BasicType.STRING: _StringCodec,
    BasicType.CHAR: _CharCodec,
    BasicType.BIG_INT: _BigIntCodec,
    BasicType.BIG_DEC: _BigDecCodec,
    BasicType.INSTANT: _InstantCodec,
}
_PACKED = {
    BasicType.BOOLEAN: ("?", frozenset({bool})),
    BasicType.SHORT: ("h", frozenset({int})),
    BasicType.INT: ("i", frozenset({int})),
    BasicType.LONG: ("q", frozenset({int})),
    BasicType.FLOAT: ("f", frozenset({float, int})),
    BasicType.DOUBLE: ("d", frozenset({float, int})),
}


def _codec_for(t: TypeInformation) -> _Codec:
    """Build the codec tree of a type info."""
    if isinstance(t, ExternalTypeInfo):
        return _codec_for(t._type_info)
    if isinstance(t, BasicTypeInfo):
        basic = t._basic_type
        if basic in _INT_CODECS:
            return _IntCodec(*_INT_CODECS[basic])
        return _BASIC_CODECS[basic]()
    if isinstance(t, DateTypeInfo):
        return _DateCodec()
    if isinstance(t, TimeTypeInfo):
        return _TimeCodec()
    if isinstance(t, TimestampTypeInfo):
        return _TimestampCodec()
    if isinstance(t, PickledBytesTypeInfo):
        return _PickledCodec()
    if isinstance(t, (RowTypeInfo, TupleTypeInfo)):
        return _StructCodec(t)
    if isinstance(t, PrimitiveArrayTypeInfo):
        basic = t.get_element_type()._basic_type  # type: ignore[attr-defined]
        if basic is BasicType.BYTE:
            return _BytesCodec()
        elem = _codec_for(t.get_element_type())
        if basic in _PACKED:
            return _PackedArrayCodec(elem, *_PACKED[basic])
        return _ListCodec(elem, False, repr(t))
    if isinstance(t, (BasicArrayTypeInfo, ObjectArrayTypeInfo)):
        return _ListCodec(_codec_for(t.get_element_type()), True, repr(t))
    if isinstance(t, ListTypeInfo):
        elem_type = t.get_element_type()
        return _ListCodec(_codec_for(elem_type), elem_type._nullable, repr(t))
    if isinstance(t, MapTypeInfo):
        return _MapCodec(_codec_for(t.get_key_type()), _codec_for(t.get_value_type()), repr(t))
    raise TypeError(f"no state serializer for type {t!r}")


# ------------------------------------------------------------------------------------------
# Canonical tagged key encoding (undeclared key types)
# ------------------------------------------------------------------------------------------

_T_NONE = 0
_T_FALSE = 1
_T_TRUE = 2
_T_INT = 3
_T_BIG_INT = 4
_T_FLOAT = 5
_T_STR = 6
_T_BYTES = 7
_T_TUPLE = 8
_T_ROW = 9

_TAG_INT = struct.Struct(">Bq")
_TAG_FLOAT = struct.Struct(">Bd")
_KEY_NONE = b"\x00"
_KEY_FALSE = b"\x01"
_KEY_TRUE = b"\x02"
_KEY_NAN = _TAG_FLOAT.pack(_T_FLOAT, math.nan)
_STR_TAG = b"\x06"
_BYTES_TAG = b"\x07"
_STR_FRAME_HEADS = tuple(bytes((n, _T_STR)) for n in range(256))
_INT_FRAME = struct.Struct(">BBq")
_INT_FRAME_SIZE = _TAG_INT.size + 1  # frame header value: content length + 1

_KEY_KINDS = "str, int, float, bool, bytes, None, or tuples/Rows of these"


def _key_bytes(v: Any) -> bytes:
    """The canonical tagged bytes of one key."""
    t = type(v)
    if t is str:
        return _STR_TAG + v.encode("utf-8", "surrogatepass")
    if t is int:
        try:
            return _TAG_INT.pack(_T_INT, v)
        except struct.error:
            return _BYTE[_T_BIG_INT] + v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)
    if t is tuple:
        return _key_sequence(_T_TUPLE, v)
    return _key_bytes_slow(v)


def _key_bytes_slow(v: Any) -> bytes:
    if v is None:
        return _KEY_NONE
    if isinstance(v, (bool, np.bool_)):
        return _KEY_TRUE if v else _KEY_FALSE
    if isinstance(v, str):
        return _key_bytes(str(v))
    if isinstance(v, (int, np.integer)):
        return _key_bytes(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return _KEY_NAN if v != v else _TAG_FLOAT.pack(_T_FLOAT, v)
    if isinstance(v, (bytes, bytearray)):
        return _BYTES_TAG + v
    if isinstance(v, tuple):
        return _key_sequence(_T_TUPLE, v)
    if isinstance(v, Row):
        fields = v._fields
        head = _BYTE[_T_ROW] + (_NULL_FRAME if fields is None else _key_sequence(_T_TUPLE, fields))
        return head + _key_sequence(_T_TUPLE, v._values)[1:]
    raise TypeError(
        f"cannot use a key of type {type(v).__qualname__} in keyed state: {_short_repr(v)}. "
        f"Undeclared keys must be {_KEY_KINDS}; declare the key type for other values"
    )


def _key_sequence(tag: int, items: Any) -> bytes:
    """Tag, size and one frame per item; str and int64 items are framed inline (hot path)."""
    count = len(items)
    parts = [_BYTE[tag], _BYTE[count] if count < 255 else _size(count)]
    append = parts.append
    for item in items:
        t = type(item)
        if t is str:
            b = item.encode("utf-8", "surrogatepass")
            n = len(b) + 2
            if n < 255:
                append(_STR_FRAME_HEADS[n])
                append(b)
                continue
        elif t is int:
            try:
                append(_INT_FRAME.pack(_INT_FRAME_SIZE, _T_INT, item))
                continue
            except struct.error:
                pass  # beyond int64: the general path below
        try:
            b = _key_bytes(item)
        except TypeError as exc:
            raise _nested(exc, f"key element {_index_of(items, item)}") from None
        n = len(b) + 1
        append(_BYTE[n] if n < 255 else b"\xff" + _U32.pack(n))
        append(b)
    return b"".join(parts)


def _index_of(items: Any, item: Any) -> int:
    return next(i for i, x in enumerate(items) if x is item)


def _key_items(buf: Any, pos: int) -> tuple[list, int]:
    count, pos = _read_size(buf, pos)
    items: list = []
    append = items.append
    for _ in range(count):
        n = buf[pos]
        if 1 < n < 255:
            end = pos + n
            tag = buf[pos + 1]
            if tag == _T_STR:
                append(str(buf[pos + 2 : end], "utf-8", "surrogatepass"))
            elif tag == _T_INT and n == _INT_FRAME_SIZE:
                append(_I64.unpack_from(buf, pos + 2)[0])
            else:
                append(_key_from_bytes(buf[pos + 1 : end]))
            pos = end
        else:
            item, pos = _read_frame(buf, pos)
            if item is None or not len(item):
                raise ValueError("a key element frame is empty")
            append(_key_from_bytes(item))
    return items, pos


def _key_from_bytes(buf: Any) -> Any:
    tag = buf[0]
    if tag == _T_STR:
        return str(buf[1:], "utf-8", "surrogatepass")
    if tag == _T_INT:
        return _TAG_INT.unpack(buf)[1]
    if tag == _T_TUPLE:
        items, pos = _key_items(buf, 1)
        _check_end(buf, pos)
        return tuple(items)
    if tag == _T_NONE or tag == _T_FALSE or tag == _T_TRUE:
        if len(buf) != 1:
            raise ValueError("a None/bool key has no payload")
        return None if tag == _T_NONE else tag == _T_TRUE
    if tag == _T_FLOAT:
        v = _TAG_FLOAT.unpack(buf)[1]
        return v if v == v else NAN_KEY
    if tag == _T_BYTES:
        return bytes(buf[1:])
    if tag == _T_BIG_INT:
        if len(buf) < 2:
            raise ValueError("a big int key has no digits")
        return int.from_bytes(buf[1:], "big", signed=True)
    if tag == _T_ROW:
        if buf[1] == 0:
            fields, pos = None, 2
        else:
            if buf[1] != _T_TUPLE:
                raise ValueError("malformed Row key field names")
            names, pos = _key_items(buf, 2)
            fields = tuple(names)
        values, pos = _key_items(buf, pos)
        _check_end(buf, pos)
        row = object.__new__(Row)
        row._values = tuple(values)
        row._fields = fields
        row._row_kind = RowKind.INSERT
        return row
    raise ValueError(f"unknown key tag {tag}")


#: one tagged int key as a numpy record (tag, then the big-endian int64), for bulk decoding
_TAGGED_INT64 = np.dtype([("tag", "u1"), ("value", ">i8")])


class _TaggedKeyCodec(_Codec):
    nullable = True
    what = "key"

    enc = staticmethod(_key_bytes)  # type: ignore[assignment]
    dec = staticmethod(_key_from_bytes)  # type: ignore[assignment]

    def int_layout(self) -> tuple[bytes, str] | None:
        return _BYTE[_T_INT], ">q"  # as _key_bytes: the tag, then the int64

    def dec_fixed(self, data: np.ndarray, width: int) -> np.ndarray | None:
        # int keys (tag, then 8 big-endian bytes), the common case of keys restored in bulk
        if width != _TAG_INT.size:
            return None
        items = data.view(_TAGGED_INT64)  # a view: no copy of the packed 8-of-9 bytes
        if not (items["tag"] == _T_INT).all():
            return None
        return items["value"].astype(np.int64)

    def top_level(self, serialize: Callable, deserialize: Callable) -> tuple[Callable, Callable]:
        def fast_serialize(v: Any) -> bytes:
            if type(v) is str:
                return _STR_TAG + v.encode("utf-8", "surrogatepass")
            return serialize(v)

        def fast_deserialize(data: Any) -> Any:
            if data:
                tag = data[0]
                try:
                    if tag == _T_STR:
                        return str(data[1:], "utf-8", "surrogatepass")
                    if tag == _T_TUPLE:
                        items, pos = _key_items(data, 1)
                        if pos == len(data):
                            return tuple(items)
                    elif tag == _T_INT and len(data) == _TAG_INT.size:
                        return _TAG_INT.unpack(data)[1]
                except Exception:
                    pass  # the generic path raises the precise error
            return deserialize(data)

        return fast_serialize, fast_deserialize


# ------------------------------------------------------------------------------------------
# Public serializer objects
# ------------------------------------------------------------------------------------------

_DECODE_ERRORS = (
    struct.error,
    IndexError,
    ValueError,
    ArithmeticError,
    pickle.UnpicklingError,
    EOFError,
)


class TypeSerializer:
    """Turns the values of one type into bytes and back; obtain with :func:`serializer_for`.

    ``serialize(None)`` is ``b""`` and ``deserialize(b"")`` is None for every type.
    Serializers are immutable and shared; they pickle as their type info.

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> s = serializer_for(Types.MAP(Types.STRING(), Types.LIST(Types.LONG())))
        >>> s.deserialize(s.serialize({"a": [1, 2], "b": []}))
        {'a': [1, 2], 'b': []}
    """

    def __init__(self, type_info: TypeInformation | None, codec: _Codec, is_key: bool) -> None:
        self.type_info = type_info
        self._enc = codec.enc
        self._dec = codec.dec
        self._is_key = is_key
        #: ``(prefix, struct format)`` of exact ints, or None (see ``_Codec.int_layout``)
        self.int_layout = codec.int_layout()
        self._codec = codec
        # Per-record hot path: plain functions in the instance dict (they shadow the methods
        # below, which stay the generic reference) save a call level for common types.
        fast = codec.top_level(self._serialize, self._deserialize)
        self.serialize, self.deserialize = fast  # type: ignore[method-assign]

    def serialize(self, value: Any) -> bytes:
        """The bytes of ``value``; TypeError/ValueError when it does not fit the type."""
        return self._serialize(value)

    def deserialize(self, data: bytes | memoryview) -> Any:
        """The value of bytes made by :meth:`serialize`; ValueError when they are malformed."""
        return self._deserialize(data)

    def deserialize_array(self, array: Any) -> list:
        """:meth:`deserialize` of every item of a binary Arrow (chunked) array, as a list.

        Chunks whose items all have one width are decoded in bulk when the type allows it
        (integers, int keys): restoring state, that is most of the work per row.
        """
        out: list = []
        for part in self._decoded_chunks(array):
            out.extend(part.tolist() if isinstance(part, memoryview) else part)
        return out

    def deserialize_iter(self, array: Any) -> Iterable[Any]:
        """:meth:`deserialize` of every item of a binary Arrow (chunked) array, as an iterable
        to be consumed once (e.g. by ``zip`` into ``dict.update``).

        Why not a list: bulk-decoded integers come out of a native int64 buffer one Python int
        at a time, so a restore builds no list of millions of references, and touches each new
        int once instead of three times (list, iteration, list release).
        """
        parts = self._decoded_chunks(array)
        return parts[0] if len(parts) == 1 else itertools.chain.from_iterable(parts)

    def _decoded_chunks(self, array: Any) -> list[memoryview | list]:
        """Per chunk: a memoryview of bulk-decoded ints (iterating yields Python ints), or
        the list of deserialized items."""
        parts: list[memoryview | list] = []
        for chunk in array.chunks if hasattr(array, "chunks") else [array]:
            decoded = self._dec_fixed_chunk(chunk)
            if decoded is not None:
                parts.append(memoryview(decoded))
            else:
                parts.append(list(map(self.deserialize, chunk.to_pylist())))
        return parts

    def _dec_fixed_chunk(self, chunk: Any) -> np.ndarray | None:
        n = len(chunk)
        if not n or chunk.null_count:
            return None
        buffers = chunk.buffers()
        if len(buffers) != 3 or buffers[2] is None:
            return None
        offset_bytes = {pa.binary(): 4, pa.large_binary(): 8}.get(chunk.type)
        if offset_bytes is None:
            return None
        offsets = np.frombuffer(buffers[1], dtype=f"<i{offset_bytes}")
        offsets = offsets[chunk.offset : chunk.offset + n + 1]
        first, last = int(offsets[0]), int(offsets[-1])
        size = (last - first) // n
        if not size or size * n != last - first or not (np.diff(offsets) == size).all():
            return None
        data = np.frombuffer(buffers[2], dtype=np.uint8)[first:last]
        return self._codec.dec_fixed(data, size)

    def _serialize(self, value: Any) -> bytes:
        if value is None:
            return b""
        return self._enc(value)

    def _deserialize(self, data: bytes | memoryview) -> Any:
        if not data:
            return None
        try:
            return self._dec(data)
        except _DECODE_ERRORS as exc:
            raise ValueError(
                f"malformed state bytes for {self._describe()}: {type(exc).__name__}: {exc}"
            ) from exc

    def serialize_checked(self, value: Any, state_name: str, key: Any) -> bytes:
        """:meth:`serialize`, raising :class:`StateTypeError` naming the state and key."""
        try:
            return self.serialize(value)
        except (TypeError, ValueError) as exc:
            raise StateTypeError(state_name, key, value, self.type_info, exc) from exc

    def _describe(self) -> str:
        if self.type_info is None:
            return "an undeclared key"
        return repr(self.type_info)

    def __reduce__(self) -> tuple:
        return (key_serializer_for if self._is_key else serializer_for, (self.type_info,))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TypeSerializer)
            and other._is_key == self._is_key
            and other.type_info == self.type_info
        )

    def __hash__(self) -> int:
        return hash((self._is_key, self.type_info))

    def __repr__(self) -> str:
        kind = "key serializer" if self._is_key else "serializer"
        return f"<{kind} for {self._describe()}>"


_PICKLED = PickledBytesTypeInfo()
_CACHE: dict[tuple[bool, TypeInformation | None], TypeSerializer] = {}


def _check_type_info(type_info: Any) -> None:
    if type_info is not None and not isinstance(type_info, TypeInformation):
        raise TypeError(f"expected a TypeInformation (Types.*()) or None, got {type_info!r}")


def serializer_for(type_info: TypeInformation | None) -> TypeSerializer:
    """The value serializer of a declared type; None means ``Types.PICKLED_BYTE_ARRAY()``.

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> serializer_for(Types.LONG()).serialize(1)
        b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01'
    """
    _check_type_info(type_info)
    cache_key = (False, type_info)
    serializer = _CACHE.get(cache_key)
    if serializer is None:
        codec = _codec_for(_PICKLED if type_info is None else type_info)
        serializer = _CACHE.setdefault(cache_key, TypeSerializer(type_info, codec, False))
    return serializer


def key_serializer_for(type_info: TypeInformation | None) -> TypeSerializer:
    """The serializer of keys (and map-state keys): equal keys give equal bytes everywhere.

    None or ``PICKLED_BYTE_ARRAY`` -> the canonical tagged encoding (never pickle); a declared
    type -> its typed encoding.

    Example::

        >>> k = key_serializer_for(None)
        >>> k.serialize("hi"), k.serialize(7)
        (b'\\x06hi', b'\\x03\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x07')
    """
    _check_type_info(type_info)
    cache_key = (True, type_info)
    serializer = _CACHE.get(cache_key)
    if serializer is None:
        inner = type_info._type_info if isinstance(type_info, ExternalTypeInfo) else type_info
        if inner is None or isinstance(inner, PickledBytesTypeInfo):
            codec: _Codec = _TaggedKeyCodec()
        else:
            codec = _codec_for(inner)
        serializer = _CACHE.setdefault(cache_key, TypeSerializer(type_info, codec, True))
    return serializer


def pack_frames(chunks: Iterable[bytes | memoryview | None]) -> bytes:
    """Frame byte strings back to back (None allowed): how a backend can store list state.

    Frames need no count, so appending elements is concatenation:
    ``stored + pack_frames([new])``; each chunk is typically ``TtlPolicy.on_write(...)`` or
    ``serializer.serialize(element)``.

    Example::

        >>> packed = pack_frames([b"ab", None, b""])
        >>> packed, [None if c is None else bytes(c) for c in unpack_frames(packed)]
        (b'\\x03ab\\x00\\x01', [b'ab', None, b''])
    """
    parts: list = []
    for chunk in chunks:
        if chunk is None:
            parts.append(_NULL_FRAME)
        else:
            _write_frame(parts, chunk)
    return b"".join(parts)


def unpack_frames(data: bytes | memoryview) -> list[memoryview | None]:
    """The chunks of :func:`pack_frames` output, as zero-copy memoryviews (None for None)."""
    view = memoryview(data)
    out: list[memoryview | None] = []
    pos = 0
    end = len(view)
    while pos < end:
        chunk, pos = _read_frame(view, pos)
        out.append(chunk)
    return out
