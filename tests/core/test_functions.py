"""Function base classes, RuntimeContext and the adapters the engine calls user code with."""

from __future__ import annotations

from typing import Any

import pytest

from flowrun.core.functions import (
    AggregateFunction,
    CoFlatMapFunction,
    CoMapFunction,
    CoProcessFunction,
    FilterFunction,
    FlatMapFunction,
    Function,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    KeySelector,
    MapFunction,
    NullByteKeySelector,
    Partitioner,
    ProcessFunction,
    ReduceFunction,
    RuntimeContext,
    TimeDomain,
    as_filter_fn,
    as_flat_map_fn,
    as_key_selector,
    as_map_fn,
    as_partitioner_fn,
    as_reduce_fn,
    close_function,
    open_function,
    require_function,
)


class Double(MapFunction):
    def __init__(self) -> None:
        self.opened_with: RuntimeContext | None = None
        self.closed = False

    def open(self, runtime_context: RuntimeContext) -> None:
        self.opened_with = runtime_context

    def close(self) -> None:
        self.closed = True

    def map(self, value: Any) -> Any:
        return value * 2


class Split(FlatMapFunction):
    def flat_map(self, value: Any) -> Any:
        yield from value.split()


class Positive(FilterFunction):
    def filter(self, value: Any) -> bool:
        return value > 0


class Add(ReduceFunction):
    def reduce(self, value1: Any, value2: Any) -> Any:
        return value1 + value2


class First(KeySelector):
    def get_key(self, value: Any) -> Any:
        return value[0]


class Modulo(Partitioner):
    def partition(self, key: Any, num_partitions: int) -> int:
        return key % num_partitions


class Echo(ProcessFunction):
    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Any:
        yield value


class Average(AggregateFunction):
    def create_accumulator(self) -> Any:
        return (0, 0)

    def add(self, value: Any, accumulator: Any) -> Any:
        return accumulator[0] + value, accumulator[1] + 1

    def get_result(self, accumulator: Any) -> Any:
        return accumulator[0] / accumulator[1]

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        return acc_a[0] + acc_b[0], acc_a[1] + acc_b[1]


def test_runtime_context() -> None:
    ctx = RuntimeContext("Tokenize", 2, 6, 128, attempt_number=1, job_parameters={"k": "v"})
    assert ctx.get_task_name() == "Tokenize"
    assert ctx.get_index_of_this_subtask() == 2
    assert ctx.get_number_of_parallel_subtasks() == 6
    assert ctx.get_max_number_of_parallel_subtasks() == 128
    assert ctx.get_attempt_number() == 1
    assert ctx.get_task_name_with_subtasks() == "Tokenize (3/6)"
    assert ctx.get_job_parameter("k", "d") == "v"
    assert ctx.get_job_parameter("missing", "d") == "d"
    assert ctx.get_metrics_group() is None
    assert RuntimeContext("t", 0, 1, 128).get_attempt_number() == 0
    with pytest.raises(ValueError):
        RuntimeContext("t", 3, 2, 128)


@pytest.mark.parametrize(
    "method",
    ["get_state", "get_list_state", "get_map_state", "get_reducing_state", "get_aggregating_state"],
)
def test_keyed_state_outside_a_keyed_stream_says_key_by(method: str) -> None:
    ctx = RuntimeContext("t", 0, 1, 128)
    with pytest.raises(RuntimeError, match=r"call key_by\(\) before this operator"):
        getattr(ctx, method)("descriptor")


class _Store:
    def __getattr__(self, name):
        return lambda descriptor: (name, descriptor)


@pytest.mark.parametrize(
    "method",
    ["get_state", "get_list_state", "get_map_state", "get_reducing_state", "get_aggregating_state"],
)
def test_keyed_state_delegates_to_the_store(method: str) -> None:
    ctx = RuntimeContext("t", 0, 1, 128, keyed_state_store=_Store())
    assert getattr(ctx, method)("d") == (method, "d")


def test_time_domain() -> None:
    assert TimeDomain.EVENT_TIME.value == 0
    assert TimeDomain.PROCESSING_TIME.value == 1


