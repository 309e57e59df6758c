"""Checkpoint and savepoint storage: layout, integrity, atomicity, discovery, retention, disposal.

The engine hands this module bytes (Arrow IPC state streams from :mod:`flowrun.state.snapshot`)
and a JSON-able metadata dict; it does not look inside either. What it adds is what makes a
directory of files a *checkpoint* one can trust after a crash:

* **Layout** (Flink's): checkpoints live under ``<base>/<job_id>/chk-<n>/``, savepoints under
  ``<target>/savepoint-<job_id[:6]>-<random12>/``. Every state file of a checkpoint sits inside
  its directory and is named relative to it, so a savepoint is self-contained: move it, or copy
  it to S3 and back, and it still restores.
* **Integrity**: every state file is recorded with its size and a CRC-32 checksum
  (:class:`StateHandle`); the ``_metadata`` document carries a checksum of itself.
  :func:`read_state_file` refuses bytes that do not match.
* **Atomicity**: ``_metadata`` is written last, and atomically (a local temp file, fsync,
  rename, fsync of the directory; on S3 a single PUT). A directory without ``_metadata`` is an
  incomplete checkpoint: its writer failed or is still running, and nobody restores from it.
* **Discovery**: :func:`find_latest_checkpoint` takes the newest ``chk-<n>`` that validates and
  skips (with a warning on stderr) the ones that do not; :func:`resolve_restore_path` turns
  whatever a user passes to ``flowrun run -s`` into one restorable directory.
* **Retention and disposal**: :func:`retain_checkpoints` (``state.checkpoints.num-retained``),
  :func:`discard_location`, :func:`dispose_savepoint` (``flowrun savepoint --dispose``).

Locations are plain strings, a local path or a URI (``file://``, ``s3://``), so a subtask process
can write its files knowing nothing but the location string it was sent. S3 is reached through
``pyarrow.fs`` and configured from the usual environment variables (:func:`resolve_filesystem`).

Example::

    >>> import tempfile
    >>> base = tempfile.mkdtemp()
    >>> storage = CheckpointStorage(base, "a1b2c3d4")
    >>> loc = storage.checkpoint_location(1)
    >>> handle = write_state_file(loc, "op-1-0-counts.arrow", b"arrow bytes")
    >>> write_metadata(loc, {"checkpoint_id": 1}, [handle])
    >>> find_latest_checkpoint(base, "a1b2c3d4") == loc
    True
    >>> meta, handles = read_metadata(loc)
    >>> meta, handles[0].name, read_state_file(loc, handles[0]).to_pybytes()
    ({'checkpoint_id': 1}, 'op-1-0-counts.arrow', b'arrow bytes')
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import secrets
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = [
    "CHECKPOINT_DIR_PREFIX",
    "METADATA_FILE_NAME",
    "METADATA_FORMAT",
    "METADATA_FORMAT_VERSION",
    "SAVEPOINT_DIR_PREFIX",
    "CheckpointStorage",
    "CheckpointStorageError",
    "CorruptCheckpointError",
    "StateHandle",
    "compute_checksum",
    "discard_location",
    "dispose_savepoint",
    "find_latest_checkpoint",
    "list_checkpoints",
    "read_metadata",
    "read_state_file",
    "read_state_files",
    "resolve_filesystem",
    "resolve_restore_path",
    "retain_checkpoints",
    "write_metadata",
    "write_state_file",
    "write_state_file_from",
]

METADATA_FILE_NAME = "_metadata"
"""Flink's name for the file that makes a checkpoint directory complete."""

METADATA_FORMAT = "flowrun-checkpoint-metadata"
"""Marker in every ``_metadata`` document: tells ours apart from any other JSON file."""

METADATA_FORMAT_VERSION = 1
"""Bumped on any incompatible change of the ``_metadata`` document."""

CHECKPOINT_DIR_PREFIX = "chk-"
SAVEPOINT_DIR_PREFIX = "savepoint-"

_CHK_DIR = re.compile(r"^chk-(\d+)$")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TEMP_MARK = ".inprogress-"
_CHECKSUM_ALGORITHMS = ("crc32", "sha256")
_DEFAULT_CHECKSUM = "crc32"


class CheckpointStorageError(RuntimeError):
    """A checkpoint or savepoint location cannot be used (bad URI, missing, I/O failure)."""


class CorruptCheckpointError(CheckpointStorageError):
    """A checkpoint or savepoint exists but cannot be trusted; the message names the directory
    and the file or field that failed (incomplete, truncated, garbled, wrong size or checksum)."""


# --------------------------------------------------------------------------------------------
# checksums and handles


def compute_checksum(
    data: pa.Buffer | bytes | bytearray | memoryview, algorithm: str = "crc32"
) -> str:
    """``"<algorithm>:<hex>"`` of ``data``: CRC-32 by default (zlib, ~3 GB/s, no copy).

    CRC-32 is there to catch torn writes, truncation and bit rot, not tampering; ``sha256`` is
    accepted too, for handles that want it.

    >>> compute_checksum(b"hello")
    'crc32:3610a686'
    """
    view = memoryview(data)
    if algorithm == "crc32":
        return f"crc32:{zlib.crc32(view) & 0xFFFFFFFF:08x}"
    if algorithm == "sha256":
        return "sha256:" + hashlib.sha256(view).hexdigest()
    raise ValueError(
        f"unknown checksum algorithm {algorithm!r}: expected one of {list(_CHECKSUM_ALGORITHMS)}"
    )


