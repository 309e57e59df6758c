"""State descriptors (PyFlink signatures, strict types, structural equality, compatibility) and
the state interfaces' hierarchy and concrete helpers."""

from __future__ import annotations

import inspect
import pickle

import cloudpickle
import pytest

import flowrun.state as state_pkg
from flowrun.core.functions import AggregateFunction, MapFunction, ReduceFunction
from flowrun.core.typeinfo import Types
from flowrun.state import (
    AggregatingState,
    AggregatingStateDescriptor,
    AppendingState,
    BroadcastState,
    IncompatibleStateError,
    ListState,
    ListStateDescriptor,
    MapState,
    MapStateDescriptor,
    MergingState,
    ReadOnlyBroadcastState,
    ReducingState,
    ReducingStateDescriptor,
    State,
    StateDescriptor,
    StateTtlConfig,
    Time,
    ValueState,
    ValueStateDescriptor,
)
from flowrun.state.descriptors import check_compatible


class Sum(ReduceFunction):
    def reduce(self, value1, value2):
        return value1 + value2


class Avg(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, accumulator):
        return (accumulator[0] + value, accumulator[1] + 1)

    def get_result(self, accumulator):
        return accumulator[0] / accumulator[1]

    def merge(self, acc_a, acc_b):
        return (acc_a[0] + acc_b[0], acc_a[1] + acc_b[1])


def add(a, b):
    return a + b


ACC = Types.TUPLE([Types.LONG(), Types.LONG()])


def all_descriptors():
    return [
        ValueStateDescriptor("v", Types.LONG()),
        ListStateDescriptor("l", Types.STRING()),
        MapStateDescriptor("m", Types.STRING(), Types.INT()),
        ReducingStateDescriptor("r", Sum(), Types.LONG()),
        AggregatingStateDescriptor("a", Avg(), ACC),
    ]


# ------------------------------------------------------------------------------------------
# Construction
# ------------------------------------------------------------------------------------------


def test_signatures_mirror_pyflink():
    def params(cls):
        return list(inspect.signature(cls.__init__).parameters)[1:]

    assert params(StateDescriptor) == ["name", "type_info"]
    assert params(ValueStateDescriptor) == ["name", "value_type_info"]
    assert params(ListStateDescriptor) == ["name", "elem_type_info"]
    assert params(MapStateDescriptor) == ["name", "key_type_info", "value_type_info"]
    assert params(ReducingStateDescriptor) == ["name", "reduce_function", "type_info"]
    assert params(AggregatingStateDescriptor) == ["name", "agg_function", "state_type_info"]


def test_value_descriptor():
    d = ValueStateDescriptor("count", Types.LONG())
    assert d.name == d.get_name() == "count"
    assert d.type_info == Types.LONG()
    assert d.ttl_config is None and d._ttl_config is None
    assert repr(d) == "ValueStateDescriptor('count', Long)"
    assert isinstance(d, StateDescriptor)


def test_list_descriptor_stores_a_list_type():
    d = ListStateDescriptor("seen", Types.STRING())
    assert d.type_info == Types.LIST(Types.STRING())
    assert d.elem_type_info == Types.STRING()


def test_map_descriptor_stores_a_map_type():
    d = MapStateDescriptor("totals", Types.STRING(), Types.DOUBLE())
    assert d.type_info == Types.MAP(Types.STRING(), Types.DOUBLE())
    assert (d.key_type_info, d.value_type_info) == (Types.STRING(), Types.DOUBLE())


def test_reducing_descriptor_functions():
    fn = Sum()
    d = ReducingStateDescriptor("sum", fn, Types.LONG())
    assert d.get_reduce_function() is fn
    wrapped = ReducingStateDescriptor("sum", lambda a, b: a * b, Types.LONG())
    assert isinstance(wrapped.get_reduce_function(), ReduceFunction)
    assert wrapped.get_reduce_function().reduce(3, 4) == 12
    assert ReducingStateDescriptor("sum", max, Types.LONG()).get_reduce_function().reduce(1, 2) == 2
    with pytest.raises(TypeError, match="ReduceFunction or a callable"):
        ReducingStateDescriptor("sum", 5, Types.LONG())
    with pytest.raises(TypeError, match=r"pass an instance: Sum\(\)"):
        ReducingStateDescriptor("sum", Sum, Types.LONG())

    class Doubler(MapFunction):
        def map(self, value):
            return value * 2

    with pytest.raises(TypeError, match="ReduceFunction or a callable"):
        ReducingStateDescriptor("sum", Doubler(), Types.LONG())


