"""One producer -> consumer channel between two real processes, and its baselines.

Why real processes and the engine's own classes: the cost of a flowrun channel
is the Python work per buffer on both sides (IPC framing into shared memory,
doorbell messages, credit bookkeeping, zero-copy decoding) running in parallel
on two cores, so only two processes driving ``NetworkEnvironment`` -- the same
``ResultSubpartition`` / ``InputGate`` / credit ledger a subtask builds --
measure it. The channel's two processes start through the engine's fork server
and get the memfd of the ``NetworkBufferPool`` and the doorbell pipes passed, as
subtasks get theirs, so they also run in the environment the engine gives its
subtasks (see ``flowrun.core.runtime.forkserver.subtask_environment``). The
baselines run as forks of, or in, the benchmark process, with the C library's
defaults.

Every function returns the seconds from "go" to the consumer holding the last
batch (``time.perf_counter`` is CLOCK_MONOTONIC, comparable across processes),
so process start-up and mapping are not part of the figure.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import struct
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from flowrun.core import config as cfg
from flowrun.core.runtime.forkserver import ForkServer, get_fork_server
from flowrun.network.buffer_pool import NetworkBufferPool
from flowrun.network.doorbell import create_doorbell_pipe
from flowrun.network.frames import EventKind, FrameKind
from flowrun.network.network_environment import (
    ChannelDescriptor,
    InputGateDescriptor,
    NetworkDescriptor,
    NetworkEnvironment,
    ResultPartitionDescriptor,
    SubpartitionDescriptor,
)

__all__ = ["make_batch", "batch_bytes", "run_channel", "run_queue", "run_memcpy", "run_memcpy_ring"]

_CTX = mp.get_context("fork")
_COLUMNS = 4


def make_batch(nbytes: int) -> pa.RecordBatch:
    """``nbytes`` of int64 data in 4 columns; column 0 is the row number (checked on receipt)."""
    rows = max(1, nbytes // (8 * _COLUMNS))
    base = np.arange(rows, dtype=np.int64)
    return pa.record_batch([base * k for k in range(1, _COLUMNS + 1)], names=["a", "b", "c", "d"])


def batch_bytes(batch: pa.RecordBatch) -> int:
    return batch.num_rows * 8 * batch.num_columns


def _engine_defaults() -> tuple[int, int, int]:
    conf = cfg.Configuration()
    return (
        conf.get(cfg.MAX_BUFFERS_PER_CHANNEL),
        conf.get(cfg.BUFFERS_PER_CHANNEL),
        conf.get(cfg.FLOATING_BUFFERS_PER_GATE),
    )


def _profiled(target: Callable, *args) -> None:
    """Run ``target`` under cProfile when FLOWRUN_BENCH_PROFILE names a directory."""
    out_dir = os.environ.get("FLOWRUN_BENCH_PROFILE")
    if not out_dir:
        target(*args)
        return
    import cProfile

    profile = cProfile.Profile()
    try:
        profile.runcall(target, *args)
    finally:
        profile.dump_stats(os.path.join(out_dir, f"{target.__name__}-{os.getpid()}.prof"))


def _start(target: Callable, *args) -> mp.Process:
    proc = _CTX.Process(target=_profiled, args=(target, *args), daemon=True, name=target.__name__)
    proc.start()
    return proc


def _finish(procs: list[mp.Process], ready, go, done) -> float:
    """Wait until every process is set up, release them, return the consumer's elapsed time."""
    for _ in procs:
        ready.recv()
    start = time.perf_counter()
    go.set()
    end, rows_ok = done.recv()
    for proc in procs:
        proc.join(30)
        if proc.exitcode != 0:
            raise RuntimeError(f"benchmark process {proc.name} exited with {proc.exitcode}")
    if not rows_ok:
        raise AssertionError("the consumer did not receive exactly the batches sent")
    return end - start


def _check(batch: pa.RecordBatch, rows: int, rows_per_batch: int) -> bool:
    """Order and content check at one value per batch: column 0 is the row number."""
    return batch.column(0)[0].as_py() == rows % rows_per_batch


