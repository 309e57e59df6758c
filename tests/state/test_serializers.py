"""Typed state serializers: exact round trips, None rules, range/type errors, canonical keys."""

from __future__ import annotations

import datetime as dt
import math
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections import namedtuple
from decimal import Decimal
from fractions import Fraction

import cloudpickle
import numpy as np
import pytest

from flowrun.core.row import Row, RowKind
from flowrun.core.time import Instant
from flowrun.core.typeinfo import ExternalTypeInfo, Types
from flowrun.state import StateTypeError
from flowrun.state import serializers as ser_mod
from flowrun.state.serializers import (
    TypeSerializer,
    key_serializer_for,
    pack_frames,
    serializer_for,
    unpack_frames,
)

PERSON = Types.ROW_NAMED(["name", "age"], [Types.STRING(), Types.INT()])
PAIR = Types.TUPLE([Types.STRING(), Types.LONG()])


def person(name, age, kind=RowKind.INSERT):
    # Row(**kwargs) sorts the names; the row-class idiom keeps the declared order.
    row = Row("name", "age")(name, age)
    row.set_row_kind(kind)
    return row


def same(a, b) -> bool:
    """Equality that also checks container and scalar types, recursively (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, Row):
        return (
            a._fields == b._fields
            and a.get_row_kind() == b.get_row_kind()
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return a == b


ROUND_TRIPS = [
    (Types.BOOLEAN(), [True, False]),
    (Types.BYTE(), [-128, 0, 127]),
    (Types.SHORT(), [-32768, -1, 32767]),
    (Types.INT(), [-(2**31), 0, 7, 2**31 - 1]),
    (Types.LONG(), [-(2**63), -1, 2**63 - 1]),
    (Types.FLOAT(), [0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan, 3.4028234663852886e38]),
    (Types.DOUBLE(), [0.1, -0.0, 1e308, 5e-324, math.inf, math.nan]),
    (
        Types.STRING(),
        ["", "a", "\x00", "héllo wörld", "日本語", "\ud800 lone surrogate", "x" * 1000],
    ),
    (Types.CHAR(), ["a", "é", "日", "\x00"]),
    (Types.BIG_INT(), [0, -1, 2**200, -(2**100) + 1]),
    (
        Types.BIG_DEC(),
        [
            Decimal("1.50"),
            Decimal("-0.000"),
            Decimal("1E+10"),
            Decimal("123456789012345678901234567890.123456789"),
            Decimal("NaN"),
        ],
    ),
    (Types.INSTANT(), [Instant(0, 0), Instant(-1, 999_999_999), Instant(1_700_000_000, 123)]),
    (
        Types.SQL_DATE(),
        [dt.date(1970, 1, 1), dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1969, 12, 31)],
    ),
    (Types.SQL_TIME(), [dt.time(0, 0), dt.time(23, 59, 59, 999_999), dt.time(12, 30, 15, 123)]),
    (
        Types.SQL_TIMESTAMP(),
        [
            dt.datetime(1970, 1, 1),
            dt.datetime(1, 1, 1),
            dt.datetime(9999, 12, 31, 23, 59, 59, 999_999),
            dt.datetime(1969, 12, 31, 23, 59, 59, 999_999),
        ],
    ),
    (
        Types.PICKLED_BYTE_ARRAY(),
        [{"a": [1, 2.5, None]}, Fraction(1, 3), ("t", 1), "", 0, False, frozenset({1})],
    ),
    (Types.PRIMITIVE_ARRAY(Types.BYTE()), [b"", b"\x00\xff", bytes(range(256)) * 2]),
    (Types.PRIMITIVE_ARRAY(Types.INT()), [[], [1, -2, 3], [2**31 - 1, -(2**31)]]),
    (Types.PRIMITIVE_ARRAY(Types.LONG()), [[2**63 - 1], list(range(300))]),
    (Types.PRIMITIVE_ARRAY(Types.SHORT()), [[1, -1]]),
    (Types.PRIMITIVE_ARRAY(Types.BOOLEAN()), [[True, False, True], []]),
    (Types.PRIMITIVE_ARRAY(Types.DOUBLE()), [[0.5, -1e300, math.inf]]),
    (Types.PRIMITIVE_ARRAY(Types.FLOAT()), [[0.5, -2.0]]),
    (Types.PRIMITIVE_ARRAY(Types.CHAR()), [["a", "b"], []]),
    (Types.BASIC_ARRAY(Types.STRING()), [["a", None, ""], [], [None]]),
    (Types.BASIC_ARRAY(Types.INT()), [[1, None, 3]]),
    (Types.OBJECT_ARRAY(PERSON), [[person("a", 1), None]]),
    (Types.LIST(Types.STRING()), [["a", None, "x" * 300], []]),
    (Types.LIST(Types.LIST(Types.INT())), [[[1], [], [2, 3]]]),
    (Types.LIST(Types.DOUBLE()), [[0.5] * 1000]),
    (Types.MAP(Types.STRING(), Types.INT()), [{}, {"a": 1, "b": None, "": 0}]),
    (Types.MAP(Types.INT(), Types.LIST(Types.STRING())), [{1: ["x"], 2: [], 3: None}]),
    (Types.MAP(PAIR, Types.BOOLEAN()), [{("a", 1): True, ("b", 2): False}]),
    (PAIR, [("a", 1), ("", 0), (None, -1), ("x" * 300, 2**63 - 1)]),
    (Types.TUPLE([]), [()]),
    (Types.TUPLE([Types.INT()] * 9), [tuple(range(9))]),
    (
        Types.TUPLE([Types.BOOLEAN(), Types.SQL_DATE(), Types.INSTANT()]),
        [(True, dt.date(2020, 1, 2), Instant(5, 6))],
    ),
    (PERSON, [person("Bob", 7), person(None, None), person("", 0, RowKind.DELETE)]),
    (Types.ROW([Types.STRING(), Types.DOUBLE()]), [Row("a", 1.5), Row(None, None)]),
    (
        Types.ROW_NAMED(["inner", "tags"], [PERSON, Types.LIST(Types.STRING())]),
        [Row("inner", "tags")(person("a", 1), ["x", None]), Row("inner", "tags")(None, [])],
    ),
    (Types.ROW([Types.INT()] * 10), [Row(*range(10)), Row(*([None] * 10))]),
    (Types.ROW([Types.LONG()] * 70), [Row(*range(70)), Row(*([None] * 35 + list(range(35))))]),
    (ExternalTypeInfo(Types.LONG()), [5]),
]


def _cases():
    for type_info, values in ROUND_TRIPS:
        for value in values:
            yield pytest.param(type_info, value, id=f"{type_info!r}-{value!r}"[:80])


@pytest.mark.parametrize(("type_info", "value"), list(_cases()))
def test_exact_round_trip(type_info, value):
    s = serializer_for(type_info)
    data = s.serialize(value)
    assert isinstance(data, bytes) and data != b""
    back = s.deserialize(data)
    assert same(back, value), (back, value)
    assert same(s.deserialize(memoryview(data)), value)
    assert same(s.deserialize(bytearray(data)), value)
    # canonical for values too: re-serializing gives the same bytes
    assert s.serialize(back) == data


@pytest.mark.parametrize(("type_info", "value"), list(_cases()))
def test_round_trip_inside_containers(type_info, value):
    """Every value also survives as a list element, a map value and a tuple/row field."""
    nullable = type_info._nullable
    for outer, wrapped in [
        (Types.OBJECT_ARRAY(type_info), [value, None, value]),
        (Types.MAP(Types.STRING(), type_info), {"k": value, "none": None}),
        (Types.ROW([type_info, Types.INT()]), Row(value, 1)),
        (Types.TUPLE([Types.STRING(), type_info]), ("s", value)),
    ]:
        s = serializer_for(outer)
        assert same(s.deserialize(s.serialize(wrapped)), wrapped)
    if nullable:
        s = serializer_for(Types.TUPLE([type_info, type_info]))
        assert s.deserialize(s.serialize((None, value)))[0] is None


def test_encodings_are_compact_and_typed():
    assert serializer_for(Types.BOOLEAN()).serialize(True) == b"\x01"
    assert serializer_for(Types.BYTE()).serialize(-1) == b"\xff"
    assert serializer_for(Types.SHORT()).serialize(1) == b"\x00\x01"
    assert serializer_for(Types.INT()).serialize(-2) == b"\xff\xff\xff\xfe"
    assert serializer_for(Types.LONG()).serialize(1) == b"\x00" * 7 + b"\x01"
    assert serializer_for(Types.DOUBLE()).serialize(1.0) == struct.pack(">d", 1.0)
    assert serializer_for(Types.FLOAT()).serialize(1.0) == struct.pack(">f", 1.0)
    assert serializer_for(Types.STRING()).serialize("hé") == "hé".encode()
    assert serializer_for(Types.BIG_INT()).serialize(-12) == b"-12"
    assert serializer_for(Types.BIG_DEC()).serialize(Decimal("1.50")) == b"1.50"
    assert serializer_for(Types.SQL_DATE()).serialize(dt.date(1970, 1, 2)) == b"\x00\x00\x00\x01"
    assert serializer_for(Types.SQL_TIME()).serialize(dt.time(0, 0, 1)) == struct.pack(">q", 10**6)
    assert serializer_for(Types.INSTANT()).serialize(Instant(1, 2)) == struct.pack(">qi", 1, 2)
    # (str, long): bitmap, framed str (len + 1), 8-byte long
    assert serializer_for(PAIR).serialize(("ab", 1)) == b"\x00\x03ab" + struct.pack(">q", 1)
    # rows keep the RowKind in the header's low bits
    assert serializer_for(PERSON).serialize(person("a", 1, RowKind.DELETE))[0] == 3
    # list: count, then frames (0 = None)
    assert serializer_for(Types.LIST(Types.STRING())).serialize(["a", None]) == b"\x02\x02a\x00"
    # primitive arrays are packed
    assert serializer_for(Types.PRIMITIVE_ARRAY(Types.INT())).serialize([1, 2]) == (
        b"\x02" + struct.pack(">2i", 1, 2)
    )


def test_results_have_the_declared_python_types():
    assert (
        serializer_for(Types.DOUBLE()).deserialize(serializer_for(Types.DOUBLE()).serialize(2))
        == 2.0
    )
    assert (
        type(
            serializer_for(Types.DOUBLE()).deserialize(serializer_for(Types.DOUBLE()).serialize(2))
        )
        is float
    )
    s = serializer_for(Types.LIST(Types.INT()))
    assert s.deserialize(s.serialize((1, 2))) == [1, 2]
    t = serializer_for(PAIR)
    assert t.deserialize(t.serialize(["a", 1])) == ("a", 1)
    assert t.deserialize(t.serialize(Row("a", 1))) == ("a", 1)
    r = serializer_for(PERSON)
    back = r.deserialize(r.serialize(("a", 1)))
    assert isinstance(back, Row) and back.name == "a" and back.age == 1
    assert r.deserialize(r.serialize({"age": 3, "name": "d"})) == person("d", 3)

    class Obj:
        def __init__(self):
            self.name, self.age = "o", 9

    assert r.deserialize(r.serialize(Obj())) == person("o", 9)
    # a Row with the declared names in another order is matched by name
    assert r.deserialize(r.serialize(Row(age=5, name="x"))) == person("x", 5)
    # unnamed row types give rows without names
    u = serializer_for(Types.ROW([Types.INT()]))
    assert u.deserialize(u.serialize(Row(1)))._fields is None
    b = serializer_for(Types.PRIMITIVE_ARRAY(Types.BYTE()))
    assert b.deserialize(b.serialize(bytearray(b"xy"))) == b"xy"
    assert b.deserialize(b.serialize(memoryview(b"xy"))) == b"xy"
    assert serializer_for(Types.SQL_DATE()).deserialize(
        serializer_for(Types.SQL_DATE()).serialize(dt.datetime(2020, 5, 6, 7))
    ) == dt.date(2020, 5, 6)


def test_numpy_scalars_are_their_python_values():
    assert serializer_for(Types.INT()).serialize(np.int32(5)) == serializer_for(
        Types.INT()
    ).serialize(5)
    assert serializer_for(Types.LONG()).serialize(np.int64(-5)) == serializer_for(
        Types.LONG()
    ).serialize(-5)
    assert serializer_for(Types.DOUBLE()).serialize(np.float64(0.5)) == struct.pack(">d", 0.5)
    assert serializer_for(Types.BOOLEAN()).serialize(np.bool_(True)) == b"\x01"
    s = serializer_for(Types.PRIMITIVE_ARRAY(Types.INT()))
    assert s.deserialize(s.serialize([np.int16(1), 2])) == [1, 2]


def test_aware_timestamps_are_stored_as_utc_wall_time():
    s = serializer_for(Types.SQL_TIMESTAMP())
    aware = dt.datetime(2020, 1, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert s.deserialize(s.serialize(aware)) == dt.datetime(2020, 1, 1, 3)


# ------------------------------------------------------------------------------------------
# None
# ------------------------------------------------------------------------------------------

ALL_TYPES = [t for t, _ in ROUND_TRIPS]


@pytest.mark.parametrize("type_info", ALL_TYPES, ids=repr)
def test_none_is_empty_bytes_at_the_top_level(type_info):
    s = serializer_for(type_info)
    assert s.serialize(None) == b""
    assert s.deserialize(b"") is None
    assert s.deserialize(memoryview(b"")) is None


@pytest.mark.parametrize(
    ("type_info", "value"),
    [
        (Types.STRING(), ""),
        (Types.PRIMITIVE_ARRAY(Types.BYTE()), b""),
        (Types.LIST(Types.INT()), []),
        (Types.MAP(Types.INT(), Types.INT()), {}),
        (Types.TUPLE([]), ()),
        (Types.ROW([]), Row()),
        (Types.PICKLED_BYTE_ARRAY(), ""),
    ],
)
def test_empty_values_are_not_none(type_info, value):
    s = serializer_for(type_info)
    data = s.serialize(value)
    assert data != b""
    assert s.deserialize(data) == value


@pytest.mark.parametrize(
    ("type_info", "value", "message"),
    [
        (Types.LIST(Types.INT()), [1, None], "element 1"),
        (Types.PRIMITIVE_ARRAY(Types.INT()), [1, None], "element 1"),
        (Types.PRIMITIVE_ARRAY(Types.CHAR()), [None], "element 0"),
        (Types.TUPLE([Types.INT()]), (None,), "must not be None"),
        (Types.TUPLE([PAIR]), (None,), "must not be None"),
        (Types.LIST(PAIR), [None], "must not be None"),
        (Types.MAP(Types.STRING(), Types.INT()), {None: 1}, "keys must not be None"),
    ],
)
def test_none_where_the_type_forbids_it(type_info, value, message):
    with pytest.raises(ValueError, match=message):
        serializer_for(type_info).serialize(value)


def test_none_where_the_type_allows_it():
    for type_info, value in [
        (Types.ROW([Types.INT(), Types.BOOLEAN()]), Row(None, None)),
        (Types.BASIC_ARRAY(Types.INT()), [None]),
        (Types.OBJECT_ARRAY(PAIR), [None]),
        (Types.LIST(Types.STRING()), [None]),
        (Types.MAP(Types.STRING(), Types.INT()), {"a": None}),
        (Types.TUPLE([Types.STRING(), Types.BIG_DEC(), Types.SQL_DATE()]), (None, None, None)),
    ]:
        s = serializer_for(type_info)
        assert s.deserialize(s.serialize(value)) == value


# ------------------------------------------------------------------------------------------
# Range and type errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_info", "value", "error", "message"),
    [
        (Types.INT(), 2**31, ValueError, r"out of range for Integer \[-2147483648, 2147483647\]"),
        (Types.INT(), -(2**31) - 1, ValueError, "out of range"),
        (Types.INT(), True, TypeError, "got bool"),
        (Types.INT(), 1.0, TypeError, "got float"),
        (Types.INT(), "1", TypeError, "got str"),
        (Types.BYTE(), 128, ValueError, "out of range for Byte"),
        (Types.SHORT(), -32769, ValueError, "out of range for Short"),
        (Types.LONG(), 2**63, ValueError, "out of range for Long"),
        (Types.LONG(), np.bool_(True), TypeError, "got bool"),
        (Types.FLOAT(), 1e39, ValueError, "out of range for Float"),
        (Types.FLOAT(), "x", TypeError, "expected float"),
        (Types.DOUBLE(), True, TypeError, "got bool"),
        (Types.DOUBLE(), Decimal(1), TypeError, "expected float"),
        (Types.BOOLEAN(), 1, TypeError, "expected bool"),
        (Types.STRING(), b"x", TypeError, "expected str"),
        (Types.STRING(), 1, TypeError, "expected str"),
        (Types.CHAR(), "ab", ValueError, "exactly one character"),
        (Types.CHAR(), "", ValueError, "exactly one character"),
        (Types.CHAR(), 1, TypeError, "Char"),
        (Types.BIG_INT(), True, TypeError, "got bool"),
        (Types.BIG_INT(), 1.5, TypeError, "got float"),
        (Types.BIG_DEC(), 1.5, TypeError, "expected decimal.Decimal"),
        (Types.SQL_DATE(), "2020-01-01", TypeError, "expected datetime.date"),
        (Types.SQL_TIME(), dt.datetime(2020, 1, 1), TypeError, "expected datetime.time"),
        (Types.SQL_TIMESTAMP(), dt.date(2020, 1, 1), TypeError, "expected datetime.datetime"),
        (Types.INSTANT(), 5, TypeError, "Instant"),
        (Types.PRIMITIVE_ARRAY(Types.BYTE()), "ab", TypeError, "expected bytes"),
        (Types.PRIMITIVE_ARRAY(Types.INT()), [1, 2**40], ValueError, "element 1: .*out of range"),
        (Types.PRIMITIVE_ARRAY(Types.INT()), [1, True], TypeError, "element 1: .*got bool"),
        (Types.PRIMITIVE_ARRAY(Types.BOOLEAN()), [1], TypeError, "element 0"),
        (Types.PRIMITIVE_ARRAY(Types.DOUBLE()), [1.0, "x"], TypeError, "element 1"),
        (Types.LIST(Types.INT()), "abc", TypeError, "expected a list"),
        (Types.LIST(Types.INT()), [1, "x"], TypeError, "element 1: expected int"),
        (Types.MAP(Types.STRING(), Types.INT()), [("a", 1)], TypeError, "expected a dict"),
        (Types.MAP(Types.STRING(), Types.INT()), {"a": "b"}, TypeError, "value of key 'a'"),
        (Types.MAP(Types.STRING(), Types.INT()), {1: 1}, TypeError, "key 1: expected str"),
        (PAIR, ("a",), ValueError, "expected 2 fields"),
        (PAIR, "ab", TypeError, "expected a tuple, list or Row"),
        (PAIR, ("a", "b"), TypeError, "field 'f1': expected int"),
        (PAIR, (1, 1), TypeError, "field 'f0': expected str"),
        (PERSON, Row(nom="x", age=1), ValueError, "type declares"),
        (PERSON, 5, TypeError, "expected a Row"),
        (PERSON, ("a", 2**31), ValueError, "field 'age': .*out of range"),
        (
            Types.LIST(Types.TUPLE([Types.STRING(), Types.INT()])),
            [("a", 1), ("b", "x")],
            TypeError,
            "element 1: field 'f1': expected int",
        ),
        (
            Types.ROW_NAMED(["p"], [PERSON]),
            Row(p=("a", "old")),
            TypeError,
            "field 'p': field 'age': expected int",
        ),
    ],
)
def test_values_that_do_not_fit(type_info, value, error, message):
    with pytest.raises(error, match=message):
        serializer_for(type_info).serialize(value)


def test_unpicklable_values_fail_clearly():
    with pytest.raises(TypeError):
        serializer_for(Types.PICKLED_BYTE_ARRAY()).serialize(threading.Lock())


def test_lambdas_pickle_with_cloudpickle():
    s = serializer_for(None)
    fn = s.deserialize(s.serialize(lambda x: x * 3))
    assert fn(2) == 6


@pytest.mark.parametrize(
    ("type_info", "data"),
    [
        (Types.INT(), b"\x00\x00\x01"),
        (Types.LONG(), b"\x00" * 9),
        (Types.BOOLEAN(), b"\x02"),
        (Types.STRING(), b"\xc3"),
        (Types.CHAR(), b"ab"),
        (Types.BIG_INT(), b"1x"),
        (Types.BIG_DEC(), b"abc"),
        (Types.SQL_DATE(), b"\x7f\xff\xff\xff"),
        (PAIR, b"\x00\x03ab"),
        (PAIR, b"\x00\x03ab" + b"\x00" * 9),
        (PAIR, b"\x04"),
        (PERSON, b"\x00\x09ab"),
        (Types.LIST(Types.INT()), b"\x05\x05\x00\x00\x00\x01"),
        (Types.LIST(Types.INT()), b"\x01\x05\x00\x00\x00\x01\x00"),
        (Types.MAP(Types.STRING(), Types.INT()), b"\x01\x00\x00"),
        (Types.PRIMITIVE_ARRAY(Types.INT()), b"\x02\x00\x00\x00\x01"),
        (Types.PRIMITIVE_ARRAY(Types.BYTE()), b"\x05ab"),
        (Types.PICKLED_BYTE_ARRAY(), b"\x80\x05garbage"),
    ],
)
def test_malformed_bytes_raise_value_error(type_info, data):
    with pytest.raises(ValueError, match="malformed state bytes"):
        serializer_for(type_info).deserialize(data)


def test_compiled_rows_agree_with_the_generic_codec():
    types = [
        PAIR,
        PERSON,
        Types.ROW([Types.INT()] * 10),
        Types.TUPLE([Types.DOUBLE(), Types.FLOAT(), Types.STRING(), Types.BOOLEAN()]),
        Types.ROW_NAMED(["inner", "tags"], [PERSON, Types.LIST(Types.STRING())]),
    ]
    values = {
        0: [
            ("a", 1),
            ("", 0),
            (None, 5),
            ("x" * 400, -1),
            ["l", 2],
            Row("r", 3),
            (np.str_("n"), np.int64(4)),
        ],
        1: [
            person("a", 1),
            person(None, None),
            Row(age=2, name="b"),
            ("t", 3),
            {"name": "d", "age": 4},
        ],
        2: [Row(*range(10)), tuple(range(10)), Row(*([None] * 10))],
        3: [(0.5, 1.5, "s", True), (math.nan, -0.0, "", False), (1, 2, "é", np.bool_(True))],
        4: [Row("inner", "tags")(person("a", 1), ["x", None]), (None, [])],
    }
    for i, type_info in enumerate(types):
        codec = ser_mod._codec_for(type_info)
        s = serializer_for(type_info)
        for value in values[i]:
            generic = codec.enc_generic(value)
            assert codec.enc(value) == generic
            assert s.serialize(value) == generic
            assert same(codec.dec(generic), codec.dec_generic(generic))
            assert same(s.deserialize(generic), codec.dec_generic(generic))


# ------------------------------------------------------------------------------------------
# StateTypeError and serializer objects
# ------------------------------------------------------------------------------------------


def test_state_type_error_names_everything():
    with pytest.raises(ValueError) as info:
        serializer_for(Types.INT()).serialize(2**40)
    err = StateTypeError("count", ("user", 7), 2**40, Types.INT(), info.value)
    assert isinstance(err, TypeError)
    assert (err.state_name, err.key, err.value, err.expected) == (
        "count",
        ("user", 7),
        2**40,
        Types.INT(),
    )
    assert err.cause is info.value
    text = str(err)
    for part in ["'count'", "('user', 7)", str(2**40), "Integer", "out of range"]:
        assert part in text


def test_state_type_error_pickles_even_with_unpicklable_parts():
    lock = threading.Lock()
    err = StateTypeError("s", lock, lambda: 1, Types.LONG(), "boom")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, StateTypeError)
    assert str(back) == str(err)
    assert back.state_name == "s" and back.expected == Types.LONG()
    assert isinstance(back.key, str) and "lock" in back.key


def test_serialize_checked_wraps_errors():
    s = serializer_for(PAIR)
    assert s.serialize_checked(("a", 1), "st", "k") == s.serialize(("a", 1))
    with pytest.raises(StateTypeError, match="state 'st' \\(key 'k'\\)") as info:
        s.serialize_checked(("a", "b"), "st", "k")
    assert info.value.expected == PAIR and info.value.value == ("a", "b")


def test_serializers_are_cached_picklable_and_comparable():
    s = serializer_for(Types.LIST(Types.INT()))
    assert serializer_for(Types.LIST(Types.INT())) is s
    assert isinstance(s, TypeSerializer) and s.type_info == Types.LIST(Types.INT())
    back = pickle.loads(pickle.dumps(s))
    assert back == s and back.deserialize(s.serialize([1])) == [1]
    k = key_serializer_for(Types.STRING())
    assert k != serializer_for(Types.STRING())
    assert pickle.loads(pickle.dumps(k)) == k
    assert "key serializer" in repr(k) and "List" in repr(s)
    assert serializer_for(None).type_info is None
    assert serializer_for(None).deserialize(serializer_for(None).serialize({"x": 1})) == {"x": 1}
    with pytest.raises(TypeError, match="TypeInformation"):
        serializer_for(int)  # type: ignore[arg-type]


def test_pickle_is_used_only_for_pickled_types(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(ser_mod.pickle, "dumps", boom)
    monkeypatch.setattr(ser_mod.pickle, "loads", boom)
    for type_info, values in ROUND_TRIPS:
        if type_info == Types.PICKLED_BYTE_ARRAY():
            continue
        s = serializer_for(type_info)
        for value in values:
            assert same(s.deserialize(s.serialize(value)), value)
    k = key_serializer_for(None)
    for key in KEYS:
        assert same(k.deserialize(k.serialize(key)), key)
    with pytest.raises(AssertionError, match="pickle used"):
        serializer_for(Types.PICKLED_BYTE_ARRAY()).deserialize(b"\x80\x05N.")


# ------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------

KEYS = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**200),
    1.5,
    -0.0,
    0.0,
    math.inf,
    "",
    "a",
    "héllo",
    "\ud800",
    "k" * 300,
    b"",
    b"\x00\xff",
    (),
    ("a", 1),
    (("a", (1, None)), b"x", 2.5, True),
    tuple(range(300)),
    ("k" * 300, 2**100),
    Row(1, "a"),
    Row(a=1, b=(2, "x")),
    (Row(1), Row()),
]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: repr(k)[:40])
def test_key_round_trip(key):
    k = key_serializer_for(None)
    data = k.serialize(key)
    assert same(k.deserialize(data), key)
    assert same(k.deserialize(memoryview(data)), key)
    assert k.serialize(k.deserialize(data)) == data


def test_distinct_keys_give_distinct_bytes():
    k = key_serializer_for(None)
    keys = [
        1, 1.0, True, "1", b"1", (1,), Row(1), Row(f0=1), 0, 0.0, -0.0, None, False, "", b"",
        (), Row(), (None,), ("",), ((),), (1, 2), ((1, 2),), (1, (2,)), 2**63, -(2**63) - 1,
    ]  # fmt: skip
    encoded = [k.serialize(x) for x in keys]
    assert len(set(encoded)) == len(keys)


def test_equal_keys_give_equal_bytes():
    k = key_serializer_for(None)
    point = namedtuple("point", "x y")

    class Name(str):
        pass

    other_nan = struct.unpack(">d", b"\x7f\xf8\x00\x00\x00\x00\x00\x01")[0]
    for a, b in [
        (np.int64(5), 5),
        (np.int8(-3), -3),
        (np.float64(1.5), 1.5),
        (np.float32(0.5), 0.5),
        (np.bool_(True), True),
        (np.str_("s"), "s"),
        (bytearray(b"ab"), b"ab"),
        (point(1, "a"), (1, "a")),
        (Name("n"), "n"),
        (math.nan, other_nan),
        ((np.int32(1), np.str_("x")), (1, "x")),
    ]:
        assert k.serialize(a) == k.serialize(b), (a, b)
    deleted = Row(1, "a")
    deleted.set_row_kind(RowKind.DELETE)
    assert k.serialize(deleted) == k.serialize(Row(1, "a"))
    assert math.isnan(k.deserialize(k.serialize(math.nan)))


@pytest.mark.parametrize(
    "key", [object(), [1], {1: 2}, 1j, Decimal(1), frozenset(), memoryview(b"")]
)
def test_unsupported_keys(key):
    with pytest.raises(TypeError, match="cannot use a key of type"):
        key_serializer_for(None).serialize(key)


def test_unsupported_key_inside_a_tuple_names_its_position():
    with pytest.raises(TypeError, match="key element 1: cannot use a key of type list"):
        key_serializer_for(None).serialize(("a", [1]))


def test_pickled_key_type_uses_the_canonical_encoding():
    tagged = key_serializer_for(None)
    pickled = key_serializer_for(Types.PICKLED_BYTE_ARRAY())
    for key in KEYS:
        assert pickled.serialize(key) == tagged.serialize(key)
    assert key_serializer_for(ExternalTypeInfo(Types.PICKLED_BYTE_ARRAY())).serialize("a") == (
        tagged.serialize("a")
    )


def test_declared_key_types_use_the_typed_encoding():
    k = key_serializer_for(Types.STRING())
    assert k.serialize("ab") == b"ab"
    assert k.deserialize(k.serialize("")) == ""
    t = key_serializer_for(PAIR)
    assert t.serialize(("a", 1)) == t.serialize(["a", 1]) == t.serialize(Row("a", 1))
    assert t.deserialize(t.serialize(("a", 1))) == ("a", 1)
    d = key_serializer_for(Types.DOUBLE())
    assert d.serialize(math.nan) == d.serialize(-math.nan)
    with pytest.raises(TypeError):
        t.serialize(("a", "b"))


def test_key_malformed_bytes():
    k = key_serializer_for(None)
    for data in [b"\x63", b"\x03\x00", b"\x00\x01", b"\x08\x02\x02", b"\x06\xc3", b"\x04"]:
        with pytest.raises(ValueError, match="malformed state bytes"):
            k.deserialize(data)


_CHILD = r"""
import math, sys
from flowrun.core.row import Row
from flowrun.core.typeinfo import Types
from flowrun.state.serializers import key_serializer_for, serializer_for
keys = [None, True, 7, -2**70, 1.25, math.nan, "héllo", b"\x00b", ("a", 1, (2.5, None)),
        Row(1, "x"), Row(name="n", n=2), tuple(range(40))]
