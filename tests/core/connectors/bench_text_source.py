"""Read speed of TextFileSource, rows vs Arrow (not collected by pytest; run it by hand).

    python tests/core/connectors/bench_text_source.py [--mb 50] [--max-records 4096]

Writes a file of random words (one per line, ~7 bytes per line including some non-ASCII
words, the worst case for per-line costs), then drains one reader over it in both modes and
prints MB/s and the slowest single poll. It also times the naive Arrow path
(``pa.array(text.split("\\n"))``) that the zero-copy builder replaces.
"""

from __future__ import annotations

import argparse
import os
import random
import string
import tempfile
import time

import pyarrow as pa

from flowrun.core.connectors.text_file import TextFileSource


def write_words(path: str, size: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    words = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10))) for _ in range(5000)
    ]
    words += ["héllo", "naïve", "日本語"]
    lines, total = [], 0
    while total < size:
        word = rng.choice(words)
        lines.append(word)
        total += len(word.encode()) + 1
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def drain(source: TextFileSource, max_records: int) -> tuple[float, float, int]:
    reader = source.create_reader(0, 1)
    reader.open()
    lines, slowest = 0, 0.0
    started = time.perf_counter()
    while True:
        before = time.perf_counter()
        got = reader.poll(max_records)
        slowest = max(slowest, time.perf_counter() - before)
        if got is None:
            break
        lines += got.num_rows if isinstance(got, pa.RecordBatch) else len(got)
    return time.perf_counter() - started, slowest, lines


def naive_arrow(path: str) -> float:
    started = time.perf_counter()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            pa.array(chunk.decode("utf-8", "ignore").split("\n"), pa.string())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--max-records", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "words.txt")
        write_words(path, int(args.mb * 1e6))
        size = os.path.getsize(path)
        print(f"{size / 1e6:.1f} MB, max_records={args.max_records}")
        for as_arrow in (False, True):
            runs = [
                drain(TextFileSource(path, as_arrow=as_arrow), args.max_records)
                for _ in range(args.repeat)
            ]
            seconds, slowest, lines = min(runs)
            mode = "arrow" if as_arrow else "rows "
            print(
                f"{mode}: {size / seconds / 1e6:6.0f} MB/s  {lines / seconds / 1e6:5.1f} M lines/s"
                f"  slowest poll {slowest * 1e3:.1f} ms"
            )
        seconds = min(naive_arrow(path) for _ in range(args.repeat))
        print(f"naive pa.array(split): {size / seconds / 1e6:6.0f} MB/s")


if __name__ == "__main__":
    main()
