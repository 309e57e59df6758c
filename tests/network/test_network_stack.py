"""The network stack on its own: frames, the credit ledger, and two real processes."""

from __future__ import annotations

import os
import pickle

import pyarrow as pa
import pytest

from flowrun.network.buffer_pool import LocalBufferPool, NetworkBufferPool
from flowrun.network.credit import CreditLedger
from flowrun.network.doorbell import (
    MESSAGE,
    PIPE_BUF,
    DoorbellReader,
    DoorbellWriter,
    Kind,
    create_doorbell_pipe,
)
from flowrun.network.frames import (
    BatchReader,
    BufferBuilder,
    EventKind,
    FrameKind,
    ipc_stream_size,
    iter_frames,
    read_batch,
    record_batch_size,
    rows_that_fit,
    schema_info,
    serialize_stream,
)
from flowrun.network.input_gate import InputChannel, InputGate
from flowrun.network.network_environment import (
    ChannelDescriptor,
    InputGateDescriptor,
    NetworkDescriptor,
    NetworkEnvironment,
    ResultPartitionDescriptor,
    SubpartitionDescriptor,
)
from flowrun.network.result_partition import BackpressureStats, ResultSubpartition


def test_ipc_stream_size_is_exact():
    for n in (0, 1, 17, 10_000):
        batch = pa.record_batch(
            [pa.array(range(n)), pa.array([str(i) for i in range(n)])], names=["a", "b"]
        )
        assert ipc_stream_size(batch) == serialize_stream(batch).size
        mem = memoryview(bytearray(ipc_stream_size(batch) + 64))
        builder = BufferBuilder(mem)
        assert builder.write_batch(batch)
        ((kind, _flags, _event, payload),) = list(iter_frames(mem, builder.offset))
        assert kind == FrameKind.BATCH
        # schema + record batch, without the end-of-stream marker
        assert len(payload) == ipc_stream_size(batch) - 8
        assert len(payload) == batch.schema.serialize().size + record_batch_size(batch)
        assert read_batch(payload).equals(batch)


def test_frames_keep_order_and_alignment():
    mem = memoryview(bytearray(1 << 16))
    builder = BufferBuilder(mem)
    batches = [pa.record_batch([pa.array([i] * (i + 1))], names=["x"]) for i in range(5)]
    for b in batches:
        assert builder.write_batch(b)
    assert builder.write_event(EventKind.END_OF_PARTITION)
    frames = list(iter_frames(mem, builder.offset))
    # the schema is written once per buffer: one BATCH, then bare record batch messages
    assert [f[0] for f in frames] == [FrameKind.BATCH] + [FrameKind.BATCH_BODY] * 4 + [
        FrameKind.EVENT
    ]
    assert frames[-1][2] == EventKind.END_OF_PARTITION
    offsets = [payload.obj is mem.obj for _, _, _, payload in frames]
    assert all(offsets)
    base = memoryview(mem).cast("B")
    start = pa.py_buffer(base).address
    reader = BatchReader()
    for (kind, _flags, _event, payload), batch in zip(frames[:-1], batches, strict=True):
        got = reader.read(kind, payload)
        assert got.equals(batch)
        for column in got.columns:  # zero-copy, 8-byte aligned, inside the buffer
            data = column.buffers()[1]
            assert start <= data.address < start + len(mem)
            assert data.address % 8 == 0


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


def test_local_buffer_pool_finds_runs_of_consecutive_buffers():
    local = LocalBufferPool([4, 5, 6, 9])
    assert local.longest_run() == 3 and LocalBufferPool([1, 3, 5]).longest_run() == 1
    assert local.request_run(2) == 4 and local.num_available == 2
    assert local.request_run(2) is None  # 6 and 9 are free, but not consecutive
    local.recycle(5)
    local.recycle(4)
    assert local.request_run(3) == 4 and local.request_run(1) == 9
    assert local.request_run(1) is None


