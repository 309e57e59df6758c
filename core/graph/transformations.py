"""Transformations: what the DataStream API records before a job is built.

Each API call appends a node; nothing runs until ``execute()``. A node holds an
*operator factory* (a picklable object that builds the runtime operator inside
the subtask process) plus the settings the user chained onto the stream
(name, uid, parallelism, chaining hints). Partitioning calls (``rebalance``,
``key_by``...) and ``union`` create virtual nodes that only shape the edges,
as in Flink.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Transformation",
    "OperatorTransformation",
    "SourceTransformation",
    "SinkTransformation",
    "PartitionTransformation",
    "UnionTransformation",
    "ChainingStrategy",
]

_ids = itertools.count(1)


class ChainingStrategy:
    ALWAYS = "ALWAYS"  #: may chain to predecessor and successor
    HEAD = "HEAD"  #: starts a new chain but successors may chain to it
    NEVER = "NEVER"  #: never chained


@dataclass(eq=False)
class Transformation:
    """A node of the logical plan (``id`` orders nodes by creation, like Flink)."""

    name: str
    inputs: list[Transformation] = field(default_factory=list)
    parallelism: int | None = None
    max_parallelism: int | None = None
    uid: str | None = None
    description: str | None = None
    chaining: str = ChainingStrategy.ALWAYS
    slot_sharing_group: str = "default"
    buffer_timeout: int | None = None
    output_type: Any = None  #: TypeInformation or None (pickled)
    arrow: bool = False  #: the output is a stream of pyarrow.RecordBatch
    #: take the parallelism of the (single) input, so the operator chains to it
    parallelism_from_input: bool = False
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def is_virtual(self) -> bool:
        return False


@dataclass(eq=False)
class OperatorTransformation(Transformation):
    factory: Any = None  #: builds the runtime operator in the subtask process
    keyed: bool = False  #: runs in a keyed context (its input is hash-partitioned by key)


@dataclass(eq=False)
class SourceTransformation(OperatorTransformation):
    source: Any = None  #: a flowrun.core.connectors.base.Source


@dataclass(eq=False)
class SinkTransformation(OperatorTransformation):
    pass


@dataclass(eq=False)
class PartitionTransformation(Transformation):
    #: a StreamPartitioner, or for key_by a callable max_parallelism -> StreamPartitioner
    partitioner: Any = None

    @property
    def is_virtual(self) -> bool:
        return True


@dataclass(eq=False)
class UnionTransformation(Transformation):
    @property
    def is_virtual(self) -> bool:
        return True
