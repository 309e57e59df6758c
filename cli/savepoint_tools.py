"""Savepoints offline: what one holds (``flowrun savepoint inspect``) and how it would map onto a
changed job (``flowrun savepoint diff``) -- Flink's State Processor API, made easy.

A savepoint is a directory with a ``_metadata`` document (operator id -> name, uid,
parallelism, max parallelism, and per old subtask the handles of its state files) and Arrow IPC
state streams (:mod:`flowrun.state.snapshot`: columns ``key_group, key, user_key, value`` with
typed bytes; the schema metadata names the state, its kind and its declared types as ``repr``
strings). Reading it needs no job and no running engine.

Values are decoded with the state serializers (:mod:`flowrun.state.serializers`) for the
*declared* types, which are parsed back from their ``repr`` by :func:`parse_type_repr` -- a
small parser, never ``eval``. Nothing is unpickled unless the declared type is a pickled one
(``Types.PICKLED_BYTE_ARRAY()``): then the user asked for objects, and sees their ``repr``.

Example::

    >>> from flowrun.core.typeinfo import Types
    >>> parse_type_repr("MapTypeInfo<String, ListTypeInfo<Long>>") == Types.MAP(
    ...     Types.STRING(), Types.LIST(Types.LONG()))
    True
    >>> parse_type_repr("RowTypeInfo(name: String, age: Integer)")
    RowTypeInfo(name: String, age: Integer)
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flowrun.core.reprs import short_repr
from flowrun.core.typeinfo import (
    BasicArrayTypeInfo,
    BasicType,
    BasicTypeInfo,
    DateTypeInfo,
    ExternalTypeInfo,
    InstantTypeInfo,
    ListTypeInfo,
    MapTypeInfo,
    ObjectArrayTypeInfo,
    PickledBytesTypeInfo,
    PrimitiveArrayTypeInfo,
    RowTypeInfo,
    TimestampTypeInfo,
    TimeTypeInfo,
    TupleTypeInfo,
    TypeInformation,
)

from .errors import CliError

__all__ = [
    "OperatorSummary",
    "Savepoint",
    "SavepointError",
    "StateSummary",
    "diff_report",
    "format_inspect",
    "format_state",
    "parse_type_repr",
]

CELL_LIMIT = 80  #: characters of one decoded value in a state table


class SavepointError(CliError):
    """The path is not a readable savepoint, or a request about it is wrong; one line."""


# --------------------------------------------------------------------------------------------
# type reprs -> TypeInformation


_BASIC_BY_NAME = {b.value: b for b in BasicType}
_SIMPLE = {
    "DateTypeInfo": DateTypeInfo,
    "TimeTypeInfo": TimeTypeInfo,
    "TimestampTypeInfo": TimestampTypeInfo,
    "PickledByteArrayTypeInfo": PickledBytesTypeInfo,
}
_ELEMENT = {
    "PrimitiveArrayTypeInfo": PrimitiveArrayTypeInfo,
    "BasicArrayTypeInfo": BasicArrayTypeInfo,
    "ObjectArrayTypeInfo": ObjectArrayTypeInfo,
    "ListTypeInfo": ListTypeInfo,
    "ExternalTypeInfo": ExternalTypeInfo,
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELD_NAME = re.compile(r"([^:,()<>]+?): ")


class _TypeParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"cannot read type {self.text!r}: {what} at position {self.pos}")

    def expect(self, token: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise self.fail(f"expected {token!r}")
        self.pos += len(token)

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def parse(self) -> TypeInformation:
        match = _NAME.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a type name")
        name = match.group(0)
        self.pos = match.end()
        if name == "Instant":
            return InstantTypeInfo()
        if name in _BASIC_BY_NAME:
            return BasicTypeInfo(_BASIC_BY_NAME[name])
        if name in _SIMPLE:
            return _SIMPLE[name]()
        if name in _ELEMENT:
            self.expect("<")
            element = self.parse()
            self.expect(">")
            return _ELEMENT[name](element)
        if name == "MapTypeInfo":
            self.expect("<")
            key = self.parse()
            self.expect(", ")
            value = self.parse()
            self.expect(">")
            return MapTypeInfo(key, value)
        if name in ("RowTypeInfo", "TupleTypeInfo"):
            self.expect("(")
            names: list[str] = []
            types: list[TypeInformation] = []
            while not self.peek(")"):
                if types:
                    self.expect(", ")
                if name == "RowTypeInfo":
                    named = _FIELD_NAME.match(self.text, self.pos)
                    if named is not None and (names or not types):
                        names.append(named.group(1))
                        self.pos = named.end()
                types.append(self.parse())
            self.expect(")")
            if name == "TupleTypeInfo":
                return TupleTypeInfo(types)
            if names and len(names) != len(types):
                raise self.fail("some row fields are named, some are not")
            return RowTypeInfo(types, names or None)
        raise self.fail(f"unknown type {name!r}")


def parse_type_repr(text: str) -> TypeInformation | None:
    """The type info whose ``repr`` is ``text``; ``""`` (nothing declared) is None.

    Only the type infos of :mod:`flowrun.core.typeinfo` are known; anything else is a
    ``ValueError`` naming the text.

    >>> parse_type_repr("TupleTypeInfo(String, PrimitiveArrayTypeInfo<Byte>)")
    TupleTypeInfo(String, PrimitiveArrayTypeInfo<Byte>)
    >>> parse_type_repr("") is None
    True
    """
    if not text:
        return None
    parser = _TypeParser(text)
    result = parser.parse()
    if parser.pos != len(text):
        raise parser.fail("unexpected text after the type")
    return result


def _is_pickled(type_text: str) -> bool:
    """Whether decoding values of this declared type unpickles (the user declared pickles)."""
    return type_text == "" or "PickledByteArrayTypeInfo" in type_text


# --------------------------------------------------------------------------------------------
# reading a savepoint


@dataclass
class StateSummary:
    """One state of one operator, over all old subtasks."""

    name: str
    kind: str  #: value, list, map, reducing, aggregating (keyed); list or map (operator state)
    mode: str | None  #: operator state: SPLIT_DISTRIBUTE, UNION or BROADCAST; None when keyed
    key_type: str
    user_key_type: str
    value_type: str
    ttl: bool
    rows: int = 0
    bytes: int = 0
    #: (old subtask, handle JSON) of every file of this state
    files: list[tuple[int, dict]] = field(default_factory=list)

    @property
    def keyed(self) -> bool:
        return self.mode is None

    def kind_label(self) -> str:
        label = self.kind if self.keyed else f"operator {self.kind} ({self.mode})"
        return label + (", TTL" if self.ttl else "")


@dataclass
class OperatorSummary:
    """One operator of the savepoint as its ``_metadata`` and state files describe it."""

    operator_id: str
    name: str
    uid: str | None
    parallelism: int
    max_parallelism: int
    subtasks: list[dict]
    states: list[StateSummary] = field(default_factory=list)
    timer_rows: int = 0
    timer_bytes: int = 0

    @property
    def has_keyed_state(self) -> bool:
        return any(sub.get("keyed") for sub in self.subtasks)

    @property
    def has_state(self) -> bool:
        """The JobManager's rule: any state file at all (empty ones too) must be claimed."""
        from flowrun.core.runtime.job_manager import has_state

        return has_state({"subtasks": self.subtasks})

    def label(self) -> str:
        uid = f"uid {self.uid!r}" if self.uid is not None else "no uid"
        return f"{self.name!r} ({uid}, id {self.operator_id[:16]})"


