"""Records <-> Arrow batches: exact round trips, batch sizing, pickling, type errors."""

from __future__ import annotations

import datetime
import json
import os
import pickle
import subprocess
import sys
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from flowrun.core import records
from flowrun.core.records import RecordTypeError, serializer_for
from flowrun.core.row import Row, RowKind
from flowrun.core.typeinfo import TypeInformation, Types

BIG = 1 << 30


@dataclass
class Point:
    """A user class defined in the job (here: test) module; pickled by reference."""

    x: int
    label: str


def roundtrip(type_info: Any, recs: list, max_bytes: int = BIG) -> list:
    ser = serializer_for(type_info)
    out: list = []
    for batch in ser.to_batches(recs, max_bytes):
        assert batch.schema == ser.schema
        out.extend(ser.from_batch(batch))
    return out


def through_ipc(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Write one batch as an IPC stream and read it back, as the network layer does."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return pa.ipc.open_stream(sink.getvalue()).read_next_batch()


SCALARS = [
    (Types.STRING(), ["", "a", "ünïcødé ✓ 𝄞 日本", None]),
    (Types.BYTE(), [-128, 0, 127]),
    (Types.SHORT(), [-32768, 0, 32767]),
    (Types.INT(), [-(2**31), 0, 2**31 - 1]),
    (Types.LONG(), [-(2**63), 0, 2**63 - 1]),
    (Types.FLOAT(), [0.5, -1.25, 3.0, float("inf")]),
    (Types.DOUBLE(), [0.1, -1e300, 5e-324, float("-inf")]),
    (Types.BOOLEAN(), [True, False]),
    (Types.CHAR(), ["a", "é", "𝄞"]),
    (Types.BIG_INT(), [0, -1, 10**50, -(10**60), None]),
    (Types.BIG_DEC(), [Decimal("1.50"), Decimal("-0.000001"), Decimal("1E+30"), None]),
    (Types.SQL_DATE(), [datetime.date(1970, 1, 1), datetime.date(2024, 2, 29), None]),
    (Types.SQL_TIME(), [datetime.time(0, 0), datetime.time(23, 59, 59, 999999), None]),
    (
        Types.SQL_TIMESTAMP(),
        [datetime.datetime(2024, 1, 2, 3, 4, 5, 678901), datetime.datetime(1900, 1, 1), None],
    ),
    (Types.PRIMITIVE_ARRAY(Types.INT()), [[1, 2, 3], []]),
    (Types.PRIMITIVE_ARRAY(Types.BYTE()), [b"", b"\x00\xff"]),
    (Types.PRIMITIVE_ARRAY(Types.BOOLEAN()), [[True, False], []]),
    (Types.BASIC_ARRAY(Types.STRING()), [["a", None], []]),
    (Types.BASIC_ARRAY(Types.INT()), [[1, None], []]),
    (Types.OBJECT_ARRAY(Types.LIST(Types.INT())), [[[1], None, []], []]),
    (Types.LIST(Types.LONG()), [[1, 2, 3], []]),
    (Types.LIST(Types.LIST(Types.STRING())), [[["a", "ü"], []], []]),
    (Types.LIST(Types.BIG_INT()), [[10**40, None, 1], []]),
    (Types.MAP(Types.STRING(), Types.INT()), [{"a": 1, "b": None}, {}]),
    (Types.MAP(Types.STRING(), Types.LIST(Types.DOUBLE())), [{"a": [1.5], "b": []}, {}]),
    (Types.MAP(Types.INT(), Types.BIG_DEC()), [{1: Decimal("0.10"), 2: None}, {}]),
    (Types.LIST(Types.TUPLE([Types.STRING(), Types.INT()])), [[("a", 1), ("b", 2)], []]),
    (Types.LIST(Types.MAP(Types.STRING(), Types.LONG())), [[{"a": 1}, {}], []]),
    (Types.PICKLED_BYTE_ARRAY(), [None, {"x": {1, 2}}, Point(1, "p")]),
]


@pytest.mark.parametrize(("type_info", "values"), SCALARS, ids=lambda x: repr(x)[:40])
def test_single_column_round_trip(type_info: TypeInformation, values: list) -> None:
    out = roundtrip(type_info, values)
    assert out == values
    assert [type(v) for v in out] == [type(v) for v in values]
    if type_info == Types.BIG_DEC():
        assert [str(v) for v in out] == [str(v) for v in values]  # scale is kept


@pytest.mark.parametrize(("type_info", "values"), SCALARS, ids=lambda x: repr(x)[:40])
def test_as_tuple_field_round_trip(type_info: TypeInformation, values: list) -> None:
    tuple_type = Types.TUPLE([Types.LONG(), type_info])
    recs = [(i, v) for i, v in enumerate(values)]
    assert roundtrip(tuple_type, recs) == recs


@pytest.mark.parametrize(("type_info", "values"), SCALARS, ids=lambda x: repr(x)[:40])
def test_as_nested_row_field_round_trip(type_info: TypeInformation, values: list) -> None:
    # Nested inside a struct (row in a tuple), fields of a Row may be None for any type.
    row_type = Types.ROW_NAMED(["v", "i"], [type_info, Types.INT()])
    outer = Types.TUPLE([row_type, Types.STRING()])
    Inner = Row("v", "i")
    recs = [(Inner(v, i), "s") for i, v in enumerate([*values, None])]
    out = roundtrip(outer, recs)
    assert out == recs
    assert repr(out) == repr(recs)


def test_empty_input_and_empty_batch() -> None:
    for t in (None, Types.INT(), Types.TUPLE([Types.INT()]), Types.ROW([Types.INT()])):
        ser = serializer_for(t)
        assert ser.to_batches([], 1024) == []
        empty = pa.RecordBatch.from_pylist([], schema=ser.schema)
        assert ser.from_batch(empty) == []


def test_tuple_records() -> None:
    t = Types.TUPLE([Types.STRING(), Types.LONG(), Types.LIST(Types.INT())])
    recs = [("a", 1, [1]), ["b", 2, []], ("", -5, [3, 4])]
    out = roundtrip(t, recs)
    assert out == [("a", 1, [1]), ("b", 2, []), ("", -5, [3, 4])]
    assert all(type(r) is tuple for r in out)
    assert serializer_for(t).schema.names == ["f0", "f1", "f2"]


def test_nested_tuples_come_back_as_tuples() -> None:
    t = Types.TUPLE([Types.TUPLE([Types.INT(), Types.TUPLE([Types.STRING()])]), Types.INT()])
    recs = [((1, ("a",)), 2), ([3, ["b"]], 4)]
    assert roundtrip(t, recs) == [((1, ("a",)), 2), ((3, ("b",)), 4)]


def test_unnamed_row_records() -> None:
    t = Types.ROW([Types.STRING(), Types.INT()])
    out = roundtrip(t, [Row("a", 1), ("b", 2), ["c", None]])
    assert out == [Row("a", 1), Row("b", 2), Row("c", None)]
    assert repr(out[0]) == "<Row('a', 1)>"
    assert serializer_for(t).schema.names == ["f0", "f1", "_row_kind"]


class Person:
    def __init__(self, name: str, age: int) -> None:
        self.name = name
        self.age = age


def test_named_row_accepts_row_tuple_list_dict_and_objects() -> None:
    t = Types.ROW_NAMED(["name", "age"], [Types.STRING(), Types.INT()])
    PersonRow = Row("name", "age")
    recs = [
        PersonRow("a", 1),
        Row(age=2, name="b"),  # sorted names (age, name): mapped by name
        ("c", 3),
        ["d", 4],
        {"name": "e", "age": 5},
        {"name": "f"},  # a missing key is None (a row field may be None)
        Person("g", 7),
    ]
    out = roundtrip(t, recs)
    assert [r.as_dict() for r in out] == [
        {"name": "a", "age": 1},
        {"name": "b", "age": 2},
        {"name": "c", "age": 3},
        {"name": "d", "age": 4},
        {"name": "e", "age": 5},
        {"name": "f", "age": None},
        {"name": "g", "age": 7},
    ]
    assert out[0] == PersonRow("a", 1)
    assert serializer_for(t).schema.names == ["name", "age", "_row_kind"]


def test_named_rows_with_other_field_order_only() -> None:
    t = Types.ROW_NAMED(["b", "a"], [Types.STRING(), Types.INT()])
    recs = [Row(a=1, b="x"), Row(a=2, b="y")]
    assert [r.as_dict() for r in roundtrip(t, recs)] == [{"b": "x", "a": 1}, {"b": "y", "a": 2}]


def test_row_kind_survives_and_rows_stay_mutable() -> None:
    t = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.LONG()])
    recs = [Row(k="a", v=1), Row(k="b", v=2), Row(k="c", v=3)]
    recs[1].set_row_kind(RowKind.UPDATE_BEFORE)
    recs[2].set_row_kind(RowKind.DELETE)
    out = roundtrip(t, recs)
    assert out == recs
    assert [r.get_row_kind() for r in out] == [
        RowKind.INSERT,
        RowKind.UPDATE_BEFORE,
        RowKind.DELETE,
    ]
    out[0]["v"] = 10
    assert out[0].v == 10 and hash(out[0]) == hash(("a", 10))