out = [key_serializer_for(None).serialize(k).hex() for k in keys]
out.append(key_serializer_for(Types.TUPLE([Types.STRING(), Types.LONG()])).serialize(("w", 3)).hex())
out.append(serializer_for(Types.MAP(Types.STRING(), Types.INT())).serialize({"b": 1, "a": 2}).hex())
print(",".join(out))
"""


def test_key_bytes_are_identical_across_processes_and_hash_seeds():
    outputs = set()
    for seed in ["0", "1", "12345", "random"]:
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run(
            [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout.strip())
    assert len(outputs) == 1
    scope: dict = {}
    exec(_CHILD.replace("print(", "result = ("), scope)
    assert scope["result"] == outputs.pop()


# ------------------------------------------------------------------------------------------
# Frames for list state
# ------------------------------------------------------------------------------------------


def test_pack_and_unpack_frames():
    chunks = [b"a", None, b"", b"x" * 1000, b"\x00"]
    packed = pack_frames(chunks)
    assert [None if c is None else bytes(c) for c in unpack_frames(packed)] == chunks
    more = packed + pack_frames([b"tail"])
    assert bytes(unpack_frames(more)[-1]) == b"tail"
    assert unpack_frames(b"") == []
    assert isinstance(unpack_frames(packed)[0], memoryview)
    with pytest.raises(ValueError):
        unpack_frames(b"\x05ab")


def test_list_elements_are_stored_as_their_own_encoding():
    """A LIST's element frames hold exactly what the element serializer produces."""
    elem = serializer_for(PAIR)
    values = [("a", 1), ("b", 2)]
    encoded = serializer_for(Types.LIST(PAIR)).serialize(values)
    assert encoded == b"\x02" + pack_frames([elem.serialize(v) for v in values])


