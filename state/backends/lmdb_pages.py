"""Bulk loading an LMDB environment: write its B+tree pages directly from sorted Arrow columns.

Restoring keyed state into the LMDB backend means inserting every row. Through py-lmdb that
is a Python ``(key, value)`` tuple and a ``putmulti`` step per row, ~0.25 us a row even when
LMDB appends. When the environment is empty and the rows are sorted (a snapshot stream holds
one state's rows in storage-key order), the finished B+tree is fully determined by the rows,
so this module writes the file LMDB itself would hold -- leaf pages packed with the nodes,
branch levels above them, the main database's records of the named databases, and the two
meta pages -- with Arrow and numpy, no Python object per row. RocksDB's SST ingestion is the
same idea. LMDB then opens the file as its own: later writes, page splits and frees work as
on any environment.

The on-disk format is LMDB 0.9's (``MDB_DATA_VERSION`` 1, 4 KiB pages), little-endian:

* page header (16 bytes): page number (u64), pad (u16), flags (u16), ``lower`` (u16, end of
  the node pointer array) and ``upper`` (u16, start of the node area); then one u16 pointer
  per node, in key order; nodes sit at the end of the page, each at an even offset;
* leaf node: data size (u16 low, u16 high), flags (u16), key size (u16), key, data;
* branch node: child page number (48 bits in the first three u16), key size, key; the key of
  a branch page's first node is empty (LMDB never compares it), and a branch page holds
  two nodes or more (LMDB asserts it when it descends);
* meta page (pages 0 and 1): magic, version, address, map size, the free-list and main
  database records (``MDB_db``: pad -- the page size for the free list --, flags, depth,
  branch / leaf / overflow page counts, entries, root), last page number, transaction id;
* named databases are records of the main database (node flag ``F_SUBDATA``) whose data is
  their ``MDB_db``.

Rows come in *blocks* (:class:`FixedRows`, :class:`BinaryRows`), each strictly ascending and
each after the one before. A restore hands over one block per record batch of a snapshot
stream: a :class:`FixedRows` block composes its storage keys from fixed-width parts (key
group, state id, key length, key bytes, suffix), viewed straight in the Arrow buffers, so the
nodes are written into the pages from the snapshot columns with no storage key built and no
batch concatenated first. Every block starts a new leaf page (its last page may be partly
filled; LMDB does not require full pages).

Rows that are not strictly ascending, and rows whose node would not fit LMDB's per-node limit
(values that need overflow pages), are not handled here: :func:`write_environment` raises
:class:`Unfit` and the caller inserts normally.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from typing import Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "PAGE_SIZE",
    "BinaryRows",
    "FixedRows",
    "Rows",
    "Unfit",
    "binary_data",
    "uniform_width",
    "write_environment",
]

PAGE_SIZE = 4096
_HEADER = 16  # PAGEHDRSZ
_NODE = 8  # NODESIZE
_ROOM = PAGE_SIZE - _HEADER  # bytes for pointers and nodes on one page
_NODE_MAX = ((_ROOM // 2) & ~1) - 2  # me_nodemax: larger leaf nodes go to overflow pages
_P_BRANCH, _P_LEAF, _P_META = 0x01, 0x02, 0x08
_F_SUBDATA = 0x02
_MDB_INTEGERKEY = 0x08  # the free list's key flag
_MAGIC = 0xBEEFC0DE
_VERSION = 1
_INVALID = (1 << 64) - 1  # P_INVALID: the root of an empty database
_DB = struct.Struct("<IHHQQQQQ")  # MDB_db
_PAGE_HEAD = struct.Struct("<QHHHH")
_CHUNK_PAGES = 2048  # pages assembled per write


class Unfit(ValueError):
    """The rows cannot be bulk loaded (a node needs overflow pages); insert them instead."""


class _Db:
    """An ``MDB_db`` record."""

    def __init__(self) -> None:
        self.depth = 0
        self.branch_pages = 0
        self.leaf_pages = 0
        self.entries = 0
        self.root = _INVALID

    def pack(self, pad: int = 0, flags: int = 0) -> bytes:
        return _DB.pack(
            pad,
            flags,
            self.depth,
            self.branch_pages,
            self.leaf_pages,
            0,
            self.entries,
            self.root,
        )


class _PageFile:
    """Pages appended to a file in page-number order (pages 0 and 1 are the meta pages)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.next_pgno = 2
        os.pwrite(fd, bytes(2 * PAGE_SIZE), 0)

    def append(self, pages: np.ndarray) -> None:
        os.pwrite(self.fd, memoryview(pages).cast("B"), self.next_pgno * PAGE_SIZE)
        self.next_pgno += len(pages)


