"""The runnable examples in the connector modules' docstrings stay runnable."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import flowrun.core.connectors as connectors

MODULES = ["flowrun.core.connectors"] + [
    f"flowrun.core.connectors.{info.name}" for info in pkgutil.iter_modules(connectors.__path__)
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no runnable example"