# -- the flowrun channel ----------------------------------------------------------
# Both ends start through the engine's fork server, as subtasks do: they run in the
# environment the engine gives its subtasks (glibc's copy tunables among it), not as
# forks of the benchmark process. ``control`` is a socket to the benchmark: each end
# writes one byte when set up and waits for one ("go"); the consumer then reports
# its end time and whether it got exactly the batches sent.
_DONE = struct.Struct("<d?")


def _ready_go(control: socket.socket) -> None:
    control.sendall(b"r")
    if control.recv(1) != b"g":
        raise RuntimeError("the benchmark went away before go")


def channel_producer(fds: list[int], desc, batch, count) -> None:
    """Fork-server target: the producing end (``fds``: pool, doorbell, consumer's doorbell,
    control socket)."""
    _profiled(_producer, fds, desc, batch, count)


def _producer(fds, desc, batch, count) -> None:
    pool_fd, doorbell_r, consumer_w, control_fd = fds
    control = socket.socket(fileno=control_fd)
    holder: list[NetworkEnvironment] = []

    def wait() -> None:  # what StreamTask does under backpressure: serve the doorbell
        holder[0].wait([doorbell_r], 1.0)
        holder[0].process_doorbell()

    net = NetworkEnvironment(desc, pool_fd, doorbell_r, {1: consumer_w}, wait)
    holder.append(net)
    sub = net.subpartitions[0]
    _ready_go(control)
    for _ in range(count):
        sub.add_batch(batch)
        net.process_doorbell()
    sub.add_event(EventKind.END_OF_PARTITION)
    while not net.outputs_drained():
        wait()


def channel_consumer(fds: list[int], desc, rows_per_batch, expect) -> None:
    """Fork-server target: the consuming end (``fds`` as for :func:`channel_producer`)."""
    _profiled(_consumer, fds, desc, rows_per_batch, expect)


def _consumer(fds, desc, rows_per_batch, expect) -> None:
    pool_fd, doorbell_r, producer_w, control_fd = fds
    control = socket.socket(fileno=control_fd)
    net = NetworkEnvironment(desc, pool_fd, doorbell_r, {0: producer_w}, lambda: None)
    gate = net.gates[0]
    _ready_go(control)
    rows = 0
    ok = True
    ended = False
    while not ended:
        net.process_doorbell()
        polled = gate.poll()
        if polled is None:
            net.wait([doorbell_r], 1.0)  # what StreamTask does when idle
            continue
        channel, buffer, memory = polled
        for kind, batch, event, _payload in gate.read(channel, memory):
            if kind == FrameKind.BATCH:
                ok = ok and _check(batch, rows, rows_per_batch)
                rows += batch.num_rows
            elif event == EventKind.END_OF_PARTITION:
                ended = True
        batch = None  # the batch references shared memory: drop it before recycling
        del memory
        gate.recycle(channel, buffer)
    control.sendall(_DONE.pack(time.perf_counter(), ok and rows == expect))


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise RuntimeError("a benchmark process exited early (its traceback is above)")
        data += chunk
    return data