def _offsets(array: pa.Array) -> np.ndarray:
    """int64 offsets of a binary or large binary array (no nulls)."""
    width = np.int64 if array.type == pa.large_binary() else np.int32
    raw = np.frombuffer(array.buffers()[1], dtype=width)
    return raw[array.offset : array.offset + len(array) + 1].astype(np.int64)


def _lengths(array: pa.Array) -> np.ndarray:
    return np.diff(_offsets(array))


def uniform_width(array: pa.Array) -> int | None:
    """The size of every value of a binary array when they all have one, else None."""
    width = np.int64 if array.type == pa.large_binary() else np.int32
    raw = np.frombuffer(array.buffers()[1], dtype=width)[
        array.offset : array.offset + len(array) + 1
    ]
    sizes = np.diff(raw)
    return int(sizes[0]) if (sizes == sizes[0]).all() else None


def binary_data(array: pa.Array) -> np.ndarray:
    """The bytes of all values of a binary array, back to back."""
    width = np.int64 if array.type == pa.large_binary() else np.int32
    raw = np.frombuffer(array.buffers()[1], dtype=width)
    first, last = int(raw[array.offset]), int(raw[array.offset + len(array)])
    buffer = array.buffers()[2]
    if buffer is None:
        return np.zeros(0, dtype=np.uint8)
    return np.frombuffer(buffer, dtype=np.uint8)[first:last]


def _u16_columns(*columns: np.ndarray) -> pa.Array:
    """Fixed 2*len(columns)-byte little-endian binary values, one per row."""
    packed = np.empty((len(columns[0]), len(columns)), dtype="<u2")
    for i, column in enumerate(columns):
        packed[:, i] = column
    width = 2 * len(columns)
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(packed), [None, pa.py_buffer(packed)]
    )
    return fixed.cast(pa.large_binary())


