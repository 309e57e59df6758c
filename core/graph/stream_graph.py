"""StreamGraph: the transformations resolved into operators and edges.

Virtual nodes disappear here: a partitioning call becomes the partitioner of
the edges it sits on, a union becomes several edges into one operator. Each
operator gets its final parallelism and max parallelism, and edges get the
Flink default partitioner (FORWARD between equal parallelism, REBALANCE
otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import MAX_PARALLELISM, Configuration
from .transformations import (
    OperatorTransformation,
    PartitionTransformation,
    SourceTransformation,
    Transformation,
    UnionTransformation,
)

__all__ = ["StreamNode", "StreamEdge", "StreamGraph", "GraphError"]


class GraphError(ValueError):
    """The job's graph is inconsistent (a user error in how the job is built)."""


@dataclass(eq=False)
class StreamNode:
    id: int
    name: str
    factory: Any
    parallelism: int
    max_parallelism: int
    uid: str | None
    chaining: str
    keyed: bool
    is_source: bool
    output_type: Any
    arrow: bool
    buffer_timeout: int | None
    slot_sharing_group: str
    in_edges: list[StreamEdge] = field(default_factory=list)
    out_edges: list[StreamEdge] = field(default_factory=list)


@dataclass(eq=False)
class StreamEdge:
    source: StreamNode
    target: StreamNode
    partitioner: Any  #: StreamPartitioner instance (a template; each subtask copies it)
    input_index: int = 0

    @property
    def partitioner_name(self) -> str:
        return self.partitioner.name


def _input_parallelism(t: Transformation, nodes: dict, default: int) -> int:
    """Resolved parallelism of the real operator behind ``t`` (through virtual nodes)."""
    while not isinstance(t, OperatorTransformation):
        t = t.inputs[0]
    node = nodes.get(t.id)
    return node.parallelism if node is not None else (t.parallelism or default)


class StreamGraph:
    """Operators and edges of a job, with parallelism resolved."""

    def __init__(self, job_name: str, nodes: list[StreamNode], config: Configuration) -> None:
        self.job_name = job_name
        self.nodes = nodes
        self.config = config

    @classmethod
    def from_transformations(
        cls,
        job_name: str,
        sinks: list[Transformation],
        default_parallelism: int,
        config: Configuration,
    ) -> StreamGraph:
        from flowrun.network.partitioner import ForwardPartitioner, RebalancePartitioner
        from flowrun.state.key_groups import compute_default_max_parallelism

        # Collect every reachable transformation in id order (deterministic).
        seen: dict[int, Transformation] = {}
        stack = list(sinks)
        while stack:
            t = stack.pop()
            if t.id in seen:
                continue
            seen[t.id] = t
            stack.extend(t.inputs)
        if not seen:
            raise GraphError("no operators defined in the job; add a sink such as print()")
        order = [seen[i] for i in sorted(seen)]

        env_max = config.get(MAX_PARALLELISM)
        nodes: dict[int, StreamNode] = {}
        for t in order:
            if not isinstance(t, OperatorTransformation):
                continue
            parallelism = t.parallelism or default_parallelism
            if t.parallelism_from_input and t.inputs:
                parallelism = _input_parallelism(t.inputs[0], nodes, default_parallelism)
            if isinstance(t, SourceTransformation):
                limit = t.source.max_parallelism()
                if limit is not None and t.parallelism is None:
                    parallelism = min(parallelism, limit)
                elif limit is not None and parallelism > limit:
                    raise GraphError(
                        f"source '{t.name}' supports parallelism at most {limit}, "
                        f"but set_parallelism({parallelism}) was requested"
                    )
            max_par = t.max_parallelism or (
                env_max if env_max != -1 else compute_default_max_parallelism(parallelism)
            )
            if parallelism > max_par:
                raise GraphError(
                    f"operator '{t.name}' has parallelism {parallelism} above its max "
                    f"parallelism {max_par}"
                )
            nodes[t.id] = StreamNode(
                id=t.id,
                name=t.name,
                factory=t.factory,
                parallelism=parallelism,
                max_parallelism=max_par,
                uid=t.uid,
                chaining=t.chaining,
                keyed=t.keyed,
                is_source=isinstance(t, SourceTransformation),
                output_type=t.output_type,
                arrow=t.arrow,
                buffer_timeout=t.buffer_timeout,
                slot_sharing_group=t.slot_sharing_group,
            )

        uids: dict[str, str] = {}
        for node in nodes.values():
            if node.uid is None:
                continue
            if node.uid in uids:
                raise GraphError(
                    f"uid {node.uid!r} is used by both '{uids[node.uid]}' and '{node.name}'; "
                    "uids must be unique within a job"
                )
            uids[node.uid] = node.name

        def resolve(t: Transformation, partitioner: Any) -> list[tuple[StreamNode, Any]]:
            """Real upstream nodes of ``t`` with the partitioner on the way."""
            if isinstance(t, OperatorTransformation):
                return [(nodes[t.id], partitioner)]
            if isinstance(t, PartitionTransformation):
                return [r for i in t.inputs for r in resolve(i, t.partitioner)]
            if isinstance(t, UnionTransformation):
                return [r for i in t.inputs for r in resolve(i, partitioner)]
            raise GraphError(f"unknown transformation {type(t).__name__}")

        for t in order:
            if not isinstance(t, OperatorTransformation):
                continue
            target = nodes[t.id]
            for input_index, inp in enumerate(t.inputs):
                for source, partitioner in resolve(inp, None):
                    if partitioner is None:
                        if source.parallelism == target.parallelism:
                            partitioner = ForwardPartitioner()
                        else:
                            partitioner = RebalancePartitioner()
                    elif callable(partitioner) and not hasattr(partitioner, "split_rows"):
                        # key_by: the partitioner depends on the consumer's max parallelism
                        partitioner = partitioner(target.max_parallelism)
                    if partitioner.name == "FORWARD" and source.parallelism != target.parallelism:
                        raise GraphError(
                            f"forward partitioning does not allow a change of parallelism: "
                            f"'{source.name}' has {source.parallelism}, '{target.name}' has "
                            f"{target.parallelism}; use rebalance() or rescale()"
                        )
                    edge = StreamEdge(source, target, partitioner, input_index)
                    source.out_edges.append(edge)
                    target.in_edges.append(edge)
        return cls(job_name, list(nodes.values()), config)

    def sources(self) -> list[StreamNode]:
        return [n for n in self.nodes if n.is_source]