def test_abstract_methods_must_be_implemented() -> None:
    for cls in (
        MapFunction,
        FlatMapFunction,
        FilterFunction,
        ReduceFunction,
        AggregateFunction,
        KeySelector,
        Partitioner,
        CoMapFunction,
        CoFlatMapFunction,
        ProcessFunction,
        KeyedProcessFunction,
        CoProcessFunction,
        KeyedCoProcessFunction,
        ProcessFunction.Context,
        KeyedProcessFunction.Context,
        KeyedProcessFunction.OnTimerContext,
        CoProcessFunction.Context,
        KeyedCoProcessFunction.OnTimerContext,
    ):
        with pytest.raises(TypeError):
            cls()


def test_optional_hooks() -> None:
    class Keyed(KeyedProcessFunction):
        def process_element(self, value: Any, ctx: Any) -> Any:
            yield value

    fn = Keyed()
    assert fn.on_timer(1, None) is None
    assert fn.open(RuntimeContext("t", 0, 1, 1)) is None and fn.close() is None
    assert NullByteKeySelector().get_key("anything") == 0
    avg = Average()
    acc = avg.merge(avg.add(3, avg.create_accumulator()), avg.add(5, avg.create_accumulator()))
    assert avg.get_result(acc) == 4


def test_adapters_return_bound_methods() -> None:
    double = Double()
    assert as_map_fn(double) == double.map
    assert as_map_fn(double)(4) == 8
    assert list(as_flat_map_fn(Split())("a b")) == ["a", "b"]
    assert as_filter_fn(Positive())(1) is True
    assert as_reduce_fn(Add())(1, 2) == 3
    assert as_key_selector(First())(("k", 1)) == "k"
    assert as_key_selector(NullByteKeySelector())("x") == 0
    assert as_partitioner_fn(Modulo())(7, 4) == 3


def test_adapters_pass_plain_callables_through() -> None:
    def f(v: Any) -> Any:
        return v

    for adapter in (as_map_fn, as_flat_map_fn, as_filter_fn, as_key_selector):
        assert adapter(f) is f
    assert as_reduce_fn(max)(1, 2) == 2


def test_wrong_kind_of_function_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"key_by\(\) needs a KeySelector.*Echo.*ProcessFunction"):
        as_key_selector(Echo())
    with pytest.raises(TypeError, match="MapFunction"):
        as_map_fn(Split())
    with pytest.raises(TypeError, match="FilterFunction"):
        as_filter_fn(Double())


def test_class_instead_of_instance_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"pass an instance: Double\(\)"):
        as_map_fn(Double)
    with pytest.raises(TypeError, match=r"pass an instance: Echo\(\)"):
        require_function(Echo, ProcessFunction, "process()")


def test_non_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="callable"):
        as_map_fn(42)


def test_require_function() -> None:
    echo = Echo()
    assert require_function(echo, ProcessFunction, "process()") is echo
    with pytest.raises(TypeError, match="plain callable"):
        require_function(lambda v, ctx: v, ProcessFunction, "process()")
    with pytest.raises(TypeError, match="ProcessFunction instance, got a Double"):
        require_function(Double(), ProcessFunction, "process()")
    with pytest.raises(TypeError, match="AggregateFunction"):
        require_function(None, AggregateFunction, "aggregate()")


def test_open_and_close_only_touch_functions() -> None:
    double = Double()
    ctx = RuntimeContext("t", 0, 1, 128)
    open_function(double, ctx)
    close_function(double)
    assert double.opened_with is ctx and double.closed
    open_function(len, ctx)  # plain callables have no lifecycle: nothing happens
    close_function(len)
    assert isinstance(double, Function)


def test_field_getter_takes_only_a_plain_subscript_of_the_argument() -> None:
    import operator

    from flowrun.core.functions import field_getter

    def first(pair):
        return pair[0]

    offset = 1
    assert field_getter(first)(("a", 1)) == "a"
    assert field_getter(lambda r: r["word"])({"word": "w"}) == "w"
    for not_plain in (
        lambda r: r[offset],  # a closure
        lambda r, i=0: r[i],  # a default
        lambda r: r[0][1],
        lambda r: r[0].lower(),
        lambda r: r[1.5],
        lambda *r: r[0],
        len,
        operator.itemgetter(0),
    ):
        assert field_getter(not_plain) is None
