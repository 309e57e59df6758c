"""State larger than memory: the LMDB backend's process memory stays bounded as state grows.

A child process writes many keys (str key, 200-byte str value, batches of 4096 bracketed by
``begin_batch``/``end_batch`` as the runtime does) while the parent samples its memory with
psutil. What is measured and why:

* **Anonymous RSS** (``RssAnon``): memory only the process can hold, the part that decides
  whether a state fits. A dict-based store grows it by more than the data size; LMDB keeps
  it flat, because its pages live in the page cache of a memory-mapped file.
* **Total RSS** includes those file-backed pages the process has touched. Without memory
  pressure the kernel has no reason to evict them, so total RSS does grow with the data
  here, but those pages are clean or written back (``writemap``: dirty pages are flushed by
  the kernel, ``sync`` is off) and reclaimable at any time; it is reported, not bounded.

The default run writes 300k keys (~65 MB of data) and checks the heap backend as a control:
its anonymous memory must exceed the bound that LMDB stays under. The soak run
(``-m soak``) writes 20 million keys (~4.6 GB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

MIB = 1 << 20

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from flowrun.core.typeinfo import Types
    from flowrun.state import ValueStateDescriptor
    from flowrun.state.backends import EmbeddedLmdbStateBackend, HashMapStateBackend
    from flowrun.state.key_groups import KeyGroupRange, assign_key_groups

    kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = EmbeddedLmdbStateBackend(path) if kind == "lmdb" else HashMapStateBackend()
    b = config.create_keyed_backend("op", KeyGroupRange(0, 127), 128)
    state = b.get_state(ValueStateDescriptor("v", Types.STRING()))
    set_key, update = b.set_current_key, state.update
    print("ready", flush=True)
    sys.stdin.readline()  # the parent has taken its baseline
    start = time.perf_counter()
    data = 0
    for lo in range(0, n, 4096):
        keys = [f"key-{i:012d}" for i in range(lo, min(lo + 4096, n))]
        groups = assign_key_groups(keys, 128).tolist()
        b.begin_batch()
        for key, group in zip(keys, groups):
            set_key(key, group)
            update(key * 12 + "v" * 8)  # 200 characters, distinct per key
        b.end_batch()
        data += len(keys) * (16 + 200)
    elapsed = time.perf_counter() - start
    for i in range(0, n, max(1, n // 1000)):  # spot check
        key = f"key-{i:012d}"
        set_key(key)
        assert state.value() == key * 12 + "v" * 8, key
    size = 0
    if kind == "lmdb":
        size = b._env.info()["last_pgno"] * b._env.stat()["psize"]
    print(json.dumps({"data": data, "seconds": elapsed, "file": size}), flush=True)
    b.dispose()
    """
)


def _anon_rss(pid: int) -> int | None:
    """Anonymous resident memory of ``pid``; None once it has exited (a zombie has none)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return None


def measure(kind: str, path: str, n: int) -> dict:
    """Run the writer child; peak anonymous and total RSS above its baseline, sampled."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, path, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        ps = psutil.Process(proc.pid)
        base_anon, base_rss = _anon_rss(proc.pid) or 0, ps.memory_info().rss
        proc.stdin.write("go\n")
        proc.stdin.flush()
        peak_anon, peak_rss = base_anon, base_rss
        while proc.poll() is None:
            try:
                anon = _anon_rss(proc.pid)
                rss = ps.memory_info().rss
            except (FileNotFoundError, ProcessLookupError, psutil.NoSuchProcess):
                break
            if anon is None:
                break
            peak_anon = max(peak_anon, anon)
            peak_rss = max(peak_rss, rss)
            time.sleep(0.02)
        out, err = proc.communicate(timeout=3600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    result.update(anon_growth=peak_anon - base_anon, rss_growth=peak_rss - base_rss)
    return result


def report(kind: str, n: int, r: dict) -> None:
    print(
        f"\n{kind}: {n:,} keys, {r['data'] / MIB:.0f} MiB of data in {r['seconds']:.1f} s "
        f"({n / r['seconds']:,.0f} writes/s); anonymous RSS +{r['anon_growth'] / MIB:.1f} MiB, "
        f"total RSS +{r['rss_growth'] / MIB:.0f} MiB (file-backed pages included)"
        + (f"; LMDB file {r['file'] / MIB:.0f} MiB" if r["file"] else "")
    )


BOUND = 40 * MIB


def test_lmdb_memory_stays_bounded_while_a_dict_store_grows(tmp_path):
    n = 300_000
    lmdb = measure("lmdb", str(tmp_path / "lmdb"), n)
    report("lmdb", n, lmdb)
    assert lmdb["data"] > 1.5 * BOUND
    assert lmdb["anon_growth"] < BOUND
    heap = measure("hashmap", str(tmp_path / "heap"), n)
    report("hashmap", n, heap)
    assert heap["anon_growth"] > lmdb["data"] > BOUND  # the control clearly exceeds it
    assert not os.path.exists(tmp_path / "lmdb" / "lmdb-op-kg0-127")


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_lmdb_tens_of_millions_of_keys(tmp_path):
    n = 20_000_000
    lmdb = measure("lmdb", str(tmp_path / "lmdb"), n)
    report("lmdb", n, lmdb)
    assert lmdb["data"] > 4_000 * MIB
    assert lmdb["anon_growth"] < 64 * MIB
