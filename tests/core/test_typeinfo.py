"""Types / TypeInformation: factories, structural equality, reprs, Arrow types, pickling."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest

from flowrun.core.typeinfo import (
    BasicArrayTypeInfo,
    BasicType,
    BasicTypeInfo,
    DateTypeInfo,
    ExternalTypeInfo,
    InstantTypeInfo,
    ListTypeInfo,
    MapTypeInfo,
    ObjectArrayTypeInfo,
    PickledBytesTypeInfo,
    PrimitiveArrayTypeInfo,
    RowTypeInfo,
    SqlTimeTypeInfo,
    TimestampTypeInfo,
    TimeTypeInfo,
    TupleTypeInfo,
    TypeInformation,
    Types,
    normalize_type,
)

ARROW_TYPES = [
    (Types.STRING(), pa.string()),
    (Types.BYTE(), pa.int8()),
    (Types.BOOLEAN(), pa.bool_()),
    (Types.SHORT(), pa.int16()),
    (Types.INT(), pa.int32()),
    (Types.LONG(), pa.int64()),
    (Types.FLOAT(), pa.float32()),
    (Types.DOUBLE(), pa.float64()),
    (Types.CHAR(), pa.string()),
    (Types.BIG_INT(), pa.string()),
    (Types.BIG_DEC(), pa.string()),
    (Types.INSTANT(), pa.timestamp("ns", tz="UTC")),
    (Types.SQL_DATE(), pa.date32()),
    (Types.SQL_TIME(), pa.time64("us")),
    (Types.SQL_TIMESTAMP(), pa.timestamp("us")),
    (Types.PICKLED_BYTE_ARRAY(), pa.binary()),
    (Types.PRIMITIVE_ARRAY(Types.BYTE()), pa.binary()),
    (Types.PRIMITIVE_ARRAY(Types.INT()), pa.list_(pa.int32())),
    (Types.BASIC_ARRAY(Types.STRING()), pa.list_(pa.string())),
    (Types.OBJECT_ARRAY(Types.LIST(Types.LONG())), pa.list_(pa.list_(pa.int64()))),
    (Types.LIST(Types.DOUBLE()), pa.list_(pa.float64())),
    (Types.MAP(Types.STRING(), Types.INT()), pa.map_(pa.string(), pa.int32())),
    (
        Types.TUPLE([Types.STRING(), Types.LONG()]),
        pa.struct([("f0", pa.string()), ("f1", pa.int64())]),
    ),
    (Types.ROW([Types.INT()]), pa.struct([("f0", pa.int32())])),
    (
        Types.ROW_NAMED(["a", "b"], [Types.INT(), Types.ROW([Types.STRING()])]),
        pa.struct([("a", pa.int32()), ("b", pa.struct([("f0", pa.string())]))]),
    ),
]


@pytest.mark.parametrize(("type_info", "arrow_type"), ARROW_TYPES, ids=lambda x: repr(x))
def test_arrow_type(type_info: TypeInformation, arrow_type: pa.DataType) -> None:
    assert type_info.to_arrow_type() == arrow_type


@pytest.mark.parametrize("type_info", [t for t, _ in ARROW_TYPES], ids=repr)
def test_equal_hash_and_pickle(type_info: TypeInformation) -> None:
    clone = pickle.loads(pickle.dumps(type_info))
    assert clone == type_info
    assert hash(clone) == hash(type_info)
    assert not clone != type_info
    assert {type_info: 1}[clone] == 1


def test_factory_classes() -> None:
    assert isinstance(Types.INT(), BasicTypeInfo)
    assert isinstance(Types.INSTANT(), InstantTypeInfo)
    assert isinstance(Types.SQL_DATE(), DateTypeInfo)
    assert isinstance(Types.SQL_TIME(), TimeTypeInfo)
    assert isinstance(Types.SQL_TIMESTAMP(), TimestampTypeInfo)
    assert isinstance(Types.PICKLED_BYTE_ARRAY(), PickledBytesTypeInfo)
    assert isinstance(Types.ROW([Types.INT()]), RowTypeInfo)
    assert isinstance(Types.TUPLE([Types.INT()]), TupleTypeInfo)
    assert isinstance(Types.PRIMITIVE_ARRAY(Types.INT()), PrimitiveArrayTypeInfo)
    assert isinstance(Types.BASIC_ARRAY(Types.INT()), BasicArrayTypeInfo)
    assert isinstance(Types.OBJECT_ARRAY(Types.INT()), ObjectArrayTypeInfo)
    assert isinstance(Types.MAP(Types.INT(), Types.INT()), MapTypeInfo)
    assert isinstance(Types.LIST(Types.INT()), ListTypeInfo)
    assert SqlTimeTypeInfo.DATE() == Types.SQL_DATE()
    assert BasicTypeInfo.LONG_TYPE_INFO() == Types.LONG()
    assert BasicTypeInfo(BasicType.INSTANT) == Types.INSTANT()


def test_structural_inequality() -> None:
    assert Types.INT() != Types.LONG()
    assert Types.STRING() != Types.CHAR()
    assert Types.TUPLE([Types.INT()]) != Types.ROW([Types.INT()])
    assert Types.ROW_NAMED(["a"], [Types.INT()]) != Types.ROW_NAMED(["b"], [Types.INT()])
    assert Types.ROW([Types.INT()]) == Types.ROW_NAMED(["f0"], [Types.INT()])
    assert Types.MAP(Types.INT(), Types.STRING()) != Types.MAP(Types.STRING(), Types.INT())
    assert Types.LIST(Types.INT()) != Types.BASIC_ARRAY(Types.INT())
    assert Types.PRIMITIVE_ARRAY(Types.INT()) != Types.BASIC_ARRAY(Types.INT())
    assert Types.INT() != "Integer"
    assert len({Types.INT(), Types.INT(), Types.LONG()}) == 2


def test_reprs() -> None:
    assert repr(Types.INT()) == "Integer"
    assert str(Types.STRING()) == "String"
    assert repr(Types.TUPLE([Types.STRING(), Types.LONG()])) == "TupleTypeInfo(String, Long)"
    assert repr(Types.ROW([Types.INT(), Types.DOUBLE()])) == "RowTypeInfo(Integer, Double)"
    assert (
        repr(Types.ROW_NAMED(["w", "c"], [Types.STRING(), Types.LONG()]))
        == "RowTypeInfo(w: String, c: Long)"
    )
    assert repr(Types.LIST(Types.INT())) == "ListTypeInfo<Integer>"
    assert repr(Types.MAP(Types.STRING(), Types.INT())) == "MapTypeInfo<String, Integer>"
    assert repr(Types.PRIMITIVE_ARRAY(Types.BYTE())) == "PrimitiveArrayTypeInfo<Byte>"
    assert repr(Types.BASIC_ARRAY(Types.STRING())) == "BasicArrayTypeInfo<String>"
    assert repr(Types.OBJECT_ARRAY(Types.INT())) == "ObjectArrayTypeInfo<Integer>"
    assert repr(Types.PICKLED_BYTE_ARRAY()) == "PickledByteArrayTypeInfo"
    assert repr(Types.SQL_DATE()) == "DateTypeInfo"
    assert repr(ExternalTypeInfo(Types.INT())) == "ExternalTypeInfo<Integer>"


def test_row_type_info_accessors() -> None:
    named = RowTypeInfo([Types.STRING(), Types.INT()], ["name", "age"])
    assert named.get_field_names() == ["name", "age"]
    assert named.get_field_types() == [Types.STRING(), Types.INT()]
    assert named.get_field_index("age") == 1
    assert named.get_field_index("missing") == -1
    unnamed = Types.ROW([Types.STRING(), Types.INT()])
    assert unnamed.get_field_names() == ["f0", "f1"]
    assert unnamed.get_field_index("f1") == 1
    assert not unnamed.has_field_names() and named.has_field_names()
    assert Types.TUPLE([Types.INT()]).get_field_types() == [Types.INT()]
    assert Types.LIST(Types.INT()).elem_type == Types.INT()


def test_invalid_declarations() -> None:
    with pytest.raises(ValueError, match="2 field names for 1"):
        Types.ROW_NAMED(["a", "b"], [Types.INT()])
    with pytest.raises(ValueError, match="duplicate"):
        Types.ROW_NAMED(["a", "a"], [Types.INT(), Types.INT()])
    with pytest.raises(TypeError, match="field_types"):
        Types.ROW([int])
    with pytest.raises(TypeError, match="list of TypeInformation"):
        Types.TUPLE(Types.INT())
    with pytest.raises(TypeError, match="PRIMITIVE_ARRAY"):
        Types.PRIMITIVE_ARRAY(Types.STRING())
    with pytest.raises(TypeError, match="BASIC_ARRAY"):
        Types.BASIC_ARRAY(Types.LIST(Types.INT()))
    with pytest.raises(TypeError):
        Types.MAP(Types.INT(), str)


def test_normalize_type() -> None:
    assert normalize_type(None) is None
    t = Types.INT()
    assert normalize_type(t) is t
    assert normalize_type([Types.STRING(), Types.INT()]) == Types.ROW([Types.STRING(), Types.INT()])
    with pytest.raises(TypeError, match="instance"):
        normalize_type(BasicTypeInfo)
    with pytest.raises(TypeError, match="TypeInformation"):
        normalize_type(int)