def _check_relative_name(name: Any) -> None:
    """A state file name must stay inside its checkpoint directory (what makes it relocatable)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"state file name must be a non-empty str, got {name!r}")
    if name.startswith("/") or "\\" in name or _SCHEME.match(name):
        raise ValueError(
            f"state file name {name!r} must be relative to the checkpoint directory "
            "('/'-separated, no leading '/', no URI, no backslash)"
        )
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"state file name {name!r} has an empty, '.' or '..' component")
    if parts[0] == METADATA_FILE_NAME:
        raise ValueError(f"state file name {name!r} is reserved for the checkpoint's metadata")
    if any(_TEMP_MARK in p for p in parts):
        raise ValueError(f"state file name {name!r} contains {_TEMP_MARK!r}, used for temp files")


@dataclass(frozen=True)
class StateHandle:
    """One file of a checkpoint: its name relative to the checkpoint directory, size, checksum.

    Relative names are what make a savepoint relocatable: nothing in ``_metadata`` says where the
    directory was when it was written.

    >>> h = StateHandle("op-1-0-counts.arrow", 11, "crc32:0a1b2c3d")
    >>> StateHandle.from_json(h.to_json()) == h
    True
    """

    name: str
    size: int
    checksum: str

    def __post_init__(self) -> None:
        _check_relative_name(self.name)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(
                f"state file {self.name!r}: size must be an int >= 0, got {self.size!r}"
            )
        if not isinstance(self.checksum, str) or ":" not in self.checksum:
            raise ValueError(
                f"state file {self.name!r}: checksum must be '<algorithm>:<hex>', "
                f"got {self.checksum!r}"
            )
        algorithm = self.checksum.split(":", 1)[0]
        if algorithm not in _CHECKSUM_ALGORITHMS:
            raise ValueError(
                f"state file {self.name!r}: unknown checksum algorithm {algorithm!r} "
                f"(expected one of {list(_CHECKSUM_ALGORITHMS)})"
            )

    def to_json(self) -> dict:
        return {"name": self.name, "size": self.size, "checksum": self.checksum}

    @classmethod
    def from_json(cls, d: dict) -> StateHandle:
        """Inverse of :meth:`to_json`; a missing or mistyped field is a ``ValueError`` naming it."""
        if not isinstance(d, dict):
            raise ValueError(f"a state handle must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("name", "size", "checksum") if k not in d]
        if missing:
            raise ValueError(f"state handle {d!r} lacks field(s) {missing}")
        return cls(name=d["name"], size=d["size"], checksum=d["checksum"])


# --------------------------------------------------------------------------------------------
# file systems


_fs_cache: dict[tuple, pafs.FileSystem] = {}
_fs_lock = threading.Lock()


def _s3_filesystem() -> pafs.FileSystem:
    """An S3FileSystem from the environment, one per process and option set.

    ``allow_delayed_open`` makes pyarrow send an object below its part size as a single PUT
    instead of a multipart upload (what keeps ``_metadata`` one atomic request).
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    scheme = None
    if endpoint is not None:
        parsed = urlsplit(endpoint)
        if parsed.scheme in ("http", "https"):
            scheme, endpoint = parsed.scheme, parsed.netloc
            if not endpoint:
                raise CheckpointStorageError(
                    f"AWS_ENDPOINT_URL={os.environ['AWS_ENDPOINT_URL']!r} has no host"
                )
        elif parsed.scheme:
            raise CheckpointStorageError(
                f"AWS_ENDPOINT_URL={endpoint!r}: scheme must be http or https"
            )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    if region is None and endpoint is not None:
        region = "us-east-1"  # an S3-compatible server; stops the SDK from probing for a region
    options = {
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID") or None,
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        "session_token": os.environ.get("AWS_SESSION_TOKEN") or None,
        "region": region,
        "endpoint_override": endpoint,
        "scheme": scheme,
    }
    if (options["access_key"] is None) != (options["secret_key"] is None):
        raise CheckpointStorageError(
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together (one of them is empty)"
        )
    key = (os.getpid(), *sorted((k, v) for k, v in options.items()))
    with _fs_lock:
        fs = _fs_cache.get(key)
        if fs is None:
            fs = pafs.S3FileSystem(
                **{k: v for k, v in options.items() if v is not None},
                allow_delayed_open=True,
                allow_bucket_creation=False,
                allow_bucket_deletion=False,
            )
            _fs_cache[key] = fs
    return fs