def test_row_fields_may_be_none_tuple_fields_may_not() -> None:
    row_t = Types.ROW([Types.INT(), Types.BOOLEAN(), Types.DOUBLE(), Types.LIST(Types.INT())])
    assert roundtrip(row_t, [Row(None, None, None, None)]) == [Row(None, None, None, None)]
    tuple_t = Types.TUPLE([Types.INT(), Types.BOOLEAN(), Types.DOUBLE()])
    for i in range(3):
        rec = [1, True, 1.0]
        rec[i] = None
        with pytest.raises(RecordTypeError, match="must not be None") as info:
            serializer_for(tuple_t).to_batches([(1, True, 1.0), tuple(rec)], BIG)
        assert info.value.index == 1 and info.value.field == f"f{i}"


def test_empty_row_type() -> None:
    assert roundtrip(Types.ROW([]), [Row(), ()]) == [Row(), Row()]


def test_list_of_type_infos_means_row() -> None:
    assert serializer_for([Types.STRING(), Types.INT()]) is serializer_for(
        Types.ROW([Types.STRING(), Types.INT()])
    )
    assert serializer_for(None) is serializer_for(Types.PICKLED_BYTE_ARRAY())


def test_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True)
    class Instant:
        seconds: int
        nanos: int

    monkeypatch.setattr(records, "_instant_class", lambda: Instant)
    records._typed_serializer.cache_clear()
    try:
        values = [Instant(0, 0), Instant(1_700_000_000, 123_456_789), Instant(-5, 1), None]
        assert roundtrip(Types.INSTANT(), values) == values
    finally:
        records._typed_serializer.cache_clear()