def _zeros(lengths: np.ndarray) -> pa.Array:
    """A binary array of ``lengths[i]`` zero bytes each (the nodes' even-offset padding)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = pa.py_buffer(bytes(int(offsets[-1])))
    return pa.Array.from_buffers(
        pa.large_binary(), len(lengths), [None, pa.py_buffer(offsets), data]
    )


def _page_starts(space: np.ndarray) -> np.ndarray:
    """First node of every page: a node goes to the page of the window of ``room`` bytes its
    start offset falls in, with ``room`` chosen so that no page overflows (vectorised; pages
    are at least half full, and ~99% for small nodes)."""
    room = _ROOM - int(space.max())
    ends = np.cumsum(space)
    page = (ends - space) // room
    return np.concatenate(([0], np.flatnonzero(np.diff(page)) + 1)).astype(np.int64)


def _node_space(keys: pa.Array, data: pa.Array | None) -> tuple[np.ndarray, np.ndarray]:
    """(padding, bytes on the page incl. the pointer) of every node."""
    sizes = _NODE + _lengths(keys) + (_lengths(data) if data is not None else 0)
    pads = sizes & 1
    return pads, sizes + pads + 2


def _build_pages(
    headers: pa.Array,
    keys: pa.Array,
    data: pa.Array | None,
    flags: int,
    out: _PageFile,
    starts: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Pack nodes (header + key [+ data]) into the pages of one tree level, appended to
    ``out``; ``starts`` (first node of every page) is computed unless given.

    Returns (first node of every page, number of the first page).
    """
    pads, space = _node_space(keys, data)
    if starts is None:
        starts = _page_starts(space)
    parts = [headers, keys.cast(pa.large_binary())]
    if data is not None:
        parts.append(data.cast(pa.large_binary()))
    parts += [_zeros(pads), pa.scalar(b"", pa.large_binary())]
    nodes = pc.binary_join_element_wise(*parts)
    node_bytes = np.frombuffer(nodes.buffers()[2], dtype=np.uint8)
    offsets = np.frombuffer(nodes.buffers()[1], dtype=np.int64)[: len(nodes) + 1]
    n = len(nodes)
    ends = np.append(starts[1:], n)
    counts = ends - starts
    run = offsets[ends] - offsets[starts]  # bytes of each page's nodes
    upper = PAGE_SIZE - run
    page_of = np.repeat(np.arange(len(starts)), counts)
    index_in_page = np.arange(n) - np.repeat(starts, counts)
    pointers = (np.repeat(upper - offsets[starts], counts) + offsets[:-1]).astype("<u2")
    first_pgno = out.next_pgno
    upper_l, first_l, last_l = upper.tolist(), offsets[starts].tolist(), offsets[ends].tolist()
    for lo in range(0, len(starts), _CHUNK_PAGES):
        hi = min(len(starts), lo + _CHUNK_PAGES)
        pages = np.zeros((hi - lo, PAGE_SIZE), dtype=np.uint8)
        head = pages[:, :_HEADER].view(np.uint16)  # (pgno u64 = 4 x u16), pad, flags, lower, upper
        pgnos = np.arange(first_pgno + lo, first_pgno + hi, dtype="<u8")
        pages[:, :8] = pgnos.view(np.uint8).reshape(-1, 8)
        head[:, 5] = flags
        head[:, 6] = _HEADER + 2 * counts[lo:hi]
        head[:, 7] = upper[lo:hi]
        a, b = starts[lo], ends[hi - 1]
        words = pages.view("<u2")
        words[page_of[a:b] - lo, _HEADER // 2 + index_in_page[a:b]] = pointers[a:b]
        flat = pages.reshape(-1)
        for i in range(lo, hi):
            base = (i - lo) * PAGE_SIZE
            flat[base + upper_l[i] : base + PAGE_SIZE] = node_bytes[first_l[i] : last_l[i]]
        out.append(pages)
    return starts, first_pgno


class FixedRows:
    """A block of rows whose storage keys are fixed-width parts side by side and whose values
    all have one width: numeric keys and values, the common case.

    ``key_parts`` are uint8 matrices, ``(n, w)`` (one row per row) or ``(1, w)`` (a part every
    row shares: the state id, the key length); ``values`` is ``(n, v)``. They may be views
    into Arrow buffers: nothing is copied until the nodes are written into the pages.
    """

    def __init__(self, key_parts: Sequence[np.ndarray], values: np.ndarray) -> None:
        self.key_parts = list(key_parts)
        self.values = values
        self.key_width = sum(part.shape[1] for part in self.key_parts)

    def __len__(self) -> int:
        return len(self.values)

    def key_matrix(self, rows: np.ndarray) -> np.ndarray:
        """The storage keys of ``rows`` (indices), one per matrix row."""
        out = np.empty((len(rows), self.key_width), dtype=np.uint8)
        at = 0
        for part in self.key_parts:
            width = part.shape[1]
            out[:, at : at + width] = part if len(part) == 1 else part[rows]
            at += width
        return out

    def keys_at(self, rows: np.ndarray) -> pa.Array:
        matrix = self.key_matrix(rows)
        fixed = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(self.key_width), len(rows), [None, pa.py_buffer(matrix)]
        )
        return fixed.cast(pa.binary())

    def key_at(self, row: int) -> bytes:
        return self.key_matrix(np.array([row])).tobytes()

    def ascending(self) -> bool:
        """Strictly increasing storage keys: compared part by part, 8 bytes at a time, as
        big-endian integers (parts every row shares cannot decide anything)."""
        n = len(self)
        if n < 2:
            return True
        smaller = np.zeros(n - 1, dtype=bool)  # row i < row i + 1 decided
        tied = np.ones(n - 1, dtype=bool)  # equal so far
        for part in self.key_parts:
            if len(part) == 1:
                continue
            for word in _words(part):
                before, after = word[:-1], word[1:]
                smaller |= tied & (after > before)
                tied &= after == before
        return bool(smaller.all())

    def binary(self) -> BinaryRows:
        """The same rows as binary arrays (for inserting them one by one)."""
        n = len(self)
        width = self.values.shape[1]
        values = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width), n, [None, pa.py_buffer(np.ascontiguousarray(self.values))]
        )
        return BinaryRows(self.keys_at(np.arange(n)), values.cast(pa.binary()))


class BinaryRows:
    """A block of rows as binary Arrow arrays of whole storage keys and values (any widths)."""

    def __init__(self, keys: pa.Array, values: pa.Array) -> None:
        self.keys = keys
        self.values = values

    def __len__(self) -> int:
        return len(self.keys)

    def keys_at(self, rows: np.ndarray) -> pa.Array:
        return self.keys.take(pa.array(rows)).cast(pa.binary())

    def key_at(self, row: int) -> bytes:
        return self.keys[row].as_py()

    def ascending(self) -> bool:
        n = len(self.keys)
        if n < 2:
            return True
        return bool(pc.all(pc.less(self.keys.slice(0, n - 1), self.keys.slice(1))).as_py())

    def binary(self) -> BinaryRows:
        return self

    def fixed(self) -> FixedRows | None:
        """These rows as :class:`FixedRows` when all keys have one size and all values one."""
        key_size, value_size = uniform_width(self.keys), uniform_width(self.values)
        if key_size is None or value_size is None:
            return None
        n = len(self.keys)
        return FixedRows(
            [binary_data(self.keys).reshape(n, key_size)],
            binary_data(self.values).reshape(n, value_size),
        )


