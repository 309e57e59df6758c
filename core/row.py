"""``Row`` and ``RowKind``, with the semantics of ``pyflink.common.types``.

A Row is an ordered list of field values, optionally with field names, plus a
:class:`RowKind` saying what the row means in a changelog (insert, update, delete).

Why not a ``tuple`` subclass: PyFlink rows are mutable (``row[0] = v``, ``row['name'] = v``),
and a tuple's storage cannot change. Rows therefore keep their values in a slot and use
``__slots__`` without a ``__dict__``: that keeps them small and quick to create (the
deserializer builds millions of them), and makes attribute assignment such as
``row.name = 1`` fail, as it does in PyFlink. Hashing is the hash of the value tuple, so rows
can be keys. The values of a row built by the deserializer are held in a tuple until the
first item assignment turns them into a list.

Example::

    >>> from flowrun.core.row import Row, RowKind
    >>> r = Row(name="Alice", age=11)          # keyword fields are sorted by name
    >>> r
    Row(age=11, name='Alice')
    >>> r.name, r["age"], r[0], len(r)
    ('Alice', 11, 11, 2)
    >>> Person = Row("name", "age")            # the "row class" idiom
    >>> Person("Bob", 7).as_dict()
    {'name': 'Bob', 'age': 7}
    >>> Row(1, 2)
    <Row(1, 2)>
    >>> r.set_row_kind(RowKind.DELETE); r.get_row_kind()
    <RowKind.DELETE: 3>
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = ["Row", "RowKind"]


class RowKind(Enum):
    """The change a row stands for in a changelog stream; new rows are INSERT."""

    INSERT = 0
    UPDATE_BEFORE = 1
    UPDATE_AFTER = 2
    DELETE = 3


class _FieldNotFound(KeyError, ValueError):
    """A field name a row does not have.

    PyFlink raises ValueError here; KeyError is what mapping-style access usually raises.
    Being both lets either ``except`` clause catch it.
    """


def _create_row(fields: Any, values: Any, row_kind: RowKind | None = None) -> Row:
    """Rebuild a row (the target of ``Row.__reduce__``, so rows pickle by value)."""
    row = Row(*values)
    if fields is not None:
        row._fields = tuple(fields)
    if row_kind is not None:
        row._row_kind = row_kind
    return row


class Row:
    """A row of field values, positional (``Row(1, 2)``) or named (``Row(a=1, b=2)``).

    Keyword fields are sorted by name; mixing positional and keyword values is an error.
    ``x in row`` tests the values; ``==`` compares values, row kind and field names.
    """

    __slots__ = ("_values", "_fields", "_row_kind")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args and kwargs:
            raise ValueError("Can not use both args and kwargs to create Row")
        if kwargs:
            names = sorted(kwargs)
            self._fields: tuple | None = tuple(names)
            self._values: list | tuple = [kwargs[n] for n in names]
        else:
            self._fields = None
            self._values = list(args)
        self._row_kind = RowKind.INSERT

    def as_dict(self, recursive: bool = False) -> dict:
        """The row as ``{name: value}``; nested rows become dicts too when ``recursive``."""
        if self._fields is None:
            raise TypeError("Cannot convert a Row class into dict")
        if not recursive:
            return dict(zip(self._fields, self._values, strict=False))

        def conv(obj: Any) -> Any:
            if isinstance(obj, Row):
                return obj.as_dict(True)
            if isinstance(obj, list):
                return [conv(o) for o in obj]
            if isinstance(obj, dict):
                return {k: conv(v) for k, v in obj.items()}
            return obj

        return {k: conv(v) for k, v in zip(self._fields, self._values, strict=False)}

    def get_row_kind(self) -> RowKind:
        return self._row_kind

    def set_row_kind(self, row_kind: RowKind) -> None:
        self._row_kind = row_kind

    def set_field_names(self, field_names: list) -> None:
        self._fields = None if field_names is None else tuple(field_names)

    def __contains__(self, item: Any) -> bool:
        return item in self._values

    def __call__(self, *args: Any) -> Row:
        """Use a row of names as a row class: ``Person = Row("name", "age"); Person("A", 1)``."""
        if len(args) > len(self):
            raise ValueError(
                f"Can not create Row with fields {self}, expected {len(self)} values but got {args}"
            )
        return _create_row(self._values, args, self._row_kind)

    def _index_of(self, name: str) -> int:
        if self._fields is not None:
            try:
                return self._fields.index(name)
            except ValueError:
                pass
        raise _FieldNotFound(name)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, int):
            return self._values[item]
        if isinstance(item, slice):
            return list(self._values[item])
        return self._values[self._index_of(item)]

    def __setitem__(self, key: Any, value: Any) -> None:
        values = self._values
        if type(values) is not list:
            values = self._values = list(values)
        if isinstance(key, (int, slice)):
            values[key] = value
        else:
            values[self._index_of(key)] = value

    def __getattr__(self, item: str) -> Any:
        # Only reached when normal lookup fails, i.e. for field names.
        if item.startswith("_"):
            raise AttributeError(item)
        fields = self._fields
        if fields is None or item not in fields:
            raise AttributeError(item)
        return self._values[fields.index(item)]

    def __reduce__(self) -> tuple:
        return _create_row, (self._fields, tuple(self._values), self._row_kind)

    def __repr__(self) -> str:
        if self._fields is not None:
            inner = ", ".join(
                f"{k}={v!r}" for k, v in zip(self._fields, self._values, strict=False)
            )
            return f"Row({inner})"
        return f"<Row({', '.join(repr(v) for v in self._values)})>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row) or self.__class__ is not other.__class__:
            return False
        if self._fields != other._fields or self._row_kind != other._row_kind:
            return False
        mine, theirs = self._values, other._values
        if type(mine) is not type(theirs):
            return tuple(mine) == tuple(theirs)
        return mine == theirs

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(tuple(self._values))

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)