def test_batches_read_back_from_ipc_and_slices() -> None:
    t = Types.TUPLE([Types.STRING(), Types.LIST(Types.BIG_INT()), Types.ROW([Types.INT()])])
    recs = [(f"w{i}", [i, None, 10**30], Row(i)) for i in range(200)]
    ser = serializer_for(t)
    batches = ser.to_batches(recs, 2048)
    assert len(batches) > 1
    out = [r for b in batches for r in ser.from_batch(through_ipc(b))]
    assert out == recs


# -- batch sizing ----------------------------------------------------------------------


def ipc_size(ser: records.RecordSerializer, batch: pa.RecordBatch) -> int:
    return pa.ipc.get_record_batch_size(batch) + ser.schema_size


@pytest.mark.parametrize(
    "type_info",
    [None, Types.TUPLE([Types.STRING(), Types.LONG()]), Types.ROW([Types.STRING(), Types.LONG()])],
    ids=repr,
)
@pytest.mark.parametrize("max_bytes", [1024, 4096, 32 * 1024])
def test_batches_fit_max_bytes(type_info: Any, max_bytes: int) -> None:
    recs = [("x" * (i % 97), i) for i in range(5000)]
    if type_info is not None and type_info.__class__.__name__ == "RowTypeInfo":
        recs = [Row(*r) for r in recs]
    ser = serializer_for(type_info)
    batches = ser.to_batches(recs, max_bytes)
    assert len(batches) > 1
    for batch in batches:
        assert ipc_size(ser, batch) <= max_bytes
    out = [r for b in batches for r in ser.from_batch(b)]
    assert out == recs


@pytest.mark.parametrize("type_info", [None, Types.TUPLE([Types.STRING(), Types.LONG()])], ids=repr)
def test_oversized_record_travels_alone(type_info: Any) -> None:
    huge = ("y" * 100_000, -1)
    recs = [("a", i) for i in range(300)] + [huge] + [("b", i) for i in range(300)]
    ser = serializer_for(type_info)
    batches = ser.to_batches(recs, 4096)
    big = [b for b in batches if ipc_size(ser, b) > 4096]
    assert len(big) == 1
    assert ser.from_batch(big[0]) == [huge]
    assert [r for b in batches for r in ser.from_batch(b)] == recs


def test_pickled_chunks_hold_many_records_per_row() -> None:
    ser = serializer_for(None)
    recs = list(range(10_000))
    batches = ser.to_batches(recs, BIG)
    assert ser.schema.names == ["_pickled"]
    assert sum(b.num_rows for b in batches) < 10  # pickled in chunks, not one by one
    assert [r for b in batches for r in ser.from_batch(b)] == recs