def test_aggregating_descriptor_needs_an_aggregate_function():
    fn = Avg()
    d = AggregatingStateDescriptor("avg", fn, ACC)
    assert d.get_agg_function() is fn and d.type_info == ACC
    for bad in [lambda v, acc: acc, Sum(), None, "avg"]:
        with pytest.raises(TypeError, match="AggregateFunction"):
            AggregatingStateDescriptor("avg", bad, ACC)
    with pytest.raises(TypeError, match=r"pass an instance: Avg\(\)"):
        AggregatingStateDescriptor("avg", Avg, ACC)


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: ValueStateDescriptor("x", None), "a type"),
        (lambda: ListStateDescriptor("x", None), "an element type"),
        (lambda: MapStateDescriptor("x", None, Types.INT()), "a key type"),
        (lambda: MapStateDescriptor("x", Types.INT(), None), "a value type"),
        (lambda: ReducingStateDescriptor("x", Sum(), None), "a type"),
        (lambda: AggregatingStateDescriptor("x", Avg(), None), "a type"),
    ],
)
def test_descriptors_need_a_type(make, what):
    with pytest.raises(TypeError) as info:
        make()
    message = str(info.value)
    assert "'x'" in message and f"needs {what}" in message
    assert "use Types.PICKLED_BYTE_ARRAY() for arbitrary objects" in message


def test_types_must_be_type_info_instances():
    with pytest.raises(TypeError, match="TypeInformation"):
        ValueStateDescriptor("x", int)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TypeInformation"):
        ValueStateDescriptor("x", "LONG")  # type: ignore[arg-type]
    from flowrun.core.typeinfo import PickledBytesTypeInfo

    with pytest.raises(TypeError, match="not the class PickledBytesTypeInfo"):
        ValueStateDescriptor("x", PickledBytesTypeInfo)  # type: ignore[arg-type]
    assert ValueStateDescriptor("x", Types.PICKLED_BYTE_ARRAY()).type_info == (
        Types.PICKLED_BYTE_ARRAY()
    )


def test_names_must_be_non_empty_strings():
    with pytest.raises(TypeError, match="name must be a str"):
        ValueStateDescriptor(1, Types.INT())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        ListStateDescriptor("", Types.INT())


def test_enable_time_to_live():
    d = ValueStateDescriptor("v", Types.INT())
    config = StateTtlConfig.new_builder(Time.seconds(5)).build()
    assert d.enable_time_to_live(config) is None
    assert d.ttl_config is config and d._ttl_config is config
    assert "ttl=" in repr(d)
    with pytest.raises(TypeError, match="StateTtlConfig"):
        d.enable_time_to_live(Time.seconds(5))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Equality, hashing, pickling
# ------------------------------------------------------------------------------------------


def test_structural_equality():
    for a, b in zip(all_descriptors(), all_descriptors(), strict=True):
        assert a == b and hash(a) == hash(b) and a is not b
    assert ValueStateDescriptor("v", Types.LONG()) != ValueStateDescriptor("w", Types.LONG())
    assert ValueStateDescriptor("v", Types.LONG()) != ValueStateDescriptor("v", Types.INT())
    # same name and stored type, different kind
    assert ValueStateDescriptor("x", Types.LIST(Types.INT())) != ListStateDescriptor(
        "x", Types.INT()
    )
    assert ReducingStateDescriptor("x", Sum(), Types.LONG()) != ValueStateDescriptor(
        "x", Types.LONG()
    )
    # functions and TTL are not part of the identity
    assert ReducingStateDescriptor("r", Sum(), Types.LONG()) == ReducingStateDescriptor(
        "r", add, Types.LONG()
    )
    with_ttl = ValueStateDescriptor("v", Types.LONG())
    with_ttl.enable_time_to_live(StateTtlConfig.new_builder(Time.seconds(1)).build())
    assert with_ttl == ValueStateDescriptor("v", Types.LONG())
    assert ValueStateDescriptor("v", Types.LONG()) != "v"
    assert len(set(all_descriptors() + all_descriptors())) == 5


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_descriptors_pickle(dumps):
    for d in [*all_descriptors(), ReducingStateDescriptor("f", add, Types.LONG())]:
        d.enable_time_to_live(StateTtlConfig.new_builder(Time.seconds(3)).build())
        back = pickle.loads(dumps(d))
        assert back == d and type(back) is type(d)
        assert back.ttl_config == d.ttl_config
    r = pickle.loads(dumps(ReducingStateDescriptor("f", add, Types.LONG())))
    assert r.get_reduce_function().reduce(1, 2) == 3
    a = pickle.loads(dumps(AggregatingStateDescriptor("a", Avg(), ACC)))
    assert isinstance(a.get_agg_function(), Avg)