def test_local_buffer_pool_recycled_run_is_taken_again_from_its_start():
    local = LocalBufferPool(range(6))
    assert local.request_run(2) == 0 and local.request_run(2) == 2
    local.recycle_run(2, 2)
    assert local.num_available == 4
    assert local.request_run(2) == 2  # the run recycled last comes first, whole
    assert local.request_run(1) == 4


# -- one channel inside this process ------------------------------------------------


class _LocalChannel:
    """A producer and a consumer NetworkEnvironment in this process, joined by one channel."""

    def __init__(self, segment: int, buffers: int = 10) -> None:
        self.pool = NetworkBufferPool.create("test", buffers, segment)
        prod_r, prod_w = create_doorbell_pipe()
        cons_r, cons_w = create_doorbell_pipe()
        self._fds = [prod_r, prod_w, cons_r, cons_w]
        sub = SubpartitionDescriptor(1, 0, list(range(buffers)))
        producer_desc = NetworkDescriptor(
            buffers, segment, 2, 8, partitions=[ResultPartitionDescriptor(0, [sub])]
        )
        consumer_desc = NetworkDescriptor(
            buffers, segment, 2, 8, gates=[InputGateDescriptor(0, 0, [ChannelDescriptor(0, 0)])]
        )
        self.consumer = NetworkEnvironment(
            consumer_desc, os.dup(self.pool.fd), cons_r, {0: prod_w}, lambda: None
        )
        self.producer = NetworkEnvironment(
            producer_desc, os.dup(self.pool.fd), prod_r, {1: cons_w}, self.pump
        )
        self.sub = self.producer.subpartitions[0]
        self.gate = self.consumer.gates[0]
        self.batches: list[pa.RecordBatch] = []  #: received, copied out of shared memory
        self.events: list[int] = []
        self.buffers: list[tuple[int, list[int]]] = []  #: (length, frame kinds) received

    def pump(self) -> None:
        """Consume everything that arrived, then let the producer see the recycles."""
        self.consumer.process_doorbell()
        while (polled := self.gate.poll()) is not None:
            channel, buffer, memory = polled
            self.buffers.append((len(memory), [f[0] for f in iter_frames(memory, len(memory))]))
            for kind, batch, event, _payload in self.gate.read(channel, memory):
                if kind == FrameKind.BATCH:
                    self.batches.append(pa.RecordBatch.from_pylist(batch.to_pylist(), batch.schema))
                else:
                    self.events.append(event)
            batch = None
            del memory
            self.gate.recycle(channel, buffer)
        self.producer.process_doorbell()

    def finish(self) -> None:
        self.sub.add_event(EventKind.END_OF_PARTITION)
        while not self.producer.outputs_drained() or self.gate.has_data():
            self.pump()

    def close(self) -> None:
        self.producer.close()
        self.consumer.close()
        self.pool.close()
        for fd in self._fds:
            os.close(fd)


def test_slice_to_fit_keeps_buffers_full():
    segment = 8192
    channel = _LocalChannel(segment)
    try:
        n = 0
        for _ in range(20):  # 1,000 int64 rows: a message of ~8 KB, just under a buffer
            channel.sub.add_batch(pa.record_batch([pa.array(range(n, n + 1000))], names=["x"]))
            n += 1000
            channel.pump()
        channel.finish()
        rows = [v for b in channel.batches for v in b.column(0).to_pylist()]
        assert rows == list(range(n))
        assert channel.events == [EventKind.END_OF_PARTITION]
        data_buffers = channel.buffers[:-1]  # the last one was flushed by the event
        # every buffer handed over full: no buffer left half empty by a batch that did not fit
        assert all(length >= segment - 600 for length, _kinds in data_buffers[:-1])
        assert len(data_buffers) <= 21  # 160 KB in 8 KiB buffers (halving would need 40)
        assert len(channel.batches) <= 40  # a batch is cut at most once per buffer
    finally:
        channel.close()


