"""Benchmark size knobs shared by every bench module.

Why one place: CI smokes the benchmarks with ``FLOWRUN_BENCH_SCALE=0.01`` (or
``pytest --quick``), the full run uses 1.0, and every module must shrink the
same way so that a quick run still exercises every code path.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["scale", "scaled", "cache_dir", "is_quick"]

QUICK_SCALE = 0.01


def scale() -> float:
    """The global size factor (1.0 = the sizes quoted in docs/BENCHMARKS.md)."""
    value = float(os.environ.get("FLOWRUN_BENCH_SCALE", "1.0"))
    if value <= 0:
        raise ValueError(f"FLOWRUN_BENCH_SCALE must be > 0, got {value}")
    return value


def is_quick() -> bool:
    return scale() < 0.5


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` times the scale, never below ``minimum``."""
    return max(minimum, int(n * scale()))


def cache_dir() -> str:
    """Where generated inputs are kept between runs (override: FLOWRUN_BENCH_CACHE)."""
    path = os.environ.get("FLOWRUN_BENCH_CACHE") or os.path.join(
        tempfile.gettempdir(), "flowrun-bench-cache"
    )
    os.makedirs(path, exist_ok=True)
    return path