def test_cloudpickled_serializer_still_works():
    s = cloudpickle.loads(cloudpickle.dumps(serializer_for(PERSON)))
    assert s.deserialize(s.serialize(person("a", 1))) == person("a", 1)


# -- bulk decoding (restores) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "type_info, values",
    [
        (Types.LONG(), [0, -1, 1, 2**63 - 1, -(2**63), 7 * 10**9]),
        (Types.INT(), [0, -1, 2**31 - 1, -(2**31)]),
        (Types.SHORT(), [0, -1, 2**15 - 1, -(2**15)]),
        (Types.BYTE(), [0, -1, 127, -128]),
    ],
)
def test_deserialize_array_of_fixed_width_ints_is_deserialize_of_each(type_info, values):
    import pyarrow as pa

    s = ser_mod.serializer_for(type_info)
    array = pa.array([s.serialize(v) for v in values], pa.binary())
    chunked = pa.chunked_array([array.slice(0, 2), array.slice(2)])
    for data in (array, chunked, array.slice(1)):
        decoded = s.deserialize_array(data)
        assert decoded == [s.deserialize(b) for b in data.to_pylist()]
        assert all(type(v) is int for v in decoded)
        assert list(s.deserialize_iter(data)) == decoded
        assert all(type(v) is int for v in s.deserialize_iter(data))


def test_deserialize_array_of_undeclared_keys_decodes_int_keys_in_bulk_and_the_rest_per_key():
    import pyarrow as pa

    k = ser_mod.key_serializer_for(None)
    ints = [0, 1, -1, 2**63 - 1, -(2**63), 10**7]
    # 9 bytes each but not all ints (a float key is a tag and 8 bytes too): per key
    mixed = [1, 2.5, float("nan"), 3]
    other = ["a", (1, "b"), None, 2**70, b"xy"]
    for keys in (ints, mixed, other, ints + other):
        array = pa.array([k.serialize(v) if v is not None else None for v in keys], pa.binary())
        chunks = pa.chunked_array([array.slice(0, 1), array.slice(1)])
        for data in (array, chunks):
            decoded = k.deserialize_array(data)
            expected = [k.deserialize(b) if b is not None else None for b in data.to_pylist()]
            assert [repr(v) for v in decoded] == [repr(v) for v in expected]
            assert [repr(v) for v in k.deserialize_iter(data)] == [repr(v) for v in expected]
    nan = k.deserialize_array(pa.array([k.serialize(float("nan"))] * 2, pa.binary()))
    assert nan[0] is ser_mod.NAN_KEY and nan[1] is ser_mod.NAN_KEY