class Savepoint:
    """A savepoint (or retained checkpoint) opened for reading.

    ``path`` may be the directory, its ``_metadata`` file, or a job's checkpoint directory
    (its newest valid checkpoint), as ``flowrun run -s`` accepts.
    """

    def __init__(self, path: str) -> None:
        from flowrun.core.runtime.checkpoint_storage import (
            CheckpointStorageError,
            read_metadata,
            resolve_filesystem,
            resolve_restore_path,
        )

        try:
            fs, base = resolve_filesystem(path)
            import pyarrow.fs as pafs

            if fs.get_file_info(base).type == pafs.FileType.NotFound:
                raise SavepointError(f"no such file or directory: {path}")
            self.location = resolve_restore_path(path)
            self.metadata, self.handles = read_metadata(self.location)
        except SavepointError:
            raise
        except (CheckpointStorageError, ValueError, OSError) as exc:
            raise SavepointError(f"{path} is not a readable savepoint: {exc}") from None
        operators = self.metadata.get("operators")
        if not isinstance(operators, dict):
            raise SavepointError(
                f"{path} is not a flowrun savepoint: its _metadata has no operators"
            )
        self.path = path
        self._operators: list[OperatorSummary] | None = None

    @property
    def kind(self) -> str:
        return str(self.metadata.get("kind", "checkpoint"))

    def _read_buffer(self, handle: dict) -> Any:
        """The verified bytes of one state file (size and checksum checked)."""
        from flowrun.core.runtime.checkpoint_storage import StateHandle, read_state_file

        try:
            return read_state_file(self.location, StateHandle.from_json(handle))
        except (ValueError, OSError, RuntimeError) as exc:
            raise SavepointError(f"{self.location}: {exc}") from None

    def _read(self, handle: dict) -> tuple[Any, Any]:
        from flowrun.state.snapshot import SnapshotFormatError, read_stream

        try:
            return read_stream(self._read_buffer(handle))
        except SnapshotFormatError as exc:
            name = handle.get("name")
            raise SavepointError(f"{self.location}: state file {name!r}: {exc}") from None

    def operators(self) -> list[OperatorSummary]:
        """Every operator of the savepoint with its states (rows and bytes summed)."""
        if self._operators is not None:
            return self._operators
        result = []
        for op_id, entry in self.metadata["operators"].items():
            op = OperatorSummary(
                operator_id=op_id,
                name=str(entry.get("name")),
                uid=entry.get("uid"),
                parallelism=int(entry.get("parallelism", len(entry.get("subtasks", [])))),
                max_parallelism=int(entry.get("max_parallelism", 0)),
                subtasks=list(entry.get("subtasks", [])),
            )
            states: dict[tuple[str, bool], StateSummary] = {}
            for index, sub in enumerate(op.subtasks):
                handles = list(sub.get("operator", []))
                handles += [e["handle"] for e in sub.get("keyed", [])]
                for handle in handles:
                    meta, table = self._read(handle)
                    key = (meta.state_name, meta.is_operator_state)
                    state = states.get(key)
                    if state is None:
                        state = states[key] = StateSummary(
                            name=meta.state_name,
                            kind=meta.state_kind,
                            mode=meta.mode,
                            key_type=meta.key_type,
                            user_key_type=meta.user_key_type,
                            value_type=meta.value_type,
                            ttl=meta.ttl,
                        )
                    state.rows += table.num_rows
                    state.bytes += int(handle["size"])
                    state.files.append((index, handle))
                for timer in sub.get("timers", []):
                    op.timer_bytes += int(timer["handle"]["size"])
                    op.timer_rows += self._count_rows(timer["handle"])
            op.states = list(states.values())
            result.append(op)
        self._operators = result
        return result

    def _count_rows(self, handle: dict) -> int:
        import pyarrow as pa

        return sum(batch.num_rows for batch in pa.ipc.open_stream(self._read_buffer(handle)))

    def find_state(self, selector: str) -> tuple[OperatorSummary, StateSummary]:
        """The state named by ``<uid-or-operator-name-or-id>/<state name>``."""
        if "/" not in selector:
            raise SavepointError(
                f"--state {selector!r}: expected <uid-or-operator-name>/<state name>"
            )
        found = []
        for cut in [i for i, ch in enumerate(selector) if ch == "/"]:
            op_part, state_part = selector[:cut], selector[cut + 1 :]
            for op in self.operators():
                if not _names_operator(op, op_part):
                    continue
                found.extend((op, s) for s in op.states if s.name == state_part)
        unique = {(id(op), id(s)): (op, s) for op, s in found}
        if len(unique) == 1:
            return next(iter(unique.values()))
        if not unique:
            choices = [
                f"{op.uid if op.uid is not None else op.name}/{s.name}"
                for op in self.operators()
                for s in op.states
            ]
            raise SavepointError(
                f"--state {selector!r}: no such state in {self.location}; it has "
                + (", ".join(repr(c) for c in choices) if choices else "no state at all")
            )
        raise SavepointError(
            f"--state {selector!r} is ambiguous: "
            + ", ".join(f"{op.label()} state {s.name!r}" for op, s in unique.values())
            + "; name the operator by its uid or id"
        )


