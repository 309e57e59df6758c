"""Type information for records, mirroring ``pyflink.common.typeinfo``.

A job declares the type of a stream with ``Types.*`` (``output_type=`` on ``map``,
``type_info=`` on ``from_collection`` and so on). flowrun uses the declaration for one
thing PyFlink uses it for too: to pick how records are serialized between subtasks.
Declared types travel as typed Arrow columns (compact, no per-record pickling, and a record
that does not fit the declaration fails where it is produced); undeclared streams, or
``Types.PICKLED_BYTE_ARRAY()``, travel pickled. See :mod:`flowrun.core.records`.

Each :class:`TypeInformation` therefore knows its Arrow type (:meth:`to_arrow_type`).
Choices where Python and Arrow do not meet one to one:

* ``BIG_INT`` and ``BIG_DEC`` travel as decimal *strings*: Java's BigInteger/BigDecimal are
  unbounded and BigDecimal keeps its own scale per value, which a fixed-precision
  ``decimal128(p, s)`` column cannot reproduce (``Decimal("1.50")`` would come back as
  ``Decimal("1.500000000000000000")``). Strings round-trip every value exactly.
* ``CHAR`` is a one-character string column.
* ``PRIMITIVE_ARRAY(Types.BYTE())`` is ``bytes`` in Python and an Arrow ``binary`` column.
* ``SQL_TIMESTAMP`` is ``timestamp('us')`` without zone: naive datetimes round-trip exactly,
  zone-aware ones are stored as their UTC wall time.
* ``INSTANT`` is ``timestamp('ns', tz='UTC')`` (epoch nanoseconds).
* Nested ``ROW``/``TUPLE`` become Arrow structs; at the top level of a stream the
  serializer spreads their fields over one column each instead.

Equality and hashing are structural, so type infos can key caches and be compared across
processes after pickling. Unnamed rows have Flink's default field names ``f0, f1, ...``, so
``Types.ROW([Types.INT()]) == Types.ROW_NAMED(["f0"], [Types.INT()])``.

Example::

    >>> from flowrun.core.typeinfo import Types
    >>> t = Types.ROW_NAMED(["word", "count"], [Types.STRING(), Types.LONG()])
    >>> t
    RowTypeInfo(word: String, count: Long)
    >>> t.get_field_index("count"), t.to_arrow_type()
    (1, StructType(struct<word: string, count: int64>))
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import pyarrow as pa

__all__ = [
    "BasicArrayTypeInfo",
    "BasicType",
    "BasicTypeInfo",
    "DateTypeInfo",
    "ExternalTypeInfo",
    "InstantTypeInfo",
    "ListTypeInfo",
    "MapTypeInfo",
    "ObjectArrayTypeInfo",
    "PickledBytesTypeInfo",
    "PrimitiveArrayTypeInfo",
    "RowTypeInfo",
    "SqlTimeTypeInfo",
    "TimeTypeInfo",
    "TimestampTypeInfo",
    "TupleTypeInfo",
    "TypeInformation",
    "Types",
    "normalize_type",
]


class TypeInformation:
    """Base of all type infos: structural equality, hashing, pickling and an Arrow type.

    Subclasses describe themselves with :meth:`_key` (the structure that equality and
    hashing compare) and :meth:`to_arrow_type`. ``_nullable`` says whether ``None`` is a
    valid value where the type stands on its own (a tuple field, a list element, a record);
    fields of a ``Row`` are always nullable, as in Flink's row serializer.
    """

    _nullable: bool = False

    def _key(self) -> tuple:
        return ()

    def to_arrow_type(self) -> pa.DataType:
        """The Arrow type a value of this type is stored as inside a record batch."""
        raise NotImplementedError(f"{type(self).__name__} has no Arrow representation")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key() == self._key()  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        return type(self).__name__

    __str__ = __repr__


def _check_type_info(value: Any, what: str) -> TypeInformation:
    if not isinstance(value, TypeInformation):
        raise TypeError(f"{what} must be a TypeInformation (use Types.*()), got {value!r}")
    return value


class BasicType(Enum):
    """The basic (scalar) types; the values are Flink's Java class names, used in reprs."""

    STRING = "String"
    BYTE = "Byte"
    BOOLEAN = "Boolean"
    SHORT = "Short"
    INT = "Integer"
    LONG = "Long"
    FLOAT = "Float"
    DOUBLE = "Double"
    CHAR = "Char"
    BIG_INT = "BigInteger"
    BIG_DEC = "BigDecimal"
    INSTANT = "Instant"