def resolve_filesystem(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it for a local path, ``file://`` or ``s3://``.

    S3 is configured from ``AWS_ENDPOINT_URL`` (e.g. ``http://127.0.0.1:9000`` for an
    S3-compatible server), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN`` and ``AWS_REGION`` (else ``AWS_DEFAULT_REGION``); buckets are never
    created or deleted, so a mistyped bucket fails instead of appearing. Any other scheme
    (``hdfs://``, ``gs://`` ...) is a :class:`CheckpointStorageError`.

    >>> fs, path = resolve_filesystem("file:///tmp/checkpoints")
    >>> type(fs).__name__, path
    ('LocalFileSystem', '/tmp/checkpoints')
    >>> resolve_filesystem("hdfs://nn/flink")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    flowrun.core.runtime.checkpoint_storage.CheckpointStorageError: unsupported ... 'hdfs' ...
    """
    if not isinstance(uri_or_path, str) or not uri_or_path:
        raise CheckpointStorageError(
            f"a checkpoint location must be a non-empty str (path or URI), got {uri_or_path!r}"
        )
    match = _SCHEME.match(uri_or_path)
    if match is None:
        return pafs.LocalFileSystem(), os.path.abspath(uri_or_path)
    scheme = match.group(1).lower()
    parsed = urlsplit(uri_or_path)
    if parsed.query or parsed.fragment:
        raise CheckpointStorageError(
            f"{uri_or_path!r}: query strings and fragments are not supported in checkpoint URIs "
            "(configure S3 with the AWS_* environment variables)"
        )
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise CheckpointStorageError(
                f"{uri_or_path!r}: file:// URIs must name a local path (file:///abs/path), "
                f"not host {parsed.netloc!r}"
            )
        path = unquote(parsed.path)
        if not path.startswith("/"):
            raise CheckpointStorageError(f"{uri_or_path!r}: file:// URIs need an absolute path")
        return pafs.LocalFileSystem(), posixpath.normpath(path)
    if scheme in ("s3", "s3a"):
        bucket = parsed.netloc
        if not bucket:
            raise CheckpointStorageError(f"{uri_or_path!r}: an s3:// URI must name a bucket")
        key = parsed.path.strip("/")
        return _s3_filesystem(), f"{bucket}/{key}" if key else bucket
    raise CheckpointStorageError(
        f"unsupported file system scheme {scheme!r} in {uri_or_path!r}: "
        "checkpoint storage takes a local path, file:// or s3://"
    )


def _is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def _join(location: str, name: str) -> str:
    """``location/name`` in the location's own form (local path or URI)."""
    return location.rstrip("/") + "/" + name if location.rstrip("/") else "/" + name


def _normalize_location(location: str) -> str:
    """Local paths made absolute (a subtask may run elsewhere); URIs kept, without trailing '/'."""
    if _SCHEME.match(location) is None:
        return os.path.abspath(location)
    scheme_end = location.index("://") + 3
    rest = location[scheme_end:].rstrip("/")
    return location[:scheme_end] + rest if rest else location


def _split_metadata_path(path: str) -> tuple[str, bool]:
    """``(directory, True)`` if ``path`` names a ``_metadata`` file, else ``(path, False)``."""
    stripped = path.rstrip("/")
    if stripped.endswith("/" + METADATA_FILE_NAME) or stripped == METADATA_FILE_NAME:
        parent = stripped[: -len(METADATA_FILE_NAME)].rstrip("/")
        if _SCHEME.match(path) is None:
            return os.path.dirname(os.path.abspath(stripped)), True
        return parent, True
    return path, False


def _info(fs: pafs.FileSystem, path: str, location: str) -> pafs.FileInfo:
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise CheckpointStorageError(f"cannot stat {location}: {exc}") from exc


def _list(fs: pafs.FileSystem, path: str, location: str, recursive: bool) -> list[pafs.FileInfo]:
    """Entries under ``path`` (empty if it does not exist)."""
    try:
        return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
    except OSError as exc:
        raise CheckpointStorageError(f"cannot list {location}: {exc}") from exc


def _relative(base: str, path: str) -> str:
    return path[len(base.rstrip("/")) + 1 :]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _local_write(path: str, fill: Callable[[BinaryIO], None], exclusive: bool) -> None:
    """Temp file, ``fill`` it, fsync, rename: a reader never sees half a file under the final
    name. ``fill`` gets the temp file open for reading and writing."""
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".{base}{_TEMP_MARK}{secrets.token_hex(6)}")
    try:
        with open(tmp, "w+b") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            # link() fails if the target exists: a completed checkpoint is never overwritten
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: check, then rename
                if os.path.lexists(path):
                    raise FileExistsError(path) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def _remote_write(fs: pafs.FileSystem, path: str, data: memoryview) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


# --------------------------------------------------------------------------------------------
# state files


def _as_view(data: pa.Buffer | bytes | bytearray | memoryview) -> memoryview:
    if isinstance(data, (pa.Buffer, bytes, bytearray, memoryview)):
        view = memoryview(data)
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    raise TypeError(
        f"state file data must be pyarrow.Buffer, bytes, bytearray or memoryview, "
        f"got {type(data).__name__}"
    )


def write_state_file(
    location: str, name: str, data: pa.Buffer | bytes | bytearray | memoryview
) -> StateHandle:
    """Write one state file into a checkpoint directory and return its handle.

    Works in any process from the location string alone. Local files are fsynced and renamed
    into place; S3 objects appear whole or not at all. The returned handle (size and checksum
    of ``data``) goes to the coordinator, which lists it in ``_metadata``.

    >>> import tempfile
    >>> write_state_file(tempfile.mkdtemp(), "op-0-x.arrow", b"abc")
    StateHandle(name='op-0-x.arrow', size=3, checksum='crc32:352441c2')
    """
    _check_relative_name(name)
    view = _as_view(data)
    handle = StateHandle(name=name, size=view.nbytes, checksum=compute_checksum(view))
    fs, path, target = _state_file_path(location, name)
    try:
        if _is_local(fs):
            _local_write(path, lambda out: out.write(view), exclusive=False)
        else:
            _remote_write(fs, path, view)
    except OSError as exc:
        raise CheckpointStorageError(f"cannot write {target}: {exc}") from exc
    return handle


def write_state_file_from(location: str, name: str, produce: Callable[[int], None]) -> StateHandle:
    """Like :func:`write_state_file`, for content that ``produce(fd)`` writes into a file
    descriptor (LMDB's ``mdb_env_copyfd``, say).

    Locally ``produce`` writes straight into the temp file that becomes the state file, so
    the bytes are written once, not into a scratch file first and then copied; size and
    checksum come from the written file. Elsewhere (S3) they go through a local temp file.
    Runs in any thread.

    >>> import tempfile
    >>> write_state_file_from(tempfile.mkdtemp(), "op-0-x.mdb", lambda fd: os.write(fd, b"abc"))
    StateHandle(name='op-0-x.mdb', size=3, checksum='crc32:352441c2')
    """
    _check_relative_name(name)
    fs, path, target = _state_file_path(location, name)
    measured: list[tuple[int, str]] = []

    def fill(out: BinaryIO) -> None:
        produce(out.fileno())
        measured.append(_file_checksum(out))

    try:
        if _is_local(fs):
            _local_write(path, fill, exclusive=False)
        else:
            with tempfile.TemporaryFile() as spool:
                fill(spool)
                spool.seek(0)
                _remote_write(fs, path, memoryview(spool.read()))
    except OSError as exc:
        raise CheckpointStorageError(f"cannot write {target}: {exc}") from exc
    size, checksum = measured[0]
    return StateHandle(name=name, size=size, checksum=checksum)


def _state_file_path(location: str, name: str) -> tuple[pafs.FileSystem, str, str]:
    """(file system, path, name for messages) of state file ``name``; locally the checkpoint
    directory must exist, and subdirectories of ``name`` are created."""
    fs, base = resolve_filesystem(location)
    path = base.rstrip("/") + "/" + name
    target = _join(location, name)
    if _is_local(fs):
        if not os.path.isdir(base):
            raise CheckpointStorageError(
                f"cannot write {target}: checkpoint directory {location} does not exist "
                "(never created, or already discarded)"
            )
        if "/" in name:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            except OSError as exc:
                raise CheckpointStorageError(f"cannot write {target}: {exc}") from exc
    return fs, path, target


_CHECKSUM_CHUNK = 1 << 20  #: bytes read per step when checksumming a written file


def _file_checksum(file: BinaryIO) -> tuple[int, str]:
    """(size, CRC-32) of an open file's content, read back in chunks from the page cache.

    Why not a memory map: the file was just written, so its pages are cached, and reading
    them into one reused 1 MiB buffer (which stays in the CPU cache for the CRC) costs less
    than mapping them: a 24 MB LMDB copy took ~15 ms of CPU with ``preadv`` against ~18.5 ms
    through ``mmap``, whose page faults cost more than the copy into the buffer.
    """
    fd = file.fileno()
    size = os.fstat(fd).st_size
    chunk = memoryview(bytearray(min(size, _CHECKSUM_CHUNK) or 1))
    crc = 0
    offset = 0
    while offset < size:
        n = os.preadv(fd, [chunk], offset)
        if n <= 0:
            raise OSError(f"file shrank while being checksummed: {offset} of {size} bytes read")
        crc = zlib.crc32(chunk[:n], crc)
        offset += n
    return size, f"crc32:{crc & 0xFFFFFFFF:08x}"


def _verify_checksum(location: str, handle: StateHandle, data: memoryview) -> None:
    algorithm = handle.checksum.split(":", 1)[0]
    actual = compute_checksum(data, algorithm)
    if actual != handle.checksum:
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: state file {handle.name!r} has checksum {actual}, "
            f"_metadata records {handle.checksum}"
        )