def _names_operator(op: OperatorSummary, text: str) -> bool:
    if text == op.uid or text == op.name:
        return True
    return len(text) >= 8 and op.operator_id.startswith(text)


# --------------------------------------------------------------------------------------------
# inspect


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _when(timestamp_ms: Any) -> str:
    try:
        moment = _dt.datetime.fromtimestamp(int(timestamp_ms) / 1000.0)
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _type_label(text: str, what: str) -> str:
    if text:
        return text
    return "undeclared" if what == "key" else "PickledByteArrayTypeInfo"


def _header(sp: Savepoint) -> list[str]:
    meta = sp.metadata
    return [
        f"{sp.kind.capitalize()} {sp.location}",
        f"  job {meta.get('job_id')}, checkpoint {meta.get('checkpoint_id')}, "
        f"taken {_when(meta.get('timestamp'))}",
    ]


def format_inspect(sp: Savepoint) -> str:
    """Operators (name, uid, id, parallelism, max parallelism) and their states as text."""
    lines = _header(sp)
    for op in sp.operators():
        uid = f"uid {op.uid!r}" if op.uid is not None else "no uid"
        lines.append("")
        lines.append(
            f"Operator {op.name!r}  {uid}  id {op.operator_id[:16]}  "
            f"parallelism {op.parallelism}  max parallelism {op.max_parallelism}"
        )
        if not op.states and not op.timer_rows:
            lines.append("  no state")
            continue
        rows = [
            [
                s.name,
                s.kind_label(),
                _type_label(s.key_type, "key") if s.keyed else "-",
                s.user_key_type or "-" if s.kind == "map" else "-",
                _type_label(s.value_type, "value"),
                str(s.rows),
                str(s.bytes),
            ]
            for s in op.states
        ]
        if op.timer_rows or op.timer_bytes:
            rows.append(
                ["(timers)", "timers", "-", "-", "-", str(op.timer_rows), str(op.timer_bytes)]
            )
        lines += _table(
            ["state", "kind", "key", "user key", "value", "rows", "bytes"], rows, indent="  "
        )
    return "\n".join(lines)