_BASIC_ARROW = {
    BasicType.STRING: pa.string(),
    BasicType.BYTE: pa.int8(),
    BasicType.BOOLEAN: pa.bool_(),
    BasicType.SHORT: pa.int16(),
    BasicType.INT: pa.int32(),
    BasicType.LONG: pa.int64(),
    BasicType.FLOAT: pa.float32(),
    BasicType.DOUBLE: pa.float64(),
    BasicType.CHAR: pa.string(),
    BasicType.BIG_INT: pa.string(),
    BasicType.BIG_DEC: pa.string(),
    BasicType.INSTANT: pa.timestamp("ns", tz="UTC"),
}

# Flink's Java serializers for these accept null; the primitive ones do not.
_NULLABLE_BASIC = frozenset(
    {BasicType.STRING, BasicType.BIG_INT, BasicType.BIG_DEC, BasicType.INSTANT}
)


class BasicTypeInfo(TypeInformation):
    """Scalars: str, int of several widths, float, bool, 1-char str, big int/decimal.

    Example::

        >>> BasicTypeInfo.INT_TYPE_INFO() == Types.INT()
        True
    """

    def __init__(self, basic_type: BasicType) -> None:
        if not isinstance(basic_type, BasicType):
            raise TypeError(f"basic_type must be a BasicType, got {basic_type!r}")
        self._basic_type = basic_type

    @property
    def _nullable(self) -> bool:  # type: ignore[override]
        return self._basic_type in _NULLABLE_BASIC

    def _key(self) -> tuple:
        return (self._basic_type,)

    def __eq__(self, other: object) -> bool:
        # Instant is a BasicTypeInfo subclass in PyFlink; compare by the basic type alone.
        return isinstance(other, BasicTypeInfo) and other._basic_type == self._basic_type

    def __hash__(self) -> int:
        return hash(("BasicTypeInfo", self._basic_type))

    def to_arrow_type(self) -> pa.DataType:
        return _BASIC_ARROW[self._basic_type]

    def __repr__(self) -> str:
        return self._basic_type.value

    __str__ = __repr__

    @staticmethod
    def STRING_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.STRING)

    @staticmethod
    def BOOLEAN_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.BOOLEAN)

    @staticmethod
    def BYTE_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.BYTE)

    @staticmethod
    def SHORT_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.SHORT)

    @staticmethod
    def INT_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.INT)

    @staticmethod
    def LONG_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.LONG)

    @staticmethod
    def FLOAT_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.FLOAT)

    @staticmethod
    def DOUBLE_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.DOUBLE)

    @staticmethod
    def CHAR_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.CHAR)

    @staticmethod
    def BIG_INT_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.BIG_INT)

    @staticmethod
    def BIG_DEC_TYPE_INFO() -> BasicTypeInfo:
        return BasicTypeInfo(BasicType.BIG_DEC)

    @staticmethod
    def INSTANT_TYPE_INFO() -> InstantTypeInfo:
        return InstantTypeInfo(BasicType.INSTANT)


class InstantTypeInfo(BasicTypeInfo):
    """A point in time as ``pyflink.common.time.Instant`` (epoch seconds + nanos)."""

    def __init__(self, basic_type: BasicType = BasicType.INSTANT) -> None:
        super().__init__(basic_type)