def test_pickled_from_sliced_and_ipc_batches() -> None:
    ser = serializer_for(None)
    recs = [{"i": i, "s": "z" * (i % 50)} for i in range(3000)]
    batches = ser.to_batches(recs, 8192)
    assert [r for b in batches for r in ser.from_batch(through_ipc(b))] == recs
    # A multi-row pickled batch sliced zero-copy still decodes (offsets honour the slice).
    (batch,) = ser.to_batches(recs, BIG)
    if batch.num_rows > 1:
        tail = batch.slice(1)
        assert ser.from_batch(tail) == recs[len(ser.from_batch(batch.slice(0, 1))) :]


# -- pickling ----------------------------------------------------------------------------


def test_objects_of_a_module_class_round_trip() -> None:
    recs = [Point(i, f"p{i}") for i in range(1000)]
    assert roundtrip(None, recs, 4096) == recs


CHILD = """
import json, sys
import pyarrow as pa
from flowrun.core.records import serializer_for
batch = pa.ipc.open_stream(sys.stdin.buffer.read()).read_next_batch()
points = serializer_for(None).from_batch(batch)
print(json.dumps([[type(p).__module__, type(p).__name__, p.x, p.label] for p in points]))
"""


def test_objects_of_a_module_class_cross_a_process() -> None:
    # The subtask process imports the job module by name; here the job module is this file.
    recs = [Point(i, "p") for i in range(100)]
    (batch,) = serializer_for(None).to_batches(recs, BIG)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=sink.getvalue().to_pybytes(),
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == [[Point.__module__, "Point", p.x, p.label] for p in recs]


def test_lambdas_fall_back_to_cloudpickle() -> None:
    recs = [("f", lambda x: x + 1), ("g", lambda x: x * 3)]
    out = roundtrip(None, recs)
    assert [name for name, _ in out] == ["f", "g"]
    assert out[0][1](1) == 2 and out[1][1](2) == 6


def test_unpicklable_record_is_named() -> None:
    recs = [1, 2, threading.Lock(), 4]
    with pytest.raises(RecordTypeError) as info:
        serializer_for(None).to_batches(recs, BIG)
    assert info.value.index == 2 and info.value.field is None
    assert "lock" in str(info.value)


# -- type errors --------------------------------------------------------------------------

WORD_COUNT = Types.TUPLE([Types.STRING(), Types.INT()])


@pytest.mark.parametrize(
    ("type_info", "bad", "field", "match"),
    [
        (WORD_COUNT, ("a", 1, 2), None, "expected 2 fields, got 3"),
        (WORD_COUNT, ("a",), None, "expected 2 fields, got 1"),
        (WORD_COUNT, ("a", "one"), "f1", "one"),
        (WORD_COUNT, ("a", 2**31), "f1", "2147483648"),
        (WORD_COUNT, ("a", 1.5), "f1", "expected int"),
        (WORD_COUNT, ("a", True), "f1", "expected int"),
        (WORD_COUNT, (1, 1), "f0", "expected String"),
        (WORD_COUNT, None, None, "must not be None"),
        (WORD_COUNT, "ab", None, "got str"),
        (WORD_COUNT, {"f0": "a", "f1": 1}, None, "got dict"),
        (Types.TUPLE([Types.CHAR()]), ("ab",), "f0", "one character"),
        (Types.TUPLE([Types.CHAR()]), (b"a",), "f0", "expected str, got bytes"),
        (WORD_COUNT, (b"ok", 1), "f0", "expected str, got bytes"),
        (WORD_COUNT, (bytearray(b"ok"), 1), "f0", "expected str, got bytes"),
        (WORD_COUNT, (7, 1), "f0", "int"),
        (Types.STRING(), b"x", None, "expected str, got bytes"),
        (Types.TUPLE([Types.LIST(Types.STRING())]), (["a", b"b"],), "f0", "expected str"),
        (Types.TUPLE([Types.MAP(Types.STRING(), Types.INT())]), ({b"k": 1},), "f0", "str"),
        (Types.TUPLE([Types.LIST(Types.INT())]), ([1, None],), "f0", "must not be None"),
        (Types.TUPLE([Types.LIST(Types.INT())]), ("12",), "f0", "expected a list"),
        (Types.TUPLE([Types.MAP(Types.STRING(), Types.INT())]), ({None: 1},), "f0", "keys"),
        (Types.TUPLE([Types.BIG_INT()]), (1.5,), "f0", "float"),
        (Types.TUPLE([Types.BIG_DEC()]), (1.5,), "f0", "Decimal"),
        (Types.TUPLE([Types.PRIMITIVE_ARRAY(Types.BYTE())]), ("ab",), "f0", "bytes"),
        (Types.TUPLE([Types.TUPLE([Types.INT()])]), ((None,),), "f0", "must not be None"),
        (Types.ROW_NAMED(["a"], [Types.INT()]), Row(b=1), None, "declares"),
        (Types.ROW([Types.INT()]), Row("x"), "f0", "x"),
        (Types.INT(), None, None, "None is not allowed"),
        (Types.BOOLEAN(), 1, None, "boolean"),
        (Types.DOUBLE(), "1.0", None, "double"),
        (Types.SHORT(), 40000, None, "40000"),
    ],
    ids=lambda x: repr(x)[:30],
)
def test_type_errors_name_record_index_and_field(
    type_info: TypeInformation, bad: Any, field: str | None, match: str
) -> None:
    good = {
        WORD_COUNT: ("ok", 1),
        Types.INT(): 1,
        Types.BOOLEAN(): True,
        Types.DOUBLE(): 1.0,
        Types.SHORT(): 1,
    }.get(type_info)
    ser = serializer_for(type_info)
    if good is None:
        good_records = []
    else:
        good_records = [good, good, good]
    recs = [*good_records, bad, *good_records]
    with pytest.raises(RecordTypeError, match=match) as info:
        ser.to_batches(recs, BIG)
    err = info.value
    assert isinstance(err, TypeError)
    assert err.index == len(good_records)
    assert err.record is bad or err.record == bad
    assert err.field == field
    assert err.cause is not None
    assert f"record #{err.index}" in str(err)
    assert repr(type_info if field is None else err.expected) in str(err)