def _int_batch(start: int, rows: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(start, start + rows), pa.int64())], names=["x"])


def test_a_batch_larger_than_a_segment_spans_contiguous_segments():
    segment = 8192
    channel = _LocalChannel(segment)
    try:
        n = 0
        for _ in range(12):  # ~12 KB per batch: two segments each, never cut
            channel.sub.add_batch(_int_batch(n, 1500))
            n += 1500
            assert channel.sub.credit >= 0
            channel.pump()
        channel.finish()
        rows = [v for b in channel.batches for v in b.column(0).to_pylist()]
        assert rows == list(range(n))
        assert [len(b) for b in channel.batches] == [1500] * 12
        data_buffers = channel.buffers[:-1]
        assert len(data_buffers) == 12
        assert all(segment < length <= 2 * segment for length, _kinds in data_buffers)
        # every segment came back, and every credit: two per spanning buffer
        assert channel.producer.outputs_drained()
        assert channel.sub.credit + channel.gate.ledger.floating_free == 2 + 8
    finally:
        channel.close()


def test_spanning_buffers_under_backpressure_take_one_credit_per_segment():
    """The consumer reads nothing until the producer has filled every buffer it may."""
    segment = 8192
    channel = _LocalChannel(segment)
    sent = []
    real_pump = channel.pump

    def blocked_pump():  # what the producer's wait does: only now the consumer catches up
        sent.append(channel.sub.buffers_sent)
        real_pump()

    channel.sub._wait = blocked_pump
    try:
        n = 0
        for _ in range(20):
            channel.sub.add_batch(_int_batch(n, 1500))
            n += 1500
            channel.producer.process_doorbell()
        channel.finish()
        rows = [v for b in channel.batches for v in b.column(0).to_pylist()]
        assert rows == list(range(n))
        assert sent and sent[0] == 1  # two exclusive credits: one two-segment buffer
        assert channel.producer.outputs_drained()
    finally:
        channel.close()


def _consumer_keeps(channel, keep):
    """The consumer keeps the first buffer for which ``keep(buffer)`` holds (an operator
    holding zero-copy batches); returns ``(kept [(channel, buffer)], the real recycle)``."""
    kept: list = []
    real_recycle = channel.gate.recycle

    def recycle(ch, buffer):
        if not kept and keep(buffer):
            kept.append((ch, buffer))
        else:
            real_recycle(ch, buffer)

    channel.gate.recycle = recycle
    return kept, real_recycle


def _pump_while_waiting(channel, stalled: str):
    """Make the producer's backpressure wait pump the consumer; fail after 1,000 waits."""
    waits = []

    def wait():
        waits.append(1)
        assert len(waits) < 1000, stalled
        channel.pump()

    channel.sub._wait = wait
    return wait


def test_buffers_kept_by_the_consumer_leave_no_run_and_batches_are_cut():
    """An operator may keep zero-copy batches, and their buffers, for long: the producer
    must go on with the free segments that are left even when no two are adjacent
    (here buffers 0 and 2, around the kept buffer 1)."""
    segment = 8192
    channel = _LocalChannel(segment, buffers=3)
    kept, real_recycle = _consumer_keeps(channel, lambda buffer: buffer == 1)
    _pump_while_waiting(channel, "the producer waits for segments that never come back")
    try:
        for i in range(3):  # one small batch per buffer: buffers 0, 1, 2 in turn
            channel.sub.add_batch(_int_batch(10 * i, 10))
            channel.sub.flush()
        for _ in range(3):
            channel.pump()
        assert [b for _ch, b in kept] == [1]
        n = 30
        for _ in range(6):
            channel.sub.add_batch(_int_batch(n, 1500))  # two segments: none adjacent is free
            n += 1500
            channel.pump()
        for ch, buffer in kept:
            real_recycle(ch, buffer)
        channel.finish()
        rows = [v for b in channel.batches for v in b.column(0).to_pylist()]
        assert rows == list(range(n))
    finally:
        channel.close()


