"""Package attributes imported on first use (PEP 562), for ``flowrun.core``,
``flowrun.core.connectors`` and ``flowrun.state``.

Why: the JobManager process builds and supervises a job; importing every connector, state
backend and kernel a package exports would only slow its start-up. Subtasks get them from
the fork server, which imports every module such a table names.

Example::

    >>> namespace = {}
    >>> getattr_, dir_ = lazy_attributes("json", {"dumps": "json"}, namespace)
    >>> getattr_("dumps")([1])
    '[1]'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``exports`` (name -> module, relative
    to ``package``); a name once loaded is stored in ``namespace`` (the module's globals)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace.get("__all__", ())) | set(exports))

    return __getattr__, __dir__