class SqlTimeTypeInfo(TypeInformation):
    """Factory for the SQL date/time type infos (``DATE()``, ``TIME()``, ``TIMESTAMP()``)."""

    @staticmethod
    def DATE() -> DateTypeInfo:
        return DateTypeInfo()

    @staticmethod
    def TIME() -> TimeTypeInfo:
        return TimeTypeInfo()

    @staticmethod
    def TIMESTAMP() -> TimestampTypeInfo:
        return TimestampTypeInfo()


class DateTypeInfo(TypeInformation):
    """``datetime.date`` values, stored as Arrow ``date32`` (days since the epoch)."""

    _nullable = True

    def to_arrow_type(self) -> pa.DataType:
        return pa.date32()


class TimeTypeInfo(TypeInformation):
    """``datetime.time`` values, stored as Arrow ``time64('us')``."""

    _nullable = True

    def to_arrow_type(self) -> pa.DataType:
        return pa.time64("us")


class TimestampTypeInfo(TypeInformation):
    """``datetime.datetime`` values, stored as Arrow ``timestamp('us')`` (no zone)."""

    _nullable = True

    def to_arrow_type(self) -> pa.DataType:
        return pa.timestamp("us")


_PRIMITIVE_ELEMENTS = (
    BasicType.BOOLEAN,
    BasicType.BYTE,
    BasicType.SHORT,
    BasicType.INT,
    BasicType.LONG,
    BasicType.FLOAT,
    BasicType.DOUBLE,
    BasicType.CHAR,
)
_BASIC_ARRAY_ELEMENTS = (*_PRIMITIVE_ELEMENTS, BasicType.STRING)


class _ElementTypeInfo(TypeInformation):
    """Shared shape of the array and list infos: one element type, a list column."""

    _label = ""

    def __init__(self, element_type: TypeInformation) -> None:
        self._element_type = _check_type_info(element_type, "element_type")

    def get_element_type(self) -> TypeInformation:
        return self._element_type

    def _key(self) -> tuple:
        return (self._element_type,)

    def to_arrow_type(self) -> pa.DataType:
        return pa.list_(self._element_type.to_arrow_type())

    def __repr__(self) -> str:
        return f"{self._label}<{self._element_type!r}>"

    __str__ = __repr__


def _require_basic(element_type: Any, allowed: tuple, what: str) -> TypeInformation:
    _check_type_info(element_type, "element_type")
    if not (
        isinstance(element_type, BasicTypeInfo)
        and type(element_type) is BasicTypeInfo
        and element_type._basic_type in allowed
    ):
        names = ", ".join(f"Types.{b.name}()" for b in allowed)
        raise TypeError(f"{what} elements must be one of {names}; got {element_type!r}")
    return element_type


class PrimitiveArrayTypeInfo(_ElementTypeInfo):
    """Arrays of primitives (Java ``int[]``): a list without None elements; bytes for BYTE."""

    _label = "PrimitiveArrayTypeInfo"

    def __init__(self, element_type: TypeInformation) -> None:
        super().__init__(_require_basic(element_type, _PRIMITIVE_ELEMENTS, "PRIMITIVE_ARRAY"))

    def to_arrow_type(self) -> pa.DataType:
        if self._element_type == BasicTypeInfo(BasicType.BYTE):
            return pa.binary()
        return super().to_arrow_type()


class BasicArrayTypeInfo(_ElementTypeInfo):
    """Arrays of boxed basics (Java ``Integer[]``): a list whose elements may be None."""

    _label = "BasicArrayTypeInfo"

    def __init__(self, element_type: TypeInformation) -> None:
        super().__init__(_require_basic(element_type, _BASIC_ARRAY_ELEMENTS, "BASIC_ARRAY"))


class ObjectArrayTypeInfo(_ElementTypeInfo):
    """Arrays of any element type: a list whose elements may be None."""

    _label = "ObjectArrayTypeInfo"