def test_a_kept_spanning_buffer_holding_every_exclusive_credit_does_not_stall():
    """The consumer keeps the first buffer (two segments: both exclusive credits). The
    producer learns of no credit from DATA any more; its BACKLOG message wins floating
    credits instead."""
    channel = _LocalChannel(8192)
    kept, real_recycle = _consumer_keeps(channel, lambda buffer: True)
    wait = _pump_while_waiting(channel, "the channel stalled")
    try:
        n = 0
        for _ in range(30):
            channel.sub.add_batch(_int_batch(n, 1500))
            n += 1500
        channel.sub.flush()
        while len(channel.batches) < 30:
            wait()
        assert len(kept) == 1
        real_recycle(*kept[0])
        channel.finish()
        rows = [v for b in channel.batches for v in b.column(0).to_pylist()]
        assert rows == list(range(n))
    finally:
        channel.close()


def test_a_batch_needing_more_segments_than_a_buffer_may_span_is_cut():
    segment = 8192
    channel = _LocalChannel(segment)
    try:
        channel.sub.add_batch(_int_batch(0, 3000))  # ~24 KB: three segments > 2 credits
        channel.pump()
        channel.finish()
        rows = [v for b in channel.batches for v in b.column(0).to_pylist()]
        assert rows == list(range(3000)) and len(channel.batches) > 1
        assert all(length <= segment for length, _kinds in channel.buffers)
    finally:
        channel.close()


def test_a_row_larger_than_a_buffer_travels_as_fragments():
    channel = _LocalChannel(4096)
    try:
        big = "x" * 10_000
        batch = pa.record_batch([pa.array(["a", big, "b", "c"])], names=["s"])
        channel.sub.add_batch(batch)
        channel.pump()
        channel.finish()
        got = [v for b in channel.batches for v in b.column(0).to_pylist()]
        assert got == ["a", big, "b", "c"]
        assert any(FrameKind.FRAGMENT in kinds for _length, kinds in channel.buffers)
    finally:
        channel.close()


def _batch_kinds(channel):
    return [
        kind
        for _length, kinds in channel.buffers
        for kind in kinds
        if kind in (FrameKind.BATCH, FrameKind.BATCH_BODY)
    ]


def test_schema_is_written_and_parsed_once_per_channel(monkeypatch):
    parsed = []
    read_schema = pa.ipc.read_schema

    def counting_read_schema(*args, **kwargs):
        parsed.append(1)
        return read_schema(*args, **kwargs)

    monkeypatch.setattr(pa.ipc, "read_schema", counting_read_schema)
    channel = _LocalChannel(4096)
    try:
        n = 0
        for _ in range(40):
            channel.sub.add_batch(pa.record_batch([pa.array(range(n, n + 30))], names=["x"]))
            n += 30
            channel.pump()
        channel.sub.flush()
        channel.pump()
        assert len(channel.buffers) >= 3
        # one schema message for the whole channel, then bare record batch messages,
        # in later buffers too
        assert _batch_kinds(channel) == [FrameKind.BATCH] + [FrameKind.BATCH_BODY] * 39
        assert len(parsed) == 1
        # a schema that differs only in its metadata is a new schema
        tagged = pa.record_batch([pa.array([n])], names=["x"]).replace_schema_metadata({"k": "v"})
        channel.sub.add_batch(tagged)
        channel.sub.add_batch(pa.record_batch([pa.array([n + 1])], names=["x"]))
        # a batch with dictionaries travels as a stream of its own, and the next batch
        # without them brings its schema again
        words = pa.array(["a", "b", "a"]).dictionary_encode()
        channel.sub.add_batch(pa.record_batch([words], names=["w"]))
        channel.sub.add_batch(pa.record_batch([pa.array([n + 2])], names=["x"]))
        channel.sub.add_batch(pa.record_batch([pa.array([n + 3])], names=["x"]))
        channel.finish()
        assert _batch_kinds(channel)[40:] == [FrameKind.BATCH] * 4 + [FrameKind.BATCH_BODY]
        assert len(parsed) == 5
        assert channel.batches[40].schema.metadata == {b"k": b"v"}
        assert channel.batches[41].schema.metadata is None
        assert channel.batches[42].column(0).to_pylist() == ["a", "b", "a"]
        assert pa.types.is_dictionary(channel.batches[42].schema.field(0).type)
        rows = [
            v for i, b in enumerate(channel.batches) if i != 42 for v in b.column(0).to_pylist()
        ]
        assert rows == list(range(n + 4))
    finally:
        channel.close()


