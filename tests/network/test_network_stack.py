"""The network stack on its own: frames, the credit ledger, and two real processes."""

from __future__ import annotations

import os
import pickle

import pyarrow as pa
import pytest

from flowrun.network.buffer_pool import LocalBufferPool, NetworkBufferPool
from flowrun.network.credit import CreditLedger
from flowrun.network.doorbell import create_doorbell_pipe
from flowrun.network.frames import BufferBuilder, EventKind, FrameKind, ipc_stream_size, iter_frames
from flowrun.network.network_environment import (
    ChannelDescriptor,
    InputGateDescriptor,
    NetworkDescriptor,
    NetworkEnvironment,
    ResultPartitionDescriptor,
    SubpartitionDescriptor,
)


def test_ipc_stream_size_is_exact():
    for n in (0, 1, 17, 10_000):
        batch = pa.record_batch(
            [pa.array(range(n)), pa.array([str(i) for i in range(n)])], names=["a", "b"]
        )
        mem = memoryview(bytearray(ipc_stream_size(batch) + 64))
        builder = BufferBuilder(mem)
        assert builder.write_batch(batch)
        ((kind, _flags, _event, payload),) = list(iter_frames(mem, builder.offset))
        assert kind == FrameKind.BATCH
        assert len(payload) == ipc_stream_size(batch)


def test_frames_keep_order_and_alignment():
    mem = memoryview(bytearray(1 << 16))
    builder = BufferBuilder(mem)
    batches = [pa.record_batch([pa.array([i] * (i + 1))], names=["x"]) for i in range(5)]
    for b in batches:
        assert builder.write_batch(b)
    assert builder.write_event(EventKind.END_OF_PARTITION)
    frames = list(iter_frames(mem, builder.offset))
    assert [f[0] for f in frames] == [FrameKind.BATCH] * 5 + [FrameKind.EVENT]
    assert frames[-1][2] == EventKind.END_OF_PARTITION
    offsets = [payload.obj is mem.obj for _, _, _, payload in frames]
    assert all(offsets)


def test_batch_that_does_not_fit_is_refused_without_writing():
    mem = memoryview(bytearray(4096))
    builder = BufferBuilder(mem)
    big = pa.record_batch([pa.array(range(10_000))], names=["x"])
    assert not builder.write_batch(big)
    assert builder.is_empty()


def test_credit_ledger_floating_credits_go_to_the_largest_backlog():
    ledger = CreditLedger(num_channels=3, exclusive=2, floating=4)
    assert ledger.on_backlog(0, 1) == [(0, 1)]
    assert ledger.on_backlog(2, 6) == [(2, 3)]  # only 3 floating left
    assert ledger.floating_free == 0
    # channel 0 drained: its floating credit returns to the gate on recycle...
    ledger.on_backlog(0, 0)
    assert ledger.on_recycle(0) == 0
    # ...and goes to channel 2, which still has a backlog
    assert ledger.redistribute() == [(2, 1)]
    # exclusive credits always come back
    assert ledger.on_recycle(1) == 1


def _consumer(pool_fd, doorbell_fd, peer_fd, desc_bytes, result_w):
    desc = pickle.loads(desc_bytes)
    net = NetworkEnvironment(desc, pool_fd, doorbell_fd, {0: peer_fd}, lambda: None)
    gate = net.gates[0]
    rows, max_held, events = [], 0, []
    held = []
    import select

    while not gate.all_ended():
        ready, _, _ = select.select([net.fileno()], [], [], 0.05)
        net.process_doorbell()
        # hold buffers until no more arrive, so the producer runs out of credit
        while True:
            polled = gate.poll()
            if polled is None:
                break
            held.append(polled)
        max_held = max(max_held, len(held))
        if held and not ready:
            for channel, buffer, memory in held:
                for kind, batch, event, _ in gate.read(channel, memory):
                    if kind == FrameKind.BATCH:
                        rows.extend(batch.column(0).to_pylist())
                    else:
                        events.append(event)
                        gate.channels[channel].ended = True
                gate.recycle(channel, buffer)
            held = []
    os.write(result_w, pickle.dumps((len(rows), rows == list(range(len(rows))), max_held, events)))
    os._exit(0)


def test_two_processes_exchange_in_order_within_credit():
    segment = 8192
    buffers = list(range(10))
    pool = NetworkBufferPool.create("test", len(buffers), segment)
    prod_r, prod_w = create_doorbell_pipe()
    cons_r, cons_w = create_doorbell_pipe()
    result_r, result_w = os.pipe()
    producer_desc = NetworkDescriptor(len(buffers), segment, 2, 1)
    producer_desc.partitions.append(
        ResultPartitionDescriptor(0, [SubpartitionDescriptor(1, 0, buffers)])
    )
    consumer_desc = NetworkDescriptor(len(buffers), segment, 2, 1)
    consumer_desc.gates.append(InputGateDescriptor(0, 0, [ChannelDescriptor(0, 0)]))
    pid = os.fork()
    if pid == 0:  # consumer
        try:
            _consumer(pool.fd, cons_r, prod_w, pickle.dumps(consumer_desc), result_w)
        finally:
            os._exit(1)
    import select

    def wait():
        select.select([prod_r], [], [], 1.0)
        net.process_doorbell()

    net = NetworkEnvironment(producer_desc, os.dup(pool.fd), prod_r, {1: cons_w}, wait)
    sub = net.subpartitions[0]
    n = 0
    for size in [1, 10, 1000, 5000, 3, 20_000, 7]:  # 20_000 int64 rows > one 8 KiB buffer
        sub.add_batch(pa.record_batch([pa.array(range(n, n + size))], names=["x"]))
        n += size
    net.partitions[0].broadcast_event(EventKind.END_OF_PARTITION)
    while not net.outputs_drained():
        wait()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    count, in_order, max_held, events = pickle.loads(os.read(result_r, 65536))
    assert count == n and in_order
    assert events == [EventKind.END_OF_PARTITION]
    # the consumer never held more buffers than exclusive + floating credits
    assert max_held <= 3
    assert sub.buffers_sent > 20  # the big batch was sliced over many buffers
    pool.close()
    net.close()


@pytest.mark.parametrize("segment", [4096, 65536])
def test_local_buffer_pool_recycles(segment):
    local = LocalBufferPool([3, 4])
    assert local.request() == 3 and local.request() == 4 and local.request() is None
    local.recycle(3)
    assert local.num_available == 1 and local.request() == 3
