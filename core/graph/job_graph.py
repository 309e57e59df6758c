"""JobGraph: operators fused into chains, one JobVertex per chain.

Chaining rule (Flink's): an edge is fused when it is FORWARD, both ends have
the same parallelism and slot sharing group, the consumer has this edge as its
only input, chaining is enabled for the job, and neither end opted out
(``disable_chaining``, ``start_new_chain``). A chain is a tree rooted at its
head operator: a forward fan-out chains every branch. Edges that are not fused
become JobEdges, i.e. network channels between subtask processes.

Operator ids are stable across runs of the same program: the md5 of the
``uid`` when one is set, otherwise of the operator's position in the graph
(its index in a breadth-first walk from the sources and the ids of its
inputs), as Flink's StreamGraphHasher does.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

from ..config import OPERATOR_CHAINING
from .stream_graph import StreamEdge, StreamGraph, StreamNode
from .transformations import ChainingStrategy

__all__ = ["JobVertex", "JobEdge", "JobGraph"]


@dataclass(eq=False)
class JobVertex:
    index: int
    id: str
    head: StreamNode
    nodes: list[StreamNode]  #: chain members, parents before children
    chained_edges: list[StreamEdge]
    parallelism: int
    max_parallelism: int
    in_edges: list[JobEdge] = field(default_factory=list)
    out_edges: list[JobEdge] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " -> ".join(n.name for n in self.nodes)

    @property
    def is_source(self) -> bool:
        return self.head.is_source


@dataclass(eq=False)
class JobEdge:
    index: int
    source: JobVertex
    target: JobVertex
    stream_edge: StreamEdge

    @property
    def partitioner(self):
        return self.stream_edge.partitioner


def _is_chainable(edge: StreamEdge, enabled: bool) -> bool:
    up, down = edge.source, edge.target
    return (
        enabled
        and len(down.in_edges) == 1
        and edge.partitioner.name == "FORWARD"
        and up.parallelism == down.parallelism
        and up.slot_sharing_group == down.slot_sharing_group
        and down.chaining == ChainingStrategy.ALWAYS
        and up.chaining != ChainingStrategy.NEVER
    )


def operator_ids(graph: StreamGraph) -> dict[int, str]:
    """Stable id per stream node: from its uid, else from its position."""
    ids: dict[int, str] = {}
    queue = deque(sorted(graph.sources(), key=lambda n: n.id))
    visited: set[int] = set()
    position = 0
    while queue:
        node = queue.popleft()
        if node.id in visited:
            continue
        if any(e.source.id not in ids for e in node.in_edges):
            queue.append(node)  # wait until every input has its id
            continue
        visited.add(node.id)
        if node.uid is not None:
            seed = "uid:" + node.uid
        else:
            inputs = ",".join(ids[e.source.id] for e in node.in_edges)
            seed = f"pos:{position}:{inputs}"
        ids[node.id] = hashlib.md5(seed.encode()).hexdigest()
        position += 1
        for e in sorted(node.out_edges, key=lambda e: e.target.id):
            queue.append(e.target)
    return ids


class JobGraph:
    """The chained graph that the JobManager deploys."""

    def __init__(self, stream_graph: StreamGraph) -> None:
        self.job_name = stream_graph.job_name
        self.config = stream_graph.config
        self.stream_graph = stream_graph
        self.operator_ids = operator_ids(stream_graph)
        enabled = bool(self.config.get(OPERATOR_CHAINING))
        self.vertices: list[JobVertex] = []
        self.edges: list[JobEdge] = []
        vertex_of: dict[int, JobVertex] = {}

        heads = [
            n
            for n in sorted(stream_graph.nodes, key=lambda n: n.id)
            if not (len(n.in_edges) == 1 and _is_chainable(n.in_edges[0], enabled))
        ]
        for head in heads:
            members, chained = [head], []
            frontier = [head]
            while frontier:
                node = frontier.pop(0)
                for e in sorted(node.out_edges, key=lambda e: e.target.id):
                    if _is_chainable(e, enabled):
                        members.append(e.target)
                        chained.append(e)
                        frontier.append(e.target)
            vertex = JobVertex(
                index=len(self.vertices),
                id=self.operator_ids[head.id],
                head=head,
                nodes=members,
                chained_edges=chained,
                parallelism=head.parallelism,
                max_parallelism=head.max_parallelism,
            )
            self.vertices.append(vertex)
            for n in members:
                vertex_of[n.id] = vertex

        for vertex in self.vertices:
            chained_ids = {id(e) for e in vertex.chained_edges}
            for node in vertex.nodes:
                for e in node.out_edges:
                    if id(e) in chained_ids:
                        continue
                    job_edge = JobEdge(len(self.edges), vertex, vertex_of[e.target.id], e)
                    self.edges.append(job_edge)
                    vertex.out_edges.append(job_edge)
                    vertex_of[e.target.id].in_edges.append(job_edge)

    @classmethod
    def from_stream_graph(cls, graph: StreamGraph) -> JobGraph:
        return cls(graph)

    def describe(self) -> str:
        """The chained plan as text (``flowrun run --plan``)."""
        lines = [f"Job '{self.job_name}': {len(self.vertices)} vertices, {len(self.edges)} edges"]
        for v in self.vertices:
            lines.append(
                f"  [{v.index}] {v.name}  parallelism={v.parallelism} "
                f"max_parallelism={v.max_parallelism} id={v.id[:8]}"
            )
            for e in v.out_edges:
                lines.append(
                    f"        --{e.partitioner.name}--> [{e.target.index}] {e.target.name}"
                )
        return "\n".join(lines)