def read_state_file(location: str, handle: StateHandle) -> pa.Buffer:
    """The bytes of one state file, after checking its size and checksum against ``handle``.

    Local files are memory-mapped (no copy; the buffer keeps the mapping alive). A missing file,
    a wrong size or a wrong checksum is a :class:`CorruptCheckpointError` naming the directory
    and the file.

    >>> import tempfile
    >>> loc = tempfile.mkdtemp()
    >>> read_state_file(loc, write_state_file(loc, "s.arrow", b"abc")).to_pybytes()
    b'abc'
    """
    if not isinstance(handle, StateHandle):
        raise TypeError(f"handle must be a StateHandle, got {type(handle).__name__}")
    fs, base = resolve_filesystem(location)
    path = base.rstrip("/") + "/" + handle.name
    try:
        if _is_local(fs):
            if handle.size == 0:
                with open(path, "rb") as f:
                    buf = pa.py_buffer(f.read())
            else:
                with pa.memory_map(path, "r") as source:
                    buf = source.read_buffer()
        else:
            with fs.open_input_file(path) as source:
                size = source.size()
                if size != handle.size:
                    raise CorruptCheckpointError(
                        f"corrupt checkpoint {location}: state file {handle.name!r} has "
                        f"{size} bytes, _metadata records {handle.size}"
                    )
                buf = source.read_buffer(size)
    except FileNotFoundError as exc:
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: state file {handle.name!r} is missing"
        ) from exc
    except CorruptCheckpointError:
        raise
    except OSError as exc:
        raise CheckpointStorageError(f"cannot read {_join(location, handle.name)}: {exc}") from exc
    if buf.size != handle.size:
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: state file {handle.name!r} has {buf.size} bytes, "
            f"_metadata records {handle.size}"
        )
    _verify_checksum(location, handle, memoryview(buf))
    return buf


def read_state_files(location: str, handles: Sequence[StateHandle]) -> list[pa.Buffer]:
    """:func:`read_state_file` of each handle, in order, the files read and checked on threads.

    Why: checking the checksum of every byte is a good part of a restore (CRC-32 at ~1.5 GB/s)
    and zlib releases the GIL while it runs, so a subtask that restores several files (after
    rescaling, or several states) checks them on as many cores as there are files; remote
    files download concurrently too. Errors are those of :func:`read_state_file`, the first
    failing file's in ``handles`` order.
    """
    if len(handles) < 2:
        return [read_state_file(location, handle) for handle in handles]
    with ThreadPoolExecutor(max_workers=min(len(handles), os.cpu_count() or 1)) as pool:
        futures = [pool.submit(read_state_file, location, handle) for handle in handles]
        return [future.result() for future in futures]


# --------------------------------------------------------------------------------------------
# _metadata


