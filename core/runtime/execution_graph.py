"""ExecutionGraph: the JobGraph expanded into subtasks, channels and buffers.

Decides, before any process starts, every subtask's global id, which producer
subpartition feeds which consumer channel (all-to-all for hash, rebalance,
broadcast...; pointwise for forward and rescale, exactly like Flink's
``connectPointwise``), and which buffers of the shared pool each subpartition
owns. Subtasks receive only their own slice of this plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowrun.network.network_environment import (
    ChannelDescriptor,
    InputGateDescriptor,
    NetworkDescriptor,
    ResultPartitionDescriptor,
    SubpartitionDescriptor,
)

from ..graph.job_graph import JobEdge, JobGraph, JobVertex

__all__ = ["ExecutionVertex", "ExecutionPlan", "pointwise_targets"]


@dataclass(eq=False)
class ExecutionVertex:
    task_id: int
    vertex: JobVertex
    index: int
    peers: set[int] = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"{self.vertex.name} ({self.index + 1}/{self.vertex.parallelism})"


def pointwise_targets(producer: int, n_producers: int, n_consumers: int) -> list[int]:
    """Consumer subtasks a producer subtask feeds on a POINTWISE edge (Flink's rule)."""
    if n_producers == n_consumers:
        return [producer]
    if n_producers > n_consumers:
        return [
            c
            for c in range(n_consumers)
            if c * n_producers // n_consumers <= producer < (c + 1) * n_producers // n_consumers
        ]
    start = producer * n_consumers // n_producers
    end = (producer + 1) * n_consumers // n_producers
    return list(range(start, end))


class ExecutionPlan:
    """Subtasks and the network wiring of a job."""

    def __init__(
        self,
        job_graph: JobGraph,
        segment_size: int,
        buffers_per_subpartition: int,
        exclusive_credits: int,
        floating_credits: int,
    ) -> None:
        self.job_graph = job_graph
        self.tasks: list[ExecutionVertex] = []
        self.tasks_of: dict[int, list[ExecutionVertex]] = {}
        for vertex in job_graph.vertices:
            subtasks = []
            for i in range(vertex.parallelism):
                ev = ExecutionVertex(len(self.tasks), vertex, i)
                self.tasks.append(ev)
                subtasks.append(ev)
            self.tasks_of[vertex.index] = subtasks

        self.network: dict[int, NetworkDescriptor] = {
            t.task_id: NetworkDescriptor(0, segment_size, exclusive_credits, floating_credits)
            for t in self.tasks
        }
        next_buffer = 0
        next_sub = {t.task_id: 0 for t in self.tasks}
        next_channel = {t.task_id: 0 for t in self.tasks}

        # Channels are numbered in the consumer in order of its in-edges, then producers;
        # subpartitions in the producer in order of its out-edges, then consumers.
        links: dict[int, list[tuple[int, int]]] = {}  # edge -> [(producer task, consumer task)]
        for edge in job_graph.edges:
            links[edge.index] = self._links(edge)

        channel_of: dict[tuple[int, int, int], int] = {}
        for vertex in job_graph.vertices:
            for edge in vertex.in_edges:
                for consumer in self.tasks_of[vertex.index]:
                    channels = []
                    for producer_id, consumer_id in links[edge.index]:
                        if consumer_id != consumer.task_id:
                            continue
                        channel_of[(edge.index, producer_id, consumer_id)] = next_channel[
                            consumer_id
                        ]
                        next_channel[consumer_id] += 1
                        channels.append(ChannelDescriptor(producer_id, -1))
                    input_index = edge.stream_edge.input_index
                    self.network[consumer.task_id].gates.append(
                        InputGateDescriptor(edge.index, input_index, channels)
                    )

        for vertex in job_graph.vertices:
            for edge in vertex.out_edges:
                for producer in self.tasks_of[vertex.index]:
                    subs = []
                    for producer_id, consumer_id in links[edge.index]:
                        if producer_id != producer.task_id:
                            continue
                        sub_index = next_sub[producer_id]
                        next_sub[producer_id] += 1
                        channel = channel_of[(edge.index, producer_id, consumer_id)]
                        buffers = list(range(next_buffer, next_buffer + buffers_per_subpartition))
                        next_buffer += buffers_per_subpartition
                        subs.append(SubpartitionDescriptor(consumer_id, channel, buffers))
                        self._set_peer_subpartition(consumer_id, channel, sub_index)
                        producer.peers.add(consumer_id)
                        self.tasks[consumer_id].peers.add(producer_id)
                    self.network[producer.task_id].partitions.append(
                        ResultPartitionDescriptor(edge.index, subs)
                    )
        self.num_buffers = max(next_buffer, 1)
        for desc in self.network.values():
            desc.num_buffers = self.num_buffers

    def _set_peer_subpartition(self, consumer_id: int, channel: int, sub_index: int) -> None:
        for gate in self.network[consumer_id].gates:
            if channel < len(gate.channels):
                gate.channels[channel].peer_subpartition = sub_index
                return
            channel -= len(gate.channels)
        raise AssertionError("channel out of range")

    def _links(self, edge: JobEdge) -> list[tuple[int, int]]:
        producers = self.tasks_of[edge.source.index]
        consumers = self.tasks_of[edge.target.index]
        if edge.partitioner.is_pointwise:
            return [
                (p.task_id, consumers[c].task_id)
                for p in producers
                for c in pointwise_targets(p.index, len(producers), len(consumers))
            ]
        return [(p.task_id, c.task_id) for p in producers for c in consumers]