def _decoder(type_text: str, for_keys: bool) -> Any:
    """A bytes -> display string function for values of a declared type."""
    from flowrun.state.serializers import key_serializer_for, serializer_for

    try:
        type_info = parse_type_repr(type_text)
    except ValueError:
        return lambda data: f"<{len(data)} bytes of unknown type {type_text!r}: {data.hex()[:32]}>"
    serializer = key_serializer_for(type_info) if for_keys else serializer_for(type_info)

    def decode(data: bytes | None) -> str:
        if data is None:
            return "-"
        try:
            value = serializer.deserialize(data)
        except Exception as exc:  # an unimportable pickled class, malformed bytes
            return f"<cannot decode: {type(exc).__name__}: {exc}>"
        return short_repr(value, CELL_LIMIT)

    return decode


def format_state(sp: Savepoint, selector: str, limit: int = 50) -> str:
    """One state as a table of decoded rows; at most ``limit`` rows (0: all)."""
    if limit < 0:
        raise SavepointError(f"--limit must be >= 0 (0 prints every row), got {limit}")
    op, state = sp.find_state(selector)
    lines = [
        f"State {state.name!r} of operator {op.label()}: {state.kind_label()} state, "
        + (f"key {_type_label(state.key_type, 'key')}, " if state.keyed else "")
        + (f"user key {state.user_key_type or 'undeclared'}, " if state.kind == "map" else "")
        + f"value {_type_label(state.value_type, 'value')}, {state.rows} rows",
    ]
    with_user_key = state.kind == "map"
    decode_key = _decoder(state.key_type, for_keys=True)
    decode_user_key = _decoder(state.user_key_type, for_keys=True)
    decode_value = _decoder(state.value_type, for_keys=False)
    headers = ["key group", "key"] if state.keyed else ["subtask"]
    if with_user_key:
        headers.append("key" if not state.keyed else "user key")
    headers.append("value")
    if state.ttl:
        headers.append("last access")
    rows: list[list[str]] = []
    wanted = limit or None
    for old_index, handle in state.files:
        if wanted is not None and len(rows) >= wanted:
            break
        _meta, table = sp._read(handle)
        if wanted is not None:
            table = table.slice(0, wanted - len(rows))
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        for i in range(table.num_rows):
            value = columns["value"][i]
            stamp = None
            if state.ttl and value is not None:
                stamp, value = int.from_bytes(value[:8], "big"), value[8:]
            row = (
                [str(columns["key_group"][i]), decode_key(columns["key"][i])]
                if state.keyed
                else [str(old_index)]
            )
            if with_user_key:
                row.append(decode_user_key(columns["user_key"][i]))
            row.append(decode_value(value))
            if state.ttl:
                row.append(_when(stamp) if stamp is not None else "-")
            rows.append(row)
    lines += _table(headers, rows)
    if wanted is not None and state.rows > len(rows):
        lines.append(f"({len(rows)} of {state.rows} rows; --limit 0 prints all)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# diff


@dataclass
class _JobOperator:
    operator_id: str
    name: str
    uid: str | None
    parallelism: int
    max_parallelism: int
    keyed: bool
    stateful: bool

    def label(self) -> str:
        uid = f"uid {self.uid!r}" if self.uid is not None else "no uid"
        return f"{self.name!r} ({uid}, id {self.operator_id[:16]})"


def _job_operators(job_graph: Any) -> list[_JobOperator]:
    from flowrun.core.functions import CheckpointedFunction
    from flowrun.core.runtime.operators import SourceOperator

    found = []
    for vertex in job_graph.vertices:
        for node in vertex.nodes:
            factory = node.factory
            # Known to keep state: keyed operators, sources (their splits) and functions that
            # implement CheckpointedFunction. A sink keeps state only if its writer snapshots
            # any, which is known only when it runs (print keeps none), so sinks are not listed.
            stateful = (
                node.keyed
                or isinstance(factory, SourceOperator)
                or isinstance(getattr(factory, "function", None), CheckpointedFunction)
            )
            found.append(
                _JobOperator(
                    operator_id=job_graph.operator_ids[node.id],
                    name=node.name,
                    uid=node.uid,
                    parallelism=node.parallelism,
                    max_parallelism=node.max_parallelism,
                    keyed=node.keyed,
                    stateful=stateful,
                )
            )
    return found


def _state_list(op: OperatorSummary) -> str:
    if not op.states:
        return "no state"
    return ", ".join(f"{s.name!r} ({s.kind_label()}, {s.rows} rows)" for s in op.states)


def _ranges_text(ranges: list[tuple[int, int, int]]) -> str:
    if not ranges:
        return "nothing (no old subtask had these key groups)"
    word = "subtask" if len(ranges) == 1 else "subtasks"
    return f"old {word} " + ", ".join(f"{i} ({a}-{b})" for i, a, b in ranges)


def diff_report(
    sp: Savepoint, job_graph: Any, allow_non_restored_state: bool = False
) -> tuple[str, bool]:
    """How the savepoint's state maps onto ``job_graph`` (a JobGraph built without running);
    ``(text, restorable)`` where ``restorable`` says whether ``flowrun run -s`` would accept it.
    """
    from flowrun.state.key_groups import KeyGroupRange
    from flowrun.state.operator_state import redistribute
    from flowrun.state.snapshot import read_stream

    job_ops = _job_operators(job_graph)
    by_id = {op.operator_id: op for op in job_ops}
    saved = sp.operators()
    saved_ids = {op.operator_id for op in saved if op.has_state}
    problems: list[str] = []
    lines = [
        *_header(sp),
        f"Job {job_graph.job_name!r}: {len(job_ops)} operators",
        "",
        "State in the savepoint:",
    ]
    mapped: list[tuple[OperatorSummary, _JobOperator]] = []
    for op in saved:
        if not op.has_state:
            continue
        target = by_id.get(op.operator_id)
        if target is None:
            verdict = (
                "dropped (--allow-non-restored-state)"
                if allow_non_restored_state
                else "restore FAILS unless --allow-non-restored-state"
            )
            lines.append(f"  {op.label()}: NO OPERATOR in the job has this id; {verdict}")
            lines.append(f"      {_state_list(op)}")
            if not allow_non_restored_state:
                problems.append(f"no operator for the state of {op.label()}")
            continue
        mapped.append((op, target))
        change = (
            f"parallelism {op.parallelism} -> {target.parallelism}"
            if op.parallelism != target.parallelism
            else f"parallelism {op.parallelism}"
        )
        into = "restored" if target.name == op.name else f"restored into {target.name!r}"
        lines.append(f"  {op.label()}: {into}, {change}")
        lines.append(f"      {_state_list(op)}")
        if op.has_keyed_state and op.max_parallelism != target.max_parallelism:
            lines.append(
                f"      MAX PARALLELISM CHANGED {op.max_parallelism} -> "
                f"{target.max_parallelism}: restore is REFUSED (key groups cannot be remapped)"
            )
            problems.append(
                f"max parallelism of {target.label()} changed {op.max_parallelism} -> "
                f"{target.max_parallelism}"
            )
        if op.has_keyed_state and not target.keyed:
            lines.append(
                "      it has keyed state but the job's operator is not keyed: restore FAILS"
            )
            problems.append(f"{target.label()} is not keyed but its savepoint state is")
    if not any(op.has_state for op in saved):
        lines.append("  none")

    empty = [op for op in job_ops if op.stateful and op.operator_id not in saved_ids]
    lines += ["", "Job operators that start with empty state:"]
    if not empty:
        lines.append("  none")
    for op in empty:
        what = "keyed" if op.keyed else "stateful"
        lines.append(f"  {op.label()}: {what}, nothing in the savepoint for its id")

    lines += ["", "State distribution at the job's parallelism:"]
    if not mapped:
        lines.append("  nothing is restored")
    for op, target in mapped:
        lines.append(
            f"  {target.label()}: parallelism {op.parallelism} -> {target.parallelism}, "
            f"max parallelism {target.max_parallelism}"
        )
        if op.has_keyed_state and op.max_parallelism == target.max_parallelism:
            old = sorted(
                {
                    (i, e["key_groups"][0], e["key_groups"][1])
                    for i, sub in enumerate(op.subtasks)
                    for e in sub.get("keyed", [])
                }
            )
            rows = []
            for index in range(target.parallelism):
                own = KeyGroupRange.of_operator(target.max_parallelism, target.parallelism, index)
                reads = [(i, a, b) for i, a, b in old if a <= own.end and own.start <= b]
                rows.append(
                    [f"subtask {index}", f"key groups {own.start}-{own.end}", _ranges_text(reads)]
                )
            lines += _table(["new", "owns", "reads keyed state of"], rows, indent="    ")
        operator_states = [s for s in op.states if not s.keyed]
        if operator_states:
            per_old = [[sp._read_buffer(h) for h in sub.get("operator", [])] for sub in op.subtasks]
            per_new = redistribute(per_old, target.parallelism)
            rows = []
            for index, streams in enumerate(per_new):
                counts: dict[str, int] = {}
                for stream in streams:
                    meta, table = read_stream(stream)
                    counts[meta.state_name] = counts.get(meta.state_name, 0) + table.num_rows
                text = ", ".join(f"{name!r} {n}" for name, n in counts.items()) or "nothing"
                rows.append([f"subtask {index}", text])
            modes = ", ".join(f"{s.name!r} {s.mode}" for s in operator_states)
            lines.append(f"    operator state ({modes}), entries per new subtask:")
            lines += _table(["new", "gets"], rows, indent="    ")

    lines.append("")
    if problems:
        lines.append("Restore would FAIL: " + "; ".join(problems))
    else:
        lines.append("Restore would succeed.")
    return "\n".join(lines), not problems