def _canonical(body: dict) -> bytes:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _check_json_able(value: Any, where: str) -> None:
    """Reject what JSON would silently change (tuples, int keys) or cannot hold (NaN, objects),
    so what the coordinator wrote is exactly what a restore reads back."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"checkpoint metadata {where} is {value!r}, which JSON cannot hold")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_able(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise ValueError(
                    f"checkpoint metadata {where} has key {k!r} of type {type(k).__name__}; "
                    "JSON object keys must be str"
                )
            _check_json_able(item, f"{where}[{k!r}]")
        return
    raise ValueError(
        f"checkpoint metadata {where} is a {type(value).__name__} ({value!r:.80}); only dict "
        "(str keys), list, str, int, float, bool and None round-trip through JSON"
    )


def _check_files(location: str, fs: pafs.FileSystem, base: str, handles: list[StateHandle]) -> None:
    """One listing of the directory: every handle's file exists with the recorded size."""
    entries = _list(fs, base, location, recursive=True)
    sizes = {_relative(base, e.path): e.size for e in entries if e.type == pafs.FileType.File}
    for handle in handles:
        size = sizes.get(handle.name)
        if size is None:
            raise CorruptCheckpointError(
                f"corrupt checkpoint {location}: state file {handle.name!r} listed in _metadata "
                "is missing"
            )
        if size != handle.size:
            raise CorruptCheckpointError(
                f"corrupt checkpoint {location}: state file {handle.name!r} has {size} bytes, "
                f"_metadata records {handle.size}"
            )


def write_metadata(
    location: str, metadata: dict, handles: list[StateHandle], *, verify_files: bool = True
) -> None:
    """Complete a checkpoint: write its ``_metadata``, last and atomically.

    The document holds the format marker and version, the caller's ``metadata`` (JSON-able,
    round-trips exactly), the handles with sizes and checksums, and a checksum of the document
    itself. Locally it is a temp file, fsync, link into place, fsync of the directory; on S3 a
    single PUT (pyarrow sends an object below its 10 MiB part size in one request; a larger
    document would go multipart, which S3 also makes visible all at once). With ``verify_files``
    (default) the handles are first checked against one listing of the directory, so a
    ``_metadata`` never promises a file that is not there. An existing ``_metadata`` is never
    overwritten.

    >>> import tempfile
    >>> loc = tempfile.mkdtemp()
    >>> write_metadata(loc, {"checkpoint_id": 7}, [write_state_file(loc, "a.arrow", b"x")])
    >>> read_metadata(loc)[0]
    {'checkpoint_id': 7}
    """
    if not isinstance(metadata, dict):
        raise TypeError(f"checkpoint metadata must be a dict, got {type(metadata).__name__}")
    _check_json_able(metadata, "metadata")
    handles = list(handles)
    seen: set[str] = set()
    for h in handles:
        if not isinstance(h, StateHandle):
            raise TypeError(f"handles must be StateHandle objects, got {type(h).__name__}: {h!r}")
        if h.name in seen:
            raise ValueError(f"state file {h.name!r} is listed twice in the handles")
        seen.add(h.name)
    body = {
        "format": METADATA_FORMAT,
        "version": METADATA_FORMAT_VERSION,
        "metadata": metadata,
        "handles": [h.to_json() for h in handles],
    }
    payload = _canonical(body)
    document = dict(body, checksum=compute_checksum(payload))
    data = memoryview(_canonical(document) + b"\n")
    fs, base = resolve_filesystem(location)
    path = base.rstrip("/") + "/" + METADATA_FILE_NAME
    target = _join(location, METADATA_FILE_NAME)
    if verify_files:
        _check_files(location, fs, base, handles)
    try:
        if _is_local(fs):
            if not os.path.isdir(base):
                raise CheckpointStorageError(
                    f"cannot write {target}: checkpoint directory {location} does not exist"
                )
            subdirs = {os.path.dirname(os.path.join(base, h.name)) for h in handles} - {base}
            for d in sorted(subdirs):
                _fsync_dir(d)
            _local_write(path, lambda out: out.write(data), exclusive=True)
        else:
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                raise FileExistsError(f"{target} already exists")
            _remote_write(fs, path, data)
    except FileExistsError as exc:
        raise CheckpointStorageError(
            f"cannot write {target}: the checkpoint is already complete (_metadata exists)"
        ) from exc
    except OSError as exc:
        raise CheckpointStorageError(f"cannot write {target}: {exc}") from exc


def _load_document(location: str, fs: pafs.FileSystem, base: str) -> dict:
    """The parsed ``_metadata`` of ``location`` with its format marker checked (not its checksum)."""
    path = base.rstrip("/") + "/" + METADATA_FILE_NAME
    try:
        with fs.open_input_stream(path) as source:
            raw = source.read()
    except FileNotFoundError:
        info = _info(fs, base, location)
        if info.type == pafs.FileType.NotFound:
            raise CheckpointStorageError(f"checkpoint location {location} does not exist") from None
        if info.type != pafs.FileType.Directory:
            raise CheckpointStorageError(
                f"checkpoint location {location} is a file, not a directory"
            ) from None
        raise CorruptCheckpointError(
            f"incomplete checkpoint {location}: no _metadata file (its writer failed or is "
            "still running)"
        ) from None
    except OSError as exc:
        if _is_local(fs) and os.path.isdir(path):
            raise CorruptCheckpointError(
                f"corrupt checkpoint {location}: _metadata is a directory"
            ) from exc
        raise CheckpointStorageError(
            f"cannot read {_join(location, METADATA_FILE_NAME)}: {exc}"
        ) from exc
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: _metadata ({len(raw)} bytes) is not valid JSON "
            f"({exc}); truncated or garbled"
        ) from None
    if not isinstance(document, dict) or document.get("format") != METADATA_FORMAT:
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: _metadata is not a flowrun checkpoint metadata "
            f"document (field 'format' is not {METADATA_FORMAT!r})"
        )
    return document


