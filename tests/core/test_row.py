"""Row / RowKind semantics, matching pyflink.common.types."""

from __future__ import annotations

import pickle

import pytest

from flowrun.core.row import Row, RowKind


def test_kwargs_are_sorted_by_name() -> None:
    row = Row(name="Alice", age=11)
    assert list(row) == [11, "Alice"]
    assert row.as_dict() == {"age": 11, "name": "Alice"}
    assert repr(row) == "Row(age=11, name='Alice')"


def test_positional_repr_and_access() -> None:
    row = Row(1, "a", None)
    assert repr(row) == "<Row(1, 'a', None)>"
    assert row[0] == 1 and row[-1] is None
    assert row[0:2] == [1, "a"]
    assert len(row) == 3
    assert list(row) == [1, "a", None]


def test_mixing_args_and_kwargs_is_an_error() -> None:
    with pytest.raises(ValueError):
        Row(1, a=2)


def test_access_by_name_and_attribute() -> None:
    row = Row(name="Alice", age=11)
    assert row["name"] == "Alice" and row.age == 11
    with pytest.raises(KeyError):
        row["missing"]
    with pytest.raises(ValueError):  # PyFlink raises ValueError here; we raise both
        row["missing"]
    with pytest.raises(AttributeError):
        row.missing  # noqa: B018
    with pytest.raises(KeyError):
        Row(1)["name"]


def test_item_assignment_and_attribute_assignment() -> None:
    row = Row(name="Alice", age=11)
    row[0] = 12
    row["name"] = "Bob"
    assert row == Row(name="Bob", age=12)
    row[0:2] = [1, 2]
    assert list(row) == [1, 2]
    with pytest.raises(AttributeError):
        row.name = "Carol"
    with pytest.raises(KeyError):
        row["missing"] = 1


def test_contains_tests_values() -> None:
    row = Row(name="Alice", age=11)
    assert "Alice" in row and 11 in row
    assert "name" not in row


def test_row_class_idiom() -> None:
    Person = Row("name", "age")
    assert repr(Person) == "<Row('name', 'age')>"
    alice = Person("Alice", 11)
    assert repr(alice) == "Row(name='Alice', age=11)"
    assert alice.name == "Alice" and alice["age"] == 11
    assert alice.as_dict() == {"name": "Alice", "age": 11}
    with pytest.raises(ValueError, match="expected 2 values"):
        Person("a", 1, 2)


def test_as_dict() -> None:
    row = Row(key=1, value=Row(name="a", age=2), items=[Row(x=1)], m={"k": Row(y=2)})
    assert row.as_dict() == {
        "items": [Row(x=1)],
        "key": 1,
        "m": {"k": Row(y=2)},
        "value": Row(age=2, name="a"),
    }
    assert row.as_dict(recursive=True) == {
        "items": [{"x": 1}],
        "key": 1,
        "m": {"k": {"y": 2}},
        "value": {"age": 2, "name": "a"},
    }
    with pytest.raises(TypeError):
        Row(1, 2).as_dict()


def test_row_kind() -> None:
    row = Row(1)
    assert row.get_row_kind() is RowKind.INSERT
    row.set_row_kind(RowKind.UPDATE_AFTER)
    assert row.get_row_kind() is RowKind.UPDATE_AFTER
    assert [k.value for k in RowKind] == [0, 1, 2, 3]
    assert [k.name for k in RowKind] == ["INSERT", "UPDATE_BEFORE", "UPDATE_AFTER", "DELETE"]


def test_set_field_names() -> None:
    row = Row(1, 2)
    row.set_field_names(["a", "b"])
    assert row.a == 1 and row["b"] == 2
    assert repr(row) == "Row(a=1, b=2)"


def test_equality_compares_values_kind_and_names() -> None:
    assert Row(1, 2) == Row(1, 2)
    assert Row(1, 2) != Row(2, 1)
    assert Row(a=1) == Row(a=1)
    assert Row(a=1) != Row(b=1)
    assert Row(a=1) != Row(1)
    assert Row(1, 2) != (1, 2)
    deleted = Row(1, 2)
    deleted.set_row_kind(RowKind.DELETE)
    assert deleted != Row(1, 2)


def test_hash_is_tuple_hash() -> None:
    assert hash(Row(1, "a")) == hash((1, "a"))
    assert hash(Row(a=1, b="x")) == hash((1, "x"))
    assert len({Row(1, 2), Row(1, 2), Row(2, 1)}) == 2
    with pytest.raises(TypeError):
        hash(Row([1]))


def test_pickle_keeps_values_names_and_kind() -> None:
    for row in (Row(1, "a"), Row(name="x", age=2), Row()):
        row.set_row_kind(RowKind.UPDATE_BEFORE)
        clone = pickle.loads(pickle.dumps(row))
        assert clone == row
        assert repr(clone) == repr(row)
        assert clone.get_row_kind() is RowKind.UPDATE_BEFORE


def test_not_a_tuple_but_mutable() -> None:
    row = Row(1, 2)
    assert not isinstance(row, tuple)
    row[1] = 3
    assert row == Row(1, 3)