Rows = Union[FixedRows, BinaryRows]


def _words(part: np.ndarray) -> list[np.ndarray]:
    """The columns of a C-contiguous ``(n, w)`` uint8 matrix as big-endian unsigned integers
    of up to 8 bytes each, in order (full words are strided views, no copy)."""
    n, width = part.shape
    part = np.ascontiguousarray(part)
    words = [
        np.ndarray((n,), dtype=">u8", buffer=part, offset=at, strides=(width,))
        for at in range(0, width - 7, 8)
    ]
    tail = width % 8
    if tail:
        at = width - tail
        word = part[:, at].astype(np.uint64)
        for i in range(at + 1, width):
            word = (word << np.uint64(8)) | part[:, i]
        words.append(word)
    return words


def _fixed_leaf_pages(rows: FixedRows, flags: int, out: _PageFile) -> tuple[np.ndarray, int]:
    """Leaf pages of rows whose keys and values all have one size each: every page is the
    same array of nodes, filled by reshaping the key parts and value bytes straight into the
    pages."""
    n = len(rows)
    key_size, value_size = rows.key_width, rows.values.shape[1]
    if _NODE + key_size + value_size > _NODE_MAX:
        raise Unfit("a row is too large for one LMDB node (it needs overflow pages)")
    size = _NODE + key_size + value_size
    size += size & 1
    per_page = _ROOM // (size + 2)
    starts = np.arange(0, n, per_page, dtype=np.int64)
    header = np.array([value_size & 0xFFFF, value_size >> 16, flags, key_size], dtype="<u2").view(
        np.uint8
    )
    first_pgno = out.next_pgno
    full = n // per_page  # pages with per_page rows; the last one may hold fewer
    groups = [(lo, min(full, lo + _CHUNK_PAGES), per_page) for lo in range(0, full, _CHUNK_PAGES)]
    if n % per_page:
        groups.append((full, full + 1, n % per_page))
    for lo, hi, count in groups:
        pages = np.zeros((hi - lo, PAGE_SIZE), dtype=np.uint8)
        upper = PAGE_SIZE - count * size
        pgnos = np.arange(first_pgno + lo, first_pgno + hi, dtype="<u8")
        pages[:, :8] = pgnos.view(np.uint8).reshape(-1, 8)
        head = pages[:, :_HEADER].view(np.uint16)
        head[:, 5] = _P_LEAF
        head[:, 6] = _HEADER + 2 * count
        head[:, 7] = upper
        pointers = (upper + size * np.arange(count)).astype("<u2")
        pages[:, _HEADER : _HEADER + 2 * count] = pointers.view(np.uint8)
        nodes = pages[:, upper:].reshape(hi - lo, count, size)
        first = lo * per_page
        last = first + (hi - lo) * count
        nodes[:, :, :_NODE] = header
        at = _NODE
        for part in [*rows.key_parts, rows.values]:
            width = part.shape[1]
            if len(part) == 1:
                nodes[:, :, at : at + width] = part
            else:
                nodes[:, :, at : at + width] = part[first:last].reshape(hi - lo, count, width)
            at += width
        out.append(pages)
    return starts, first_pgno


def _binary_leaf_pages(rows: BinaryRows, flags: int, out: _PageFile) -> tuple[np.ndarray, int]:
    """Leaf pages of rows of any sizes, packed page by page."""
    fixed = rows.fixed()
    if fixed is not None:
        return _fixed_leaf_pages(fixed, flags, out)
    keys, values = rows.keys, rows.values
    key_sizes = _lengths(keys)
    value_sizes = _lengths(values)
    if int((_NODE + key_sizes + value_sizes).max()) > _NODE_MAX:
        raise Unfit("a row is too large for one LMDB node (it needs overflow pages)")
    headers = _u16_columns(
        value_sizes & 0xFFFF, value_sizes >> 16, np.full(len(keys), flags), key_sizes
    )
    return _build_pages(headers, keys, values, _P_LEAF, out)