def _validate_document(location: str, document: dict) -> tuple[dict, list[StateHandle]]:
    version = document.get("version")
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and version > METADATA_FORMAT_VERSION
    ):
        raise CheckpointStorageError(
            f"checkpoint {location}: _metadata has format version {version}, this flowrun reads "
            f"up to {METADATA_FORMAT_VERSION}; restore it with a newer flowrun"
        )
    checksum = document.get("checksum")
    if not isinstance(checksum, str):
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: _metadata field 'checksum' is missing or not a string"
        )
    body = {k: v for k, v in document.items() if k != "checksum"}
    algorithm = checksum.split(":", 1)[0]
    try:
        actual = compute_checksum(_canonical(body), algorithm)
    except ValueError:
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: _metadata field 'checksum' has unknown algorithm "
            f"{algorithm!r}"
        ) from None
    if actual != checksum:
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: _metadata field 'checksum' is {checksum}, the "
            f"document hashes to {actual}; the document was altered or damaged"
        )
    if version != METADATA_FORMAT_VERSION:
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: _metadata field 'version' is {version!r}"
        )
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: _metadata field 'metadata' is not an object"
        )
    raw_handles = document.get("handles")
    if not isinstance(raw_handles, list):
        raise CorruptCheckpointError(
            f"corrupt checkpoint {location}: _metadata field 'handles' is not a list"
        )
    handles = []
    for i, raw in enumerate(raw_handles):
        try:
            handles.append(StateHandle.from_json(raw))
        except ValueError as exc:
            raise CorruptCheckpointError(
                f"corrupt checkpoint {location}: _metadata field 'handles[{i}]': {exc}"
            ) from None
    return metadata, handles


def read_metadata(location: str, verify_files: bool = True) -> tuple[dict, list[StateHandle]]:
    """The caller's metadata and the state handles of a complete checkpoint or savepoint.

    Raises :class:`CorruptCheckpointError` (naming the directory and what failed) when
    ``_metadata`` is missing (an incomplete checkpoint), not valid JSON, not ours, fails its own
    checksum, or, with ``verify_files``, when a listed file is missing or has another size.
    File *contents* are checked by :func:`read_state_file`. A location that does not exist is a
    plain :class:`CheckpointStorageError`. ``location`` may also name the ``_metadata`` file.

    >>> import tempfile
    >>> read_metadata(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    flowrun.core.runtime.checkpoint_storage.CorruptCheckpointError: incomplete checkpoint ...
    """
    location, _ = _split_metadata_path(location)
    fs, base = resolve_filesystem(location)
    document = _load_document(location, fs, base)
    metadata, handles = _validate_document(location, document)
    if verify_files:
        _check_files(location, fs, base, handles)
    return metadata, handles


# --------------------------------------------------------------------------------------------
# discovery, retention, disposal


def list_checkpoints(job_location: str) -> list[tuple[int, str]]:
    """``(n, location)`` of every ``chk-<n>`` directory under a job's checkpoint directory,
    complete or not, oldest first. A missing job directory has none.

    >>> import tempfile
    >>> list_checkpoints(tempfile.mkdtemp())
    []
    """
    fs, base = resolve_filesystem(job_location)
    found = []
    for entry in _list(fs, base, job_location, recursive=False):
        if entry.type != pafs.FileType.Directory:
            continue
        match = _CHK_DIR.match(entry.base_name)
        if match:
            found.append((int(match.group(1)), _join(job_location, entry.base_name)))
    found.sort()
    return found


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def find_latest_checkpoint(base_uri: str, job_id: str | None = None) -> str | None:
    """The newest ``chk-<n>`` (by ``n``) whose ``_metadata`` and files validate, or ``None``.

    Incomplete and corrupt checkpoints are skipped with a warning on stderr naming each
    directory and why, so a crash during checkpoint ``n`` falls back to ``n-1``. With
    ``job_id=None``, ``base_uri`` is already the job's directory.

    >>> import tempfile
    >>> find_latest_checkpoint(tempfile.mkdtemp(), "no-such-job") is None
    True
    """
    job_location = _normalize_location(
        base_uri if job_id is None else _join(base_uri, _check_job_id(job_id))
    )
    for _n, location in reversed(list_checkpoints(job_location)):
        try:
            read_metadata(location, verify_files=True)
        except CorruptCheckpointError as exc:
            _warn(f"skipping checkpoint {location}: {exc}")
            continue
        return location
    return None


def resolve_restore_path(path: str) -> str:
    """The one directory to restore from, for what ``flowrun run -s <path>`` accepts.

    Accepted: a checkpoint or savepoint directory, its ``_metadata`` file, or a job's checkpoint
    directory (``<base>/<job_id>``: its newest valid ``chk-<n>``). The chosen directory has been
    validated (:func:`read_metadata` with file checks). Anything else is a
    :class:`CheckpointStorageError` saying what was expected; a damaged or incomplete one is a
    :class:`CorruptCheckpointError`.

    >>> import tempfile
    >>> loc = tempfile.mkdtemp()
    >>> write_metadata(loc, {}, [])
    >>> resolve_restore_path(loc + "/_metadata") == loc
    True
    """
    if not isinstance(path, str) or not path:
        raise CheckpointStorageError(f"restore path must be a non-empty str, got {path!r}")
    directory, named_metadata = _split_metadata_path(path)
    directory = _normalize_location(directory)
    if named_metadata:
        read_metadata(directory, verify_files=True)
        return directory
    fs, base = resolve_filesystem(directory)
    info = _info(fs, base, directory)
    if info.type == pafs.FileType.NotFound:
        raise CheckpointStorageError(f"cannot restore from {path}: no such file or directory")
    if info.type != pafs.FileType.Directory:
        raise CheckpointStorageError(
            f"cannot restore from {path}: it is a file; expected a checkpoint or savepoint "
            "directory, its _metadata file, or a job's checkpoint directory"
        )
    entries = _list(fs, base, directory, recursive=False)
    names = {e.base_name for e in entries}
    if METADATA_FILE_NAME in names:
        read_metadata(directory, verify_files=True)
        return directory
    checkpoints = list_checkpoints(directory)
    if checkpoints:
        latest = find_latest_checkpoint(directory)
        if latest is None:
            raise CorruptCheckpointError(
                f"cannot restore from {path}: none of its {len(checkpoints)} checkpoint(s) "
                f"({', '.join(posixpath.basename(loc) for _, loc in checkpoints)}) is complete "
                "and valid"
            )
        return latest
    base_name = posixpath.basename(base.rstrip("/"))
    if _CHK_DIR.match(base_name) or base_name.startswith(SAVEPOINT_DIR_PREFIX):
        raise CorruptCheckpointError(
            f"incomplete checkpoint {directory}: no _metadata file (its writer failed or is "
            "still running)"
        )
    raise CheckpointStorageError(
        f"cannot restore from {path}: nothing restorable there; expected a checkpoint or "
        "savepoint directory (with a _metadata file), its _metadata file, or a job's checkpoint "
        "directory (with chk-<n> directories)"
    )