def test_a_schema_pushed_out_of_the_cache_continues_its_stream():
    channel = _LocalChannel(4096)
    try:
        channel.sub.add_batch(pa.record_batch([pa.array([0])], names=["x"]))
        for i in range(40):  # more schemas than the cache keeps
            schema_info(pa.schema([(f"c{i}", pa.int8())]))
        channel.sub.add_batch(pa.record_batch([pa.array([1])], names=["x"]))
        channel.finish()
        assert _batch_kinds(channel) == [FrameKind.BATCH, FrameKind.BATCH_BODY]
        assert [b.column(0)[0].as_py() for b in channel.batches] == [0, 1]
    finally:
        channel.close()


def test_a_buffer_without_a_channel_stream_starts_its_own():
    mem = memoryview(bytearray(1 << 14))
    batch = pa.record_batch([pa.array(range(10))], names=["x"])
    builder = BufferBuilder(mem)
    assert builder.write_batch(batch) and builder.write_batch(batch)
    assert builder.write_event(EventKind.WATERMARK, b"12345678")
    assert builder.write_batch(batch) and builder.write_batch(batch)
    frames = list(iter_frames(mem, builder.offset))
    assert [f[0] for f in frames] == [
        FrameKind.BATCH,
        FrameKind.BATCH_BODY,
        FrameKind.EVENT,
        FrameKind.BATCH,
        FrameKind.BATCH_BODY,
    ]
    assert bytes(frames[2][3]) == b"12345678"
    reader = BatchReader()
    for kind, _flags, _event, payload in frames:
        if kind != FrameKind.EVENT:
            assert reader.read(kind, payload).equals(batch)


def test_schemas_and_dictionaries_mixed_in_one_buffer():
    mem = memoryview(bytearray(1 << 16))
    builder = BufferBuilder(mem)
    ints = pa.record_batch([pa.array([1, 2, 3])], names=["x"])
    dicts = pa.record_batch([pa.array(["a", "b", "a"]).dictionary_encode()], names=["d"])
    floats = pa.record_batch([pa.array([0.5])], names=["x"])
    nested = pa.record_batch(
        [pa.array([[1, 2], None, []]), pa.array([{"a": "x"}, None, {"a": None}])],
        names=["l", "s"],
    )
    sent = [ints, ints, dicts, ints, floats, dicts, nested, nested, ints]
    for batch in sent:
        assert builder.write_batch(batch)
    reader = BatchReader()
    got = [reader.read(kind, payload) for kind, _f, _e, payload in iter_frames(mem, builder.offset)]
    assert len(got) == len(sent)
    for a, b in zip(got, sent, strict=True):
        assert a.equals(b) and a.schema.equals(b.schema, check_metadata=True)


def test_rows_that_fit_never_overshoots():
    batch = pa.record_batch(
        [pa.array([str(i) * (i % 7) for i in range(5000)]), pa.array(range(5000))],
        names=["s", "n"],
    )
    size = record_batch_size(batch)
    assert rows_that_fit(batch, size, size) == batch.num_rows
    for space in (100, 1000, 4096, 20_000, size - 1):
        rows = rows_that_fit(batch, size, space)
        assert rows < batch.num_rows
        if rows:
            assert record_batch_size(batch.slice(0, rows)) <= space
    assert rows_that_fit(batch, size, 20_000) > 0