class ListTypeInfo(_ElementTypeInfo):
    """Python lists of one element type (Java ``List<T>``; elements follow T's nullability)."""

    _label = "ListTypeInfo"

    def __init__(self, element_type: TypeInformation) -> None:
        super().__init__(element_type)

    @property
    def elem_type(self) -> TypeInformation:
        """The element type (PyFlink's attribute name)."""
        return self._element_type


class MapTypeInfo(TypeInformation):
    """Python dicts; keys must not be None, values may be."""

    def __init__(self, key_type_info: TypeInformation, value_type_info: TypeInformation) -> None:
        self._key_type_info = _check_type_info(key_type_info, "key_type_info")
        self._value_type_info = _check_type_info(value_type_info, "value_type_info")

    def get_key_type(self) -> TypeInformation:
        return self._key_type_info

    def get_value_type(self) -> TypeInformation:
        return self._value_type_info

    def _key(self) -> tuple:
        return (self._key_type_info, self._value_type_info)

    def to_arrow_type(self) -> pa.DataType:
        return pa.map_(self._key_type_info.to_arrow_type(), self._value_type_info.to_arrow_type())

    def __repr__(self) -> str:
        return f"MapTypeInfo<{self._key_type_info!r}, {self._value_type_info!r}>"

    __str__ = __repr__


class PickledBytesTypeInfo(TypeInformation):
    """Any picklable Python object; the default when a stream declares no type."""

    _nullable = True

    def to_arrow_type(self) -> pa.DataType:
        return pa.binary()

    def __repr__(self) -> str:
        return "PickledByteArrayTypeInfo"

    __str__ = __repr__


def _check_field_types(field_types: Any) -> list[TypeInformation]:
    if isinstance(field_types, (str, bytes)) or not isinstance(field_types, Sequence):
        raise TypeError(f"field_types must be a list of TypeInformation, got {field_types!r}")
    return [_check_type_info(t, f"field_types[{i}]") for i, t in enumerate(field_types)]


class RowTypeInfo(TypeInformation):
    """Rows (:class:`flowrun.core.row.Row`), optionally with field names.

    Example::

        >>> t = RowTypeInfo([Types.STRING(), Types.INT()], ["name", "age"])
        >>> t.get_field_names(), t.get_field_index("age"), t.get_field_index("x")
        (['name', 'age'], 1, -1)
    """

    def __init__(
        self, field_types: list[TypeInformation], field_names: list[str] | None = None
    ) -> None:
        self._field_types = _check_field_types(field_types)
        if field_names is not None:
            if isinstance(field_names, (str, bytes)) or not isinstance(field_names, Sequence):
                raise TypeError(f"field_names must be a list of str, got {field_names!r}")
            field_names = list(field_names)
            if len(field_names) != len(self._field_types):
                raise ValueError(
                    f"{len(field_names)} field names for {len(self._field_types)} field types"
                )
            for name in field_names:
                if not isinstance(name, str):
                    raise TypeError(f"field names must be str, got {name!r}")
            if len(set(field_names)) != len(field_names):
                raise ValueError(f"duplicate field names in {field_names}")
        self._field_names = field_names

    def get_field_names(self) -> list[str]:
        """The field names; ``f0, f1, ...`` when the row was declared without names."""
        if self._field_names is None:
            return [f"f{i}" for i in range(len(self._field_types))]
        return list(self._field_names)

    def get_field_index(self, field_name: str) -> int:
        """Position of ``field_name``, or -1 when the row has no such field (as in Flink)."""
        try:
            return self.get_field_names().index(field_name)
        except ValueError:
            return -1

    def get_field_types(self) -> list[TypeInformation]:
        return list(self._field_types)

    def has_field_names(self) -> bool:
        """Whether names were declared (``ROW_NAMED``) rather than defaulted."""
        return self._field_names is not None

    def _key(self) -> tuple:
        return (tuple(self._field_types), tuple(self.get_field_names()))

    def to_arrow_type(self) -> pa.DataType:
        return pa.struct(
            [
                (n, t.to_arrow_type())
                for n, t in zip(self.get_field_names(), self._field_types, strict=True)
            ]
        )

    def __repr__(self) -> str:
        if self._field_names is not None:
            inner = ", ".join(
                f"{n}: {t!r}" for n, t in zip(self._field_names, self._field_types, strict=True)
            )
        else:
            inner = ", ".join(repr(t) for t in self._field_types)
        return f"RowTypeInfo({inner})"

    __str__ = __repr__