def retain_checkpoints(base_uri: str, job_id: str, num_retained: int) -> list[str]:
    """Keep the newest ``num_retained`` valid checkpoints of a job; delete the older ``chk-<n>``.

    Flink's ``state.checkpoints.num-retained`` (default 1). Only directories *older* than the
    oldest kept checkpoint are deleted, complete or not (an incomplete one there was subsumed);
    newer ones are left alone, since a newer directory without ``_metadata`` may be a checkpoint
    still being written. Returns the deleted locations, oldest first.

    >>> import tempfile
    >>> base = tempfile.mkdtemp()
    >>> s = CheckpointStorage(base, "job")
    >>> for n in (1, 2, 3):
    ...     write_metadata(s.checkpoint_location(n), {}, [])
    >>> [loc.rsplit("/", 1)[1] for loc in retain_checkpoints(base, "job", 2)]
    ['chk-1']
    """
    if isinstance(num_retained, bool) or not isinstance(num_retained, int) or num_retained < 1:
        raise ValueError(
            f"num_retained (state.checkpoints.num-retained) must be an int >= 1, got "
            f"{num_retained!r}"
        )
    job_location = _normalize_location(_join(base_uri, _check_job_id(job_id)))
    checkpoints = list_checkpoints(job_location)
    kept: list[int] = []
    for n, location in reversed(checkpoints):
        try:
            read_metadata(location, verify_files=True)
        except CorruptCheckpointError:
            continue
        kept.append(n)
        if len(kept) == num_retained:
            break
    if not kept:
        return []
    oldest_kept = kept[-1]
    deleted = []
    for n, location in checkpoints:
        if n < oldest_kept:
            discard_location(location)
            deleted.append(location)
    return deleted


def discard_location(location: str) -> None:
    """Delete a checkpoint or savepoint directory and everything in it (incomplete ones too).

    A location that is already gone is not an error (discarding is retried after failures).

    >>> import tempfile
    >>> loc = tempfile.mkdtemp()
    >>> discard_location(loc); discard_location(loc)
    >>> import os; os.path.exists(loc)
    False
    """
    location = _normalize_location(location)
    fs, base = resolve_filesystem(location)
    if not _is_local(fs) and "/" not in base:
        raise CheckpointStorageError(f"refusing to delete {location}: it is a whole bucket")
    if _is_local(fs) and base == "/":
        raise CheckpointStorageError(f"refusing to delete {location}: it is the root directory")
    info = _info(fs, base, location)
    if info.type == pafs.FileType.NotFound:
        return
    try:
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(base)
        else:
            raise CheckpointStorageError(
                f"refusing to delete {location}: it is a file, not a checkpoint directory"
            )
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CheckpointStorageError(f"cannot delete {location}: {exc}") from exc


def dispose_savepoint(path: str) -> None:
    """Delete a savepoint (``flowrun savepoint --dispose <path>``); ``path`` is its directory or
    its ``_metadata`` file.

    Refuses anything that is not one: a directory without a flowrun ``_metadata`` document, or
    one holding files that the ``_metadata`` does not list (so pointing it at the wrong
    directory deletes nothing). A savepoint whose listed files are damaged or missing can still
    be disposed.

    >>> import tempfile
    >>> loc = tempfile.mkdtemp()
    >>> dispose_savepoint(loc)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    flowrun.core.runtime.checkpoint_storage.CheckpointStorageError: refusing to dispose ...
    """
    directory, _ = _split_metadata_path(path)
    directory = _normalize_location(directory)
    fs, base = resolve_filesystem(directory)
    info = _info(fs, base, directory)
    if info.type == pafs.FileType.NotFound:
        raise CheckpointStorageError(f"refusing to dispose {path}: it does not exist")
    if info.type != pafs.FileType.Directory:
        raise CheckpointStorageError(
            f"refusing to dispose {path}: it is a file, not a savepoint directory"
        )
    if _info(fs, base + "/" + METADATA_FILE_NAME, directory).type == pafs.FileType.NotFound:
        raise CheckpointStorageError(
            f"refusing to dispose {path}: it has no _metadata file, so it is not a savepoint "
            "(an incomplete one can be deleted with discard_location or by hand)"
        )
    try:
        document = _load_document(directory, fs, base)
    except CheckpointStorageError as exc:
        raise CheckpointStorageError(
            f"refusing to dispose {path}: its _metadata is not a flowrun savepoint's ({exc})"
        ) from None
    raw_handles = document.get("handles")
    listed: set[str] = set()
    if isinstance(raw_handles, list):
        listed = {
            h["name"] for h in raw_handles if isinstance(h, dict) and isinstance(h.get("name"), str)
        }
    parents = {posixpath.dirname(n) for n in listed}
    parents = {p for name in parents for p in _ancestors(name)}
    unknown = []
    for entry in _list(fs, base, directory, recursive=True):
        rel = _relative(base, entry.path)
        if rel == METADATA_FILE_NAME or rel in listed or _TEMP_MARK in posixpath.basename(rel):
            continue
        if entry.type == pafs.FileType.Directory and rel in parents:
            continue
        unknown.append(rel)
    if unknown:
        shown = ", ".join(sorted(unknown)[:5]) + (" ..." if len(unknown) > 5 else "")
        raise CheckpointStorageError(
            f"refusing to dispose {path}: it holds {len(unknown)} file(s) its _metadata does not "
            f"list ({shown}); not deleting what may not be a savepoint"
        )
    discard_location(directory)


