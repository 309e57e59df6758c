"""Plot keyed-state throughput against the number of keys from a bench report JSON.

Usage::

    python bench/plot_state.py [REPORT_JSON] [-o docs/state_scaling.png]

``REPORT_JSON`` is what ``bench/conftest.py`` writes (``$FLOWRUN_BENCH_REPORT``, default
``$TMPDIR/flowrun-bench-cache/bench-report.json``) after ``bench/test_state.py`` ran. Left:
records/s of every variant per number of distinct keys; right: the ratios, with the 50%
target of the LMDB backend against raw LMDB. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SERIES = [
    ("raw_lmdb", "raw py-lmdb", "tab:gray", "--"),
    ("alone_lmdb", "LMDB backend alone", "tab:blue", ":"),
    ("engine_lmdb", "LMDB backend, engine job", "tab:blue", "-"),
    ("dict", "Python dict", "black", "--"),
    ("alone_hashmap", "HashMap backend alone", "tab:orange", ":"),
    ("engine_hashmap", "HashMap backend, engine job", "tab:orange", "-"),
]
RATIOS = [
    ("engine_lmdb_vs_raw_lmdb", "engine LMDB / raw LMDB", "tab:blue", "-"),
    ("alone_lmdb_vs_raw_lmdb", "LMDB backend alone / raw LMDB", "tab:blue", ":"),
    ("engine_hashmap_vs_dict", "engine HashMap / dict", "tab:orange", "-"),
]


def _default_report() -> str:
    from _scale import cache_dir

    return os.environ.get("FLOWRUN_BENCH_REPORT") or os.path.join(cache_dir(), "bench-report.json")


def load(path: str) -> list[dict]:
    with open(path) as f:
        report = json.load(f)
    rows = [
        figures
        for name, figures in report["results"].items()
        if name.startswith("test_keyed_state_throughput")
    ]
    if not rows:
        raise SystemExit(f"{path}: no test_keyed_state_throughput results")
    return sorted(rows, key=lambda r: r["keys"])


def plot(rows: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [r["keys"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for field, label, color, style in SERIES:
        left.plot(
            keys,
            [r[f"{field}_records_per_s"] for r in rows],
            style,
            color=color,
            marker="o",
            label=label,
        )
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("distinct keys in state")
    left.set_ylabel("read-modify-writes per second")
    left.set_title("ValueState value() + update(), p=1")
    left.grid(True, which="both", alpha=0.3)
    left.set_ylim(top=left.get_ylim()[1] * 6)  # room for the legend
    left.legend(fontsize=8, loc="upper right", ncol=2)
    for field, label, color, style in RATIOS:
        right.plot(keys, [r[field] for r in rows], style, color=color, marker="o", label=label)
    right.axhline(rows[0].get("target", 0.5), color="red", linewidth=1, label="target (LMDB)")
    right.set_xscale("log")
    right.set_ylim(0, 1)
    right.set_xlabel("distinct keys in state")
    right.set_ylabel("ratio (same-run baseline = 1)")
    right.set_title("against raw py-lmdb / a dict")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"written to {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", nargs="?", help="bench report JSON")
    parser.add_argument("-o", "--output", default="docs/state_scaling.png")
    args = parser.parse_args(argv)
    plot(load(args.report or _default_report()), args.output)


if __name__ == "__main__":
    main()