def test_lambda_reduce_functions_pickle_with_cloudpickle():
    d = ReducingStateDescriptor("f", lambda a, b: a - b, Types.LONG())
    back = cloudpickle.loads(cloudpickle.dumps(d))
    assert back.get_reduce_function().reduce(5, 2) == 3


# ------------------------------------------------------------------------------------------
# check_compatible
# ------------------------------------------------------------------------------------------


def test_compatible_registrations():
    for a, b in zip(all_descriptors(), all_descriptors(), strict=True):
        assert check_compatible(a, b) is None
    config = StateTtlConfig.new_builder(Time.seconds(1)).build()
    a, b = ValueStateDescriptor("v", Types.INT()), ValueStateDescriptor("v", Types.INT())
    a.enable_time_to_live(config)
    b.enable_time_to_live(StateTtlConfig.new_builder(Time.seconds(1)).build())
    check_compatible(a, b)
    check_compatible(
        ReducingStateDescriptor("r", Sum(), Types.LONG()),
        ReducingStateDescriptor("r", add, Types.LONG()),
    )


def test_different_types_are_incompatible():
    with pytest.raises(IncompatibleStateError) as info:
        check_compatible(
            ValueStateDescriptor("n", Types.INT()), ValueStateDescriptor("n", Types.LONG())
        )
    message = str(info.value)
    assert "'n'" in message and "ValueState<Integer>" in message and "ValueState<Long>" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(
        IncompatibleStateError, match=r"MapState<String, Integer>.*MapState<String, Long>"
    ):
        check_compatible(
            MapStateDescriptor("m", Types.STRING(), Types.INT()),
            MapStateDescriptor("m", Types.STRING(), Types.LONG()),
        )


def test_different_kinds_are_incompatible():
    with pytest.raises(
        IncompatibleStateError, match=r"ValueState<ListTypeInfo<Integer>>.*ListState<Integer>"
    ):
        check_compatible(
            ValueStateDescriptor("x", Types.LIST(Types.INT())),
            ListStateDescriptor("x", Types.INT()),
        )
    with pytest.raises(IncompatibleStateError, match="ReducingState<Long>"):
        check_compatible(
            ValueStateDescriptor("x", Types.LONG()),
            ReducingStateDescriptor("x", Sum(), Types.LONG()),
        )


def test_ttl_differences_are_incompatible():
    plain = ValueStateDescriptor("v", Types.INT())
    one = ValueStateDescriptor("v", Types.INT())
    one.enable_time_to_live(StateTtlConfig.new_builder(Time.seconds(1)).build())
    two = ValueStateDescriptor("v", Types.INT())
    two.enable_time_to_live(StateTtlConfig.new_builder(Time.seconds(2)).build())
    with pytest.raises(IncompatibleStateError, match="without TTL and requested with"):
        check_compatible(plain, one)
    with pytest.raises(IncompatibleStateError, match="requested without TTL"):
        check_compatible(one, plain)
    with pytest.raises(IncompatibleStateError, match="60000|1000.*2000"):
        check_compatible(one, two)


def test_check_compatible_argument_errors():
    with pytest.raises(ValueError, match="'a' and 'b'"):
        check_compatible(
            ValueStateDescriptor("a", Types.INT()), ValueStateDescriptor("b", Types.INT())
        )
    with pytest.raises(TypeError, match="state descriptors"):
        check_compatible("a", ValueStateDescriptor("a", Types.INT()))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# State interfaces and package exports
# ------------------------------------------------------------------------------------------