def _check_order(blocks: Sequence[Rows]) -> None:
    """Raise :class:`Unfit` unless the rows of ``blocks``, in order, strictly ascend."""
    last: bytes | None = None
    for block in blocks:
        if not len(block):
            continue
        if last is not None and not last < block.key_at(0):
            raise Unfit("the rows are not in strictly ascending key order")
        if not block.ascending():
            raise Unfit("the rows are not in strictly ascending key order")
        last = block.key_at(len(block) - 1)


def _write_tree(blocks: Sequence[Rows], out: _PageFile, node_flags: int = 0) -> _Db:
    """One database's B+tree from its blocks of sorted rows; returns its ``MDB_db`` record.

    Every block starts a new leaf page; the leaf pages of all blocks are consecutive."""
    db = _Db()
    lowest_parts = []  # the smallest key under each leaf page
    pgno = -1
    for block in blocks:
        if not len(block):
            continue
        if isinstance(block, FixedRows):
            starts, first = _fixed_leaf_pages(block, node_flags, out)
        else:
            starts, first = _binary_leaf_pages(block, node_flags, out)
        pgno = first if pgno < 0 else pgno
        lowest_parts.append(block.keys_at(starts))
        db.leaf_pages += len(starts)
        db.entries += len(block)
    if not db.entries:
        return db
    db.depth = 1
    lowest = pa.concat_arrays(lowest_parts)
    pages = db.leaf_pages
    while pages > 1:
        # One node per child page, keyed by the smallest key under it; the first node of
        # every branch page has an empty key, so pages are packed with the keys (an upper
        # bound), then those keys are dropped.
        children = np.arange(pgno, pgno + pages, dtype=np.int64)
        _, space = _node_space(lowest, None)
        starts = _page_starts(space)
        if len(starts) > 1 and len(children) - starts[-1] == 1:
            # LMDB requires two nodes or more on a branch page; the one before has at least
            # six (branch nodes are at most 519 bytes), so it can give one up
            starts[-1] -= 1
        first = np.zeros(len(children), dtype=bool)
        first[starts] = True
        level_keys = pc.if_else(pa.array(first), pa.scalar(b"", lowest.type), lowest)
        headers = _u16_columns(
            children & 0xFFFF, (children >> 16) & 0xFFFF, children >> 32, _lengths(level_keys)
        )
        lowest = lowest.take(pa.array(starts))
        starts, pgno = _build_pages(headers, level_keys, None, _P_BRANCH, out, starts)
        pages = len(starts)
        db.branch_pages += pages
        db.depth += 1
    db.root = pgno
    return db


def write_environment(
    path: str,
    databases: dict[bytes, Sequence[Rows] | tuple[pa.Array, pa.Array]],
    map_size: Callable[[int], int],
) -> int:
    """Write a new LMDB data file at ``path`` holding ``databases``: ``{name: blocks}`` (or
    ``{name: (keys, values)}``, binary Arrow arrays), rows strictly ascending (bytewise) within
    and across the blocks. The map size recorded is ``map_size(pages written)``, which is
    returned. Raises :class:`Unfit` when the rows are not strictly ascending or a row needs
    overflow pages (nothing usable is left at ``path`` then).
    """
    names = sorted(databases)
    trees: list[list[Rows]] = []
    for name in names:
        rows = databases[name]
        blocks: list[Rows] = [BinaryRows(*rows)] if isinstance(rows, tuple) else list(rows)
        _check_order(blocks)
        trees.append(blocks)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        out = _PageFile(fd)
        records = [_write_tree(blocks, out).pack() for blocks in trees]
        main = _write_tree(
            [BinaryRows(pa.array(names, pa.binary()), pa.array(records, pa.binary()))],
            out,
            _F_SUBDATA,
        )
        free = _Db()
        last = out.next_pgno - 1
        size = map_size(last + 1)
        for pgno, txnid in ((0, 0), (1, 1)):  # LMDB keeps transaction t on page t & 1
            page = bytearray(PAGE_SIZE)
            _PAGE_HEAD.pack_into(page, 0, pgno, 0, _P_META, 0, 0)
            meta = struct.pack("<IIQQ", _MAGIC, _VERSION, 0, size)
            meta += free.pack(PAGE_SIZE, _MDB_INTEGERKEY) + main.pack()
            meta += struct.pack("<QQ", last, txnid)
            page[_HEADER : _HEADER + len(meta)] = meta
            os.pwrite(fd, page, pgno * PAGE_SIZE)
        return size
    finally:
        os.close(fd)
