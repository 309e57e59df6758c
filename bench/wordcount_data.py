"""The word-count input: Zipf-distributed random words, generated once and cached on disk.

Why Zipf (s = 1.0) over 100,000 distinct words: natural-language word
frequencies follow it, and it is what makes keyed aggregation interesting --
a few very hot keys (one key group gets far more records) and a long tail that
keeps the state large. Words are random lowercase strings of 3 to 10 letters
(6.5 on average, about English's average in a dictionary; the rank of a word is
independent of its length). Lines hold 5 to 15 words (10 on average), which is
also what ``read_text_file`` splits into byte ranges.

Generation takes a few seconds at full size, so the file is cached under
:func:`_scale.cache_dir` in a name that carries every parameter; a changed
parameter (or ``FLOWRUN_BENCH_SCALE``) gives a new file, never a stale one.

Usage::

    python bench/wordcount_data.py            # prints the path, generating it if needed
"""

from __future__ import annotations

import os

import numpy as np
from _scale import cache_dir, scaled

__all__ = ["WordCountSpec", "default_spec", "ensure_input"]

#: bump when the generator changes so old cached files are not reused
_FORMAT_VERSION = 1


class WordCountSpec:
    """Parameters of one input file (the cache key)."""

    def __init__(
        self,
        words: int = 10_000_000,
        distinct: int = 100_000,
        zipf_s: float = 1.0,
        seed: int = 20240611,
    ) -> None:
        self.words = words
        self.distinct = distinct
        self.zipf_s = zipf_s
        self.seed = seed

    def file_name(self) -> str:
        return (
            f"wordcount-v{_FORMAT_VERSION}-n{self.words}-d{self.distinct}"
            f"-s{self.zipf_s:g}-seed{self.seed}.txt"
        )


def default_spec() -> WordCountSpec:
    """10 million words at full scale, fewer with FLOWRUN_BENCH_SCALE."""
    return WordCountSpec(words=scaled(10_000_000, minimum=10_000))


def _vocabulary(rng: np.random.Generator, distinct: int) -> list[str]:
    """``distinct`` different random lowercase words in random order (index = rank - 1)."""
    words: dict[str, None] = {}  # insertion-ordered set: the order stays random
    while len(words) < distinct:
        need = distinct - len(words)
        lengths = rng.integers(3, 11, size=need)
        letters = rng.integers(ord("a"), ord("z") + 1, size=int(lengths.sum()), dtype=np.uint8)
        text = letters.tobytes().decode("ascii")
        ends = np.cumsum(lengths)
        starts = ends - lengths
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            words[text[s:e]] = None
    return list(words)[:distinct]


def _write(spec: WordCountSpec, path: str) -> None:
    rng = np.random.default_rng(spec.seed)
    vocab = _vocabulary(rng, spec.distinct)
    weights = 1.0 / np.arange(1, spec.distinct + 1, dtype=np.float64) ** spec.zipf_s
    ranks = rng.choice(spec.distinct, size=spec.words, p=weights / weights.sum())
    words = np.asarray(vocab, dtype=object)[ranks].tolist()
    per_line = rng.integers(5, 16, size=spec.words // 5 + 1)
    bounds = np.cumsum(per_line)
    bounds = bounds[bounds < spec.words].tolist() + [spec.words]
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as out:
        start = 0
        lines = []
        for end in bounds:
            lines.append(" ".join(words[start:end]))
            start = end
            if len(lines) >= 65536:
                out.write("\n".join(lines) + "\n")
                lines = []
        if lines:
            out.write("\n".join(lines) + "\n")
    os.replace(tmp, path)  # atomic: a concurrent or interrupted run never sees half a file


def ensure_input(spec: WordCountSpec | None = None) -> str:
    """Path of the input file of ``spec`` (default: :func:`default_spec`), generated if missing."""
    spec = spec or default_spec()
    path = os.path.join(cache_dir(), spec.file_name())
    if not os.path.exists(path):
        _write(spec, path)
    return path


if __name__ == "__main__":
    print(ensure_input())