def _await_exits(server: ForkServer, pids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        server.poll_exits()
        codes = {pid: server.exit_codes.get(pid) for pid in pids}
        if all(code is not None for code in codes.values()):
            failed = {pid: code for pid, code in codes.items() if code != 0}
            if failed:
                raise RuntimeError(f"benchmark processes exited with {failed}")
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark processes still running after {timeout} s: {codes}")
        time.sleep(0.001)


def run_channel(batch: pa.RecordBatch, count: int, segment_size: int) -> float:
    """Send ``batch`` ``count`` times through one channel with the engine's default credits."""
    buffers, exclusive, floating = _engine_defaults()
    server = get_fork_server()
    pool = NetworkBufferPool.create("bench", buffers, segment_size)
    prod_r, prod_w = create_doorbell_pipe()
    cons_r, cons_w = create_doorbell_pipe()
    sub = SubpartitionDescriptor(peer_task=1, peer_channel=0, buffers=list(range(buffers)))
    producer_desc = NetworkDescriptor(
        buffers, segment_size, exclusive, floating, partitions=[ResultPartitionDescriptor(0, [sub])]
    )
    consumer_desc = NetworkDescriptor(
        buffers,
        segment_size,
        exclusive,
        floating,
        gates=[InputGateDescriptor(0, 0, [ChannelDescriptor(peer_task=0, peer_subpartition=0)])],
    )
    producer_ctl, producer_end = socket.socketpair()
    consumer_ctl, consumer_end = socket.socketpair()
    try:
        pids = [
            server.spawn(
                "_channel:channel_producer",
                (producer_desc, batch, count),
                [pool.fd, prod_r, cons_w, producer_end.fileno()],
            ),
            server.spawn(
                "_channel:channel_consumer",
                (consumer_desc, batch.num_rows, batch.num_rows * count),
                [pool.fd, cons_r, prod_w, consumer_end.fileno()],
            ),
        ]
        for end in (producer_end, consumer_end):
            end.close()
        for ctl in (producer_ctl, consumer_ctl):
            _recv_exactly(ctl, 1)
        start = time.perf_counter()
        for ctl in (producer_ctl, consumer_ctl):
            ctl.sendall(b"g")
        end_time, rows_ok = _DONE.unpack(_recv_exactly(consumer_ctl, _DONE.size))
        _await_exits(server, pids)
        if not rows_ok:
            raise AssertionError("the consumer did not receive exactly the batches sent")
        return end_time - start
    finally:
        for fd in (prod_r, prod_w, cons_r, cons_w):
            os.close(fd)
        for sock in (producer_ctl, consumer_ctl, producer_end, consumer_end):
            sock.close()
        pool.close()


# -- baseline (a): multiprocessing.Queue -------------------------------------------
def _queue_producer(queue, batch, count, ready, go) -> None:
    ready.send(os.getpid())
    go.wait()
    for _ in range(count):
        queue.put(batch)
    queue.put(None)
    queue.close()
    queue.join_thread()


def _queue_consumer(queue, rows_per_batch, expect, ready, go, done) -> None:
    ready.send(os.getpid())
    go.wait()
    rows = 0
    ok = True
    while (batch := queue.get()) is not None:
        ok = ok and _check(batch, rows, rows_per_batch)
        rows += batch.num_rows
    done.send((time.perf_counter(), ok and rows == expect))


def run_queue(batch: pa.RecordBatch, count: int) -> float:
    """The same batches pickled through a ``multiprocessing.Queue`` (bounded like the pool)."""
    buffers, _exclusive, _floating = _engine_defaults()
    queue = _CTX.Queue(maxsize=buffers)
    ready_r, ready_w = _CTX.Pipe(duplex=False)
    done_r, done_w = _CTX.Pipe(duplex=False)
    go = _CTX.Event()
    procs = [
        _start(_queue_producer, queue, batch, count, ready_w, go),
        _start(_queue_consumer, queue, batch.num_rows, batch.num_rows * count, ready_w, go, done_w),
    ]
    return _finish(procs, ready_r, go, done_r)


# -- baseline (b): memcpy ---------------------------------------------------------------
def run_memcpy(batch: pa.RecordBatch, count: int) -> float:
    """Copy the batch's bytes ``count`` times into one preallocated buffer, in this process."""
    nbytes = batch_bytes(batch)
    src = np.concatenate([c.to_numpy() for c in batch.columns]).view(np.uint8)
    dst = np.empty(nbytes, dtype=np.uint8)
    np.copyto(dst, src)  # fault the pages in before timing
    start = time.perf_counter()
    for _ in range(count):
        np.copyto(dst, src)
    return time.perf_counter() - start


def run_memcpy_ring(batch: pa.RecordBatch, count: int, ring_bytes: int) -> float:
    """Like :func:`run_memcpy`, but into a ring of ``ring_bytes`` (the channel's pool size).

    Why a second memcpy: one destination of 64 KiB or 1 MiB stays in the CPU
    cache, while the channel writes round-robin into ``buffers x segment``
    bytes of shared memory; this is the copy the channel really has to do.
    """
    nbytes = batch_bytes(batch)
    src = np.concatenate([c.to_numpy() for c in batch.columns]).view(np.uint8)
    slots = max(1, ring_bytes // nbytes)
    ring = np.empty((slots, nbytes), dtype=np.uint8)
    ring[:] = src
    start = time.perf_counter()
    for i in range(count):
        np.copyto(ring[i % slots], src)
    return time.perf_counter() - start