def test_hierarchy_matches_pyflink():
    assert issubclass(AppendingState, State)
    assert issubclass(MergingState, AppendingState)
    for cls in (ListState, ReducingState, AggregatingState):
        assert issubclass(cls, MergingState)
    for cls in (ValueState, MapState, ReadOnlyBroadcastState):
        assert issubclass(cls, State) and not issubclass(cls, AppendingState)
    assert issubclass(BroadcastState, ReadOnlyBroadcastState)
    for cls in (
        State,
        ValueState,
        ListState,
        MapState,
        ReducingState,
        AggregatingState,
        BroadcastState,
    ):
        with pytest.raises(TypeError):
            cls()


def test_abstract_methods():
    def abstract(cls):
        return set(cls.__abstractmethods__)

    assert abstract(ValueState) == {"clear", "value", "update"}
    assert abstract(ListState) == {"clear", "get", "add", "update", "add_all"}
    assert abstract(ReducingState) == {"clear", "get", "add"}
    assert abstract(AggregatingState) == {"clear", "get", "add"}
    assert abstract(MapState) == {
        "clear", "get", "put", "put_all", "remove", "contains", "items", "keys", "values", "is_empty",
    }  # fmt: skip
    assert abstract(ReadOnlyBroadcastState) == {
        "clear", "get", "contains", "items", "keys", "values", "is_empty",
    }  # fmt: skip
    assert abstract(BroadcastState) == abstract(ReadOnlyBroadcastState) | {
        "put",
        "put_all",
        "remove",
    }


class DictMapState(MapState):
    """The smallest MapState: enough to exercise the concrete helpers of the interface."""

    def __init__(self):
        self.d = {}

    def get(self, key):
        return self.d.get(key)

    def put(self, key, value):
        self.d[key] = value

    def put_all(self, dict_value):
        self.d.update(dict_value)

    def remove(self, key):
        self.d.pop(key, None)

    def contains(self, key):
        return key in self.d

    def items(self):
        return list(self.d.items())

    def keys(self):
        return list(self.d)

    def values(self):
        return list(self.d.values())

    def is_empty(self):
        return not self.d

    def clear(self):
        self.d.clear()


class DictBroadcastState(BroadcastState):
    def __init__(self):
        self.d = {}

    get = DictMapState.get
    put = DictMapState.put
    put_all = DictMapState.put_all
    remove = DictMapState.remove
    contains = DictMapState.contains
    items = DictMapState.items
    keys = DictMapState.keys
    values = DictMapState.values
    is_empty = DictMapState.is_empty
    clear = DictMapState.clear


class PyListState(ListState):
    def __init__(self):
        self.items = []

    def get(self):
        return list(self.items)

    def add(self, value):
        self.items.append(value)

    def add_all(self, values):
        self.items.extend(values)

    def update(self, values):
        self.items = list(values)

    def clear(self):
        self.items = []


def test_map_state_helpers():
    m = DictMapState()
    m["a"] = 1
    m.put_all({"b": 2})
    assert m["a"] == 1 and "b" in m and "z" not in m
    assert list(m) == ["a", "b"]
    assert list(m.entries()) == list(m.items()) == [("a", 1), ("b", 2)]
    del m["a"]
    assert list(m) == ["b"]


def test_broadcast_state_helpers():
    b = DictBroadcastState()
    b["k"] = "v"
    assert b["k"] == "v" and "k" in b and list(b) == ["k"]
    del b["k"]
    assert b.is_empty()
    assert not hasattr(ReadOnlyBroadcastState, "__setitem__")


def test_list_state_is_iterable():
    s = PyListState()
    s.add_all([1, 2])
    s.add(3)
    assert list(s) == [1, 2, 3]


def test_package_exports():
    expected = {
        "AggregatingState", "AggregatingStateDescriptor", "AppendingState", "BroadcastState",
        "IncompatibleStateError", "ListState", "ListStateDescriptor", "MapState",
        "MapStateDescriptor", "MergingState", "ReadOnlyBroadcastState", "ReducingState",
        "ReducingStateDescriptor", "State", "StateDescriptor", "StateTtlConfig", "StateTypeError",
        "Time", "ValueState", "ValueStateDescriptor",
    }  # fmt: skip
    assert expected <= set(state_pkg.__all__)
    for name in expected:
        assert getattr(state_pkg, name) is not None