# -- doorbell batching --------------------------------------------------------------


@pytest.fixture
def counted_writes(monkeypatch):
    sizes: list[int] = []
    write = os.write

    def counting_write(fd, data):
        sizes.append(len(data))
        return write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    return sizes


def test_doorbell_writer_batches_posted_messages(counted_writes):
    r, w = create_doorbell_pipe()
    try:
        reader, writer = DoorbellReader(r), DoorbellWriter(w)
        for i in range(3):
            writer.post(Kind.DATA, 1, i, 100, 0)
        assert writer.pending == 3 and counted_writes == [] and reader.drain() == []
        writer.flush()
        assert counted_writes == [3 * MESSAGE.size]
        writer.post(Kind.RECYCLE, 2, 7, 0, 1)
        writer.send(Kind.CREDIT, 2, 0, 0, 4)  # send keeps the order of what was posted
        assert counted_writes[1:] == [2 * MESSAGE.size]
        n = 600  # more than PIPE_BUF: several writes, each atomic
        for i in range(n):
            writer.post(Kind.DATA, 0, i, 0, 0)
        writer.flush()
        assert all(size <= PIPE_BUF and size % MESSAGE.size == 0 for size in counted_writes)
        assert sum(counted_writes[2:]) == n * MESSAGE.size and len(counted_writes) == 2 + 3
        messages = reader.drain()
        assert [m[2] for m in messages[:3]] == [0, 1, 2]
        assert messages[3] == (Kind.RECYCLE, 2, 7, 0, 1)
        assert messages[4] == (Kind.CREDIT, 2, 0, 0, 4)
        assert [m[2] for m in messages[5:]] == list(range(n))
        assert writer.pending == 0
    finally:
        os.close(r)
        os.close(w)


def test_a_burst_of_data_goes_out_in_one_write(counted_writes):
    segment = 4096
    pool = NetworkBufferPool.create("test", 4, segment)
    r, w = create_doorbell_pipe()
    try:
        sub = ResultSubpartition(
            pool,
            LocalBufferPool(range(4)),
            DoorbellWriter(w),
            0,
            0,
            lambda: None,
            BackpressureStats(),
        )
        for i in range(3):  # three full buffers, queued: no credit yet
            sub.add_batch(pa.record_batch([pa.array(range(i * 500, i * 500 + 500))], names=["x"]))
        assert sub.backlog == 3 and counted_writes == []
        sub.on_credit(3)
        assert counted_writes == [3 * MESSAGE.size]
        messages = DoorbellReader(r).drain()
        assert [(m[0], m[4]) for m in messages] == [(Kind.DATA, 2), (Kind.DATA, 1), (Kind.DATA, 0)]
    finally:
        os.close(r)
        os.close(w)
        pool.close()


def test_recycle_and_the_credit_it_frees_go_out_in_one_write(counted_writes):
    pool = NetworkBufferPool.create("test", 4, 4096)
    r, w = create_doorbell_pipe()
    try:
        peer = DoorbellWriter(w)
        gate = InputGate(pool, [InputChannel(0, peer, 0), InputChannel(1, peer, 1)], 1, 1)
        gate.on_data(0, 0, 16, 1)  # channel 0 has a backlog: it gets the floating credit
        gate.on_data(1, 1, 16, 3)  # channel 1 too, but none is left
        gate.on_data(0, 2, 16, 0)  # channel 0 drained
        assert counted_writes == [MESSAGE.size]  # the first grant
        for _ in range(3):
            gate.poll()
        del counted_writes[:]
        gate.recycle(0, 0)  # the floating credit goes back to the gate and on to channel 1
        assert counted_writes == [2 * MESSAGE.size]
        messages = DoorbellReader(r).drain()
        assert messages[-2:] == [(Kind.RECYCLE, 0, 0, 0, 0), (Kind.CREDIT, 1, 0, 0, 1)]
    finally:
        os.close(r)
        os.close(w)
        pool.close()