class TupleTypeInfo(TypeInformation):
    """Python tuples of fixed arity; fields follow their own type's nullability."""

    def __init__(self, field_types: list[TypeInformation]) -> None:
        self._field_types = _check_field_types(field_types)

    def get_field_types(self) -> list[TypeInformation]:
        return list(self._field_types)

    def _key(self) -> tuple:
        return tuple(self._field_types)

    def to_arrow_type(self) -> pa.DataType:
        return pa.struct([(f"f{i}", t.to_arrow_type()) for i, t in enumerate(self._field_types)])

    def __repr__(self) -> str:
        return f"TupleTypeInfo({', '.join(repr(t) for t in self._field_types)})"

    __str__ = __repr__


class ExternalTypeInfo(TypeInformation):
    """A type info handed over by the Table API; behaves as the type it wraps."""

    def __init__(self, type_info: TypeInformation) -> None:
        self._type_info = _check_type_info(type_info, "type_info")

    @property
    def _nullable(self) -> bool:  # type: ignore[override]
        return self._type_info._nullable

    def _key(self) -> tuple:
        return (self._type_info,)

    def to_arrow_type(self) -> pa.DataType:
        return self._type_info.to_arrow_type()

    def __repr__(self) -> str:
        return f"ExternalTypeInfo<{self._type_info!r}>"

    __str__ = __repr__


