"""Give user functions shipped by value their source file back.

cloudpickle ships functions and classes defined in the job script (``__main__``)
by value and names their code ``<dynamic-code>``, so a user's traceback from a
subtask would point nowhere. The client knows the script's path; the subtask
restores it on every code object that came from the script, and tracebacks show
the file, line and source text again.
"""

from __future__ import annotations

import types
from typing import Any

__all__ = ["restore_source_file"]

_DYNAMIC = "<dynamic-code>"


def _fix_code(code: types.CodeType, path: str) -> types.CodeType:
    consts = tuple(
        _fix_code(c, path) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    filename = path if code.co_filename == _DYNAMIC else code.co_filename
    return code.replace(co_filename=filename, co_consts=consts)


def _fix_function(fn: types.FunctionType, path: str, seen: set[int]) -> None:
    if id(fn) in seen:
        return
    seen.add(id(fn))
    if fn.__code__.co_filename == _DYNAMIC:
        fn.__code__ = _fix_code(fn.__code__, path)


def restore_source_file(obj: Any, path: str | None, seen: set[int] | None = None) -> None:
    """Walk ``obj`` (operators, functions, instances of script classes) and fix code filenames."""
    if not path:
        return
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    if isinstance(obj, types.FunctionType):
        _fix_function(obj, path, seen)
        for cell in obj.__closure__ or ():
            try:
                restore_source_file(cell.cell_contents, path, seen)
            except ValueError:  # empty cell
                pass
        return
    if isinstance(obj, types.MethodType):
        restore_source_file(obj.__func__, path, seen)
        restore_source_file(obj.__self__, path, seen)
        return
    if isinstance(obj, type):
        seen.add(id(obj))
        for value in vars(obj).values():
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, (types.FunctionType, type)):
                restore_source_file(value, path, seen)
        return
    if isinstance(obj, (list, tuple, set)):
        seen.add(id(obj))
        for item in obj:
            restore_source_file(item, path, seen)
        return
    if isinstance(obj, dict):
        seen.add(id(obj))
        for item in obj.values():
            restore_source_file(item, path, seen)
        return
    if hasattr(obj, "__dict__") and not isinstance(obj, types.ModuleType):
        seen.add(id(obj))
        cls = type(obj)
        if cls.__module__ == "__main__" or cls.__module__.startswith("flowrun"):
            restore_source_file(cls, path, seen)
            restore_source_file(vars(obj), path, seen)