@pytest.mark.parametrize(
    ("type_info", "good", "bad"),
    [
        (Types.TUPLE([Types.STRING(), Types.LONG()]), ("a", -(2**63)), ("a", 2**63)),
        (Types.TUPLE([Types.STRING(), Types.LONG()]), ("a", 2**63 - 1), ("a", -(2**63) - 1)),
        (Types.TUPLE([Types.STRING(), Types.LONG()]), (None, 1), ("a", True)),
        (Types.TUPLE([Types.STRING(), Types.INT()]), ("a", -(2**31)), ("a", 2**31)),
        (Types.TUPLE([Types.STRING(), Types.SHORT()]), ("a", 32767), ("a", -32769)),
        (Types.TUPLE([Types.STRING(), Types.BYTE()]), ("a", -128), ("a", 128)),
        (Types.TUPLE([Types.STRING(), Types.DOUBLE()]), ("a", 1.5), ("a", None)),
        (Types.TUPLE([Types.BOOLEAN()]), (True,), (1,)),
        (Types.TUPLE([Types.STRING(), Types.LONG()]), ("a", 1), ["a", 1, 2]),
        (Types.LONG(), 2**63 - 1, 2**63),
        (Types.STRING(), None, 1),
    ],
    ids=lambda x: repr(x)[:30],
)
def test_chained_edge_validator_agrees_with_the_serializer(
    type_info: TypeInformation, good: Any, bad: Any
) -> None:
    validate = records.validator_for(type_info)
    validate([good] * 5)
    serializer_for(type_info).to_batches([good] * 5, BIG)  # the serializer accepts it too
    with pytest.raises(RecordTypeError) as info:
        validate([good, good, bad, good])
    assert info.value.index == 2 and info.value.record is bad


def test_type_error_message_truncates_long_records() -> None:
    bad = ("x" * 1000, "not an int")
    with pytest.raises(RecordTypeError) as info:
        serializer_for(WORD_COUNT).to_batches([bad], BIG)
    message = str(info.value)
    assert "xxx..." in message
    assert len(message) < 600
    assert info.value.expected == Types.INT() and info.value.field == "f1"


def test_type_error_pickles() -> None:
    with pytest.raises(RecordTypeError) as info:
        serializer_for(WORD_COUNT).to_batches([("a", threading.Lock())], BIG)
    clone = pickle.loads(pickle.dumps(info.value))
    assert str(clone) == str(info.value)
    assert clone.index == 0 and clone.field == "f1" and clone.expected == Types.INT()


def test_reserved_and_impossible_types() -> None:
    with pytest.raises(TypeError, match="reserved"):
        serializer_for(Types.ROW_NAMED(["_row_kind"], [Types.INT()]))
    with pytest.raises(TypeError, match="no fields"):
        serializer_for(Types.TUPLE([]))
