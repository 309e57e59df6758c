"""KeySlots: dense slots for Arrow keys, checked against a dict of Python values."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pyarrow as pa
import pytest

from flowrun.core.runtime.key_slots import KeySlots
from flowrun.state.key_groups import hash_arrow


def _check_against_dict(batches: list[pa.Array], canonical=lambda k: k) -> KeySlots:
    """Feed batches of distinct keys; slots must equal first-appearance order of the keys."""
    slots = KeySlots()
    reference: dict = {}
    for batch in batches:
        got = slots.find_or_add(batch).tolist()
        expected = [reference.setdefault(canonical(k), len(reference)) for k in batch.to_pylist()]
        assert got == expected
    assert len(slots) == len(reference)
    assert [canonical(k) for k in slots.keys().to_pylist()] == list(reference)
    return slots


def _batches(values: list, rng: random.Random, n_batches: int, size: int, kind=None):
    out = []
    for _ in range(n_batches):
        out.append(pa.array(rng.sample(values, min(size, len(values))), type=kind))
    return out


def test_strings_grow_past_many_table_sizes():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(30_000)] + ["straße", "日本", "naïve", ""]
    slots = _check_against_dict(_batches(vocab, rng, 40, 3_000))
    assert len(slots) > 25_000


def test_keys_with_equal_java_hashes_get_their_own_slots():
    # "Aa" and "BB" have the same String.hashCode(), so every word made of these blocks does.
    colliding = ["".join(p) for p in itertools.product(["Aa", "BB"], repeat=9)]
    assert len(set(hash_arrow(pa.array(colliding)).tolist())) == 1
    rng = random.Random(2)
    _check_against_dict(_batches(colliding + ["x", "y"], rng, 12, 100))


def test_integer_float_binary_and_large_string_keys():
    rng = random.Random(3)
    ints = list(range(-5_000, 5_000)) + [2**62, -(2**63)]
    _check_against_dict(_batches(ints, rng, 10, 2_000))
    floats = [i / 7 for i in range(3_000)] + [math.inf, -math.inf, -0.0]
    # -0.0 and 0.0 are two keys, as for Java's Double.equals and Arrow's value_counts
    _check_against_dict(_batches(floats, rng, 6, 1_000), canonical=lambda k: (k, str(k)))
    blobs = [bytes([i % 256, i // 256]) for i in range(4_000)]
    _check_against_dict(_batches(blobs, rng, 6, 1_000))
    words = [f"k{i}" for i in range(4_000)]
    _check_against_dict(_batches(words, rng, 6, 1_000, pa.large_string()))


def test_null_and_nan_keys_are_one_key_each():
    slots = KeySlots()
    first = slots.find_or_add(pa.array([None, math.nan, 1.5])).tolist()
    again = slots.find_or_add(pa.array([1.5, float("nan"), None])).tolist()
    assert first == [0, 1, 2] and again == [2, 1, 0]
    assert len(slots) == 3


def test_other_key_types_are_cast_to_the_stored_type():
    slots = KeySlots()
    slots.find_or_add(pa.array(["a", "b"]))  # string
    assert slots.find_or_add(pa.array(["b", "c"], pa.large_string())).tolist() == [1, 2]
    encoded = pa.array(["c", "a", "d"]).dictionary_encode()
    assert slots.find_or_add(encoded).tolist() == [2, 0, 3]
    assert slots.find_or_add(pa.chunked_array([["d"], ["e"]])).tolist() == [3, 4]
    assert slots.type == pa.string()
    with pytest.raises(TypeError, match="cannot be matched"):
        slots.find_or_add(pa.array([[1]], pa.list_(pa.int64())))


def test_take_returns_keys_by_slot_across_chunks():
    slots = KeySlots()
    for start in range(0, 10_000, 700):  # many appends: several merged chunks
        slots.find_or_add(pa.array([f"k{i}" for i in range(start, min(start + 700, 10_000))]))
    order = np.array([9_999, 0, 4_321, 700, 699])
    assert slots.take(order).to_pylist() == [f"k{i}" for i in order]
    assert slots.keys().to_pylist() == [f"k{i}" for i in range(10_000)]