class Types:
    """Factories for the type infos of the common types; all static, all called with ``()``.

    Example::

        >>> Types.TUPLE([Types.STRING(), Types.LONG()])
        TupleTypeInfo(String, Long)
        >>> Types.MAP(Types.STRING(), Types.LIST(Types.INT()))
        MapTypeInfo<String, ListTypeInfo<Integer>>
    """

    @staticmethod
    def STRING() -> TypeInformation:
        """``str``; None allowed."""
        return BasicTypeInfo.STRING_TYPE_INFO()

    @staticmethod
    def BYTE() -> TypeInformation:
        """``int`` in [-128, 127]; no None."""
        return BasicTypeInfo.BYTE_TYPE_INFO()

    @staticmethod
    def BOOLEAN() -> TypeInformation:
        """``bool``; no None."""
        return BasicTypeInfo.BOOLEAN_TYPE_INFO()

    @staticmethod
    def SHORT() -> TypeInformation:
        """``int`` in the 16-bit range; no None."""
        return BasicTypeInfo.SHORT_TYPE_INFO()

    @staticmethod
    def INT() -> TypeInformation:
        """``int`` in the 32-bit range; no None."""
        return BasicTypeInfo.INT_TYPE_INFO()

    @staticmethod
    def LONG() -> TypeInformation:
        """``int`` in the 64-bit range; no None."""
        return BasicTypeInfo.LONG_TYPE_INFO()

    @staticmethod
    def FLOAT() -> TypeInformation:
        """``float`` stored in 32 bits; no None."""
        return BasicTypeInfo.FLOAT_TYPE_INFO()

    @staticmethod
    def DOUBLE() -> TypeInformation:
        """``float``; no None."""
        return BasicTypeInfo.DOUBLE_TYPE_INFO()

    @staticmethod
    def CHAR() -> TypeInformation:
        """A one-character ``str``; no None."""
        return BasicTypeInfo.CHAR_TYPE_INFO()

    @staticmethod
    def BIG_INT() -> TypeInformation:
        """``int`` of any size; None allowed."""
        return BasicTypeInfo.BIG_INT_TYPE_INFO()

    @staticmethod
    def BIG_DEC() -> TypeInformation:
        """``decimal.Decimal``; None allowed."""
        return BasicTypeInfo.BIG_DEC_TYPE_INFO()

    @staticmethod
    def INSTANT() -> TypeInformation:
        """An ``Instant`` (epoch seconds + nanos); None allowed."""
        return BasicTypeInfo.INSTANT_TYPE_INFO()

    @staticmethod
    def SQL_DATE() -> TypeInformation:
        """``datetime.date``; None allowed."""
        return SqlTimeTypeInfo.DATE()

    @staticmethod
    def SQL_TIME() -> TypeInformation:
        """``datetime.time``; None allowed."""
        return SqlTimeTypeInfo.TIME()

    @staticmethod
    def SQL_TIMESTAMP() -> TypeInformation:
        """``datetime.datetime``; None allowed."""
        return SqlTimeTypeInfo.TIMESTAMP()

    @staticmethod
    def PICKLED_BYTE_ARRAY() -> TypeInformation:
        """Any picklable object, serialized with pickle."""
        return PickledBytesTypeInfo()

    @staticmethod
    def ROW(field_types: list[TypeInformation]) -> RowTypeInfo:
        """Rows with the given field types (names default to ``f0, f1, ...``)."""
        return RowTypeInfo(field_types)

    @staticmethod
    def ROW_NAMED(field_names: list[str], field_types: list[TypeInformation]) -> RowTypeInfo:
        """Rows with the given field names and types."""
        return RowTypeInfo(field_types, field_names)

    @staticmethod
    def TUPLE(field_types: list[TypeInformation]) -> TupleTypeInfo:
        """Tuples with the given field types; a tuple itself must not be None."""
        return TupleTypeInfo(field_types)

    @staticmethod
    def PRIMITIVE_ARRAY(element_type: TypeInformation) -> TypeInformation:
        """Arrays of a primitive type: a list (``bytes`` for BYTE) without None."""
        return PrimitiveArrayTypeInfo(element_type)

    @staticmethod
    def BASIC_ARRAY(element_type: TypeInformation) -> TypeInformation:
        """Arrays of a boxed basic type: a list whose elements may be None."""
        return BasicArrayTypeInfo(element_type)

    @staticmethod
    def OBJECT_ARRAY(element_type: TypeInformation) -> TypeInformation:
        """Arrays of any type: a list whose elements may be None."""
        return ObjectArrayTypeInfo(element_type)

    @staticmethod
    def MAP(key_type_info: TypeInformation, value_type_info: TypeInformation) -> TypeInformation:
        """A dict with keys and values of the given types."""
        return MapTypeInfo(key_type_info, value_type_info)

    @staticmethod
    def LIST(element_type_info: TypeInformation) -> TypeInformation:
        """A list of elements of the given type."""
        return ListTypeInfo(element_type_info)


def normalize_type(type_info: Any) -> TypeInformation | None:
    """Turn what a user may pass as ``output_type`` into a TypeInformation (or None).

    None stays None (records travel pickled); a list or tuple of type infos means a row of
    those fields, i.e. ``Types.ROW(list)``.

    Example::

        >>> normalize_type([Types.STRING(), Types.INT()])
        RowTypeInfo(String, Integer)
    """
    if type_info is None or isinstance(type_info, TypeInformation):
        return type_info
    if isinstance(type_info, (list, tuple)):
        return RowTypeInfo(list(type_info))
    if isinstance(type_info, type) and issubclass(type_info, TypeInformation):
        raise TypeError(f"pass a type info instance, e.g. Types.INT(), not the class {type_info}")
    raise TypeError(f"expected a TypeInformation (Types.*()) or a list of them, got {type_info!r}")