def _ancestors(relative_dir: str) -> Iterable[str]:
    while relative_dir:
        yield relative_dir
        relative_dir = posixpath.dirname(relative_dir)


def _check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id) or job_id in (".", ".."):
        raise ValueError(
            f"job_id must be a non-empty str of letters, digits, '.', '_' or '-' (one path "
            f"component), got {job_id!r}"
        )
    return job_id


# --------------------------------------------------------------------------------------------
# the coordinator's side


class CheckpointStorage:
    """Where one job's checkpoints and savepoints go (Flink's ``FileSystemCheckpointStorage``).

    ``base_uri`` is ``state.checkpoints.dir`` (a local path, ``file://`` or ``s3://`` URI);
    checkpoints go to ``<base>/<job_id>/chk-<n>``. ``default_savepoint_dir`` is
    ``state.savepoints.dir``, used when a savepoint is triggered without a target.

    >>> import tempfile
    >>> storage = CheckpointStorage(tempfile.mkdtemp(), "0123456789abcdef")
    >>> storage.checkpoint_location(3).endswith("/0123456789abcdef/chk-3")
    True
    >>> loc = storage.savepoint_location(tempfile.mkdtemp())
    >>> loc.rsplit("/", 1)[1][:17], len(loc.rsplit("/", 1)[1])
    ('savepoint-012345-', 29)
    """

    def __init__(
        self, base_uri: str, job_id: str, *, default_savepoint_dir: str | None = None
    ) -> None:
        resolve_filesystem(base_uri)  # fail now on a bad scheme, not at the first checkpoint
        if default_savepoint_dir is not None:
            resolve_filesystem(default_savepoint_dir)
        self.base_uri = _normalize_location(base_uri)
        self.job_id = _check_job_id(job_id)
        self.default_savepoint_dir = (
            None if default_savepoint_dir is None else _normalize_location(default_savepoint_dir)
        )

    @property
    def job_location(self) -> str:
        """``<base>/<job_id>``: the directory holding this job's ``chk-<n>`` directories."""
        return _join(self.base_uri, self.job_id)

    def checkpoint_location(self, checkpoint_id: int) -> str:
        """``<base>/<job_id>/chk-<n>``, created. A leftover incomplete directory of the same id
        (from a crashed attempt) is emptied first; a completed one is never overwritten."""
        if (
            isinstance(checkpoint_id, bool)
            or not isinstance(checkpoint_id, int)
            or checkpoint_id < 1
        ):
            raise ValueError(f"checkpoint_id must be an int >= 1, got {checkpoint_id!r}")
        location = _join(self.job_location, f"{CHECKPOINT_DIR_PREFIX}{checkpoint_id}")
        fs, path = resolve_filesystem(location)
        info = _info(fs, path, location)
        if info.type == pafs.FileType.Directory:
            if _info(fs, path + "/" + METADATA_FILE_NAME, location).type != pafs.FileType.NotFound:
                raise CheckpointStorageError(
                    f"checkpoint location {location} already holds a completed checkpoint; "
                    "checkpoint ids must not be reused"
                )
            discard_location(location)
        elif info.type != pafs.FileType.NotFound:
            raise CheckpointStorageError(f"checkpoint location {location} exists and is a file")
        _create_dir(fs, path, location)
        return location

    def savepoint_location(self, target_dir: str | None) -> str:
        """``<target_dir>/savepoint-<job_id[:6]>-<random12>``, created.

        Without ``target_dir`` the ``default_savepoint_dir`` (``state.savepoints.dir``) is used.
        """
        target = target_dir if target_dir is not None else self.default_savepoint_dir
        if target is None:
            raise CheckpointStorageError(
                "no savepoint target directory: pass one, or configure state.savepoints.dir"
            )
        target = _normalize_location(target)
        name = f"{SAVEPOINT_DIR_PREFIX}{self.job_id[:6]}-{secrets.token_hex(6)}"
        location = _join(target, name)
        fs, path = resolve_filesystem(location)
        _create_dir(fs, path, location)
        return location

    def latest_checkpoint(self) -> str | None:
        """:func:`find_latest_checkpoint` of this job."""
        return find_latest_checkpoint(self.job_location)

    def retain(self, num_retained: int) -> list[str]:
        """:func:`retain_checkpoints` of this job."""
        return retain_checkpoints(self.base_uri, self.job_id, num_retained)

    def __repr__(self) -> str:
        return f"CheckpointStorage({self.base_uri!r}, {self.job_id!r})"


def _create_dir(fs: pafs.FileSystem, path: str, location: str) -> None:
    try:
        fs.create_dir(path, recursive=True)
    except OSError as exc:
        raise CheckpointStorageError(f"cannot create {location}: {exc}") from exc
