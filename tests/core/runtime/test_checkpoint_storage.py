"""Checkpoint storage on real local directories and on a real S3 server (moto, in a subprocess).

Most tests run twice, once per ``base`` kind: a local path and an ``s3://`` prefix of their own.
"""

from __future__ import annotations

import doctest
import importlib
import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from flowrun_testing import S3_TEST_BUCKET

from flowrun.core.runtime import checkpoint_storage as cs
from flowrun.core.runtime.checkpoint_storage import (
    CheckpointStorage,
    CheckpointStorageError,
    CorruptCheckpointError,
    StateHandle,
    compute_checksum,
    discard_location,
    dispose_savepoint,
    find_latest_checkpoint,
    read_metadata,
    read_state_file,
    resolve_filesystem,
    resolve_restore_path,
    retain_checkpoints,
    write_metadata,
    write_state_file,
)
from flowrun.state.snapshot import StateMeta, read_stream, write_stream

JOB = "3f2a9c0d11aa22bb33cc44dd55ee66ff"


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path) -> str:
    """A fresh checkpoint base: a local directory, or a prefix in the moto server's bucket."""
    if request.param == "local":
        return str(tmp_path / "checkpoints")
    return request.getfixturevalue("s3_base")


def _fs(location: str) -> tuple[pafs.FileSystem, str]:
    return resolve_filesystem(location)


def _read_raw(location: str) -> bytes:
    fs, path = _fs(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def _write_raw(location: str, data: bytes) -> None:
    """Overwrite a file behind the storage's back (what damage on disk or in a bucket does)."""
    fs, path = _fs(location)
    with fs.open_output_stream(path) as f:
        f.write(data)


def _delete_raw(location: str) -> None:
    fs, path = _fs(location)
    fs.delete_file(path)


def _exists(location: str) -> bool:
    fs, path = _fs(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _arrow_state(n: int) -> pa.Buffer:
    """A real state stream as the engine produces it (flowrun.state.snapshot)."""
    meta = StateMeta(
        operator_id="op-3f2a9c",
        state_name="counts",
        state_kind="value",
        value_type="Long",
        max_parallelism=128,
        key_group_range=(0, 127),
    )
    return write_stream(
        meta,
        [i % 128 for i in range(n)],
        [f"k{i}".encode() for i in range(n)],
        [None] * n,
        [i.to_bytes(8, "big") for i in range(n)],
    )


def _complete(storage: CheckpointStorage, n: int, payload: bytes = b"state") -> str:
    location = storage.checkpoint_location(n)
    handle = write_state_file(location, "op-0-s.arrow", payload + str(n).encode())
    write_metadata(location, {"checkpoint_id": n}, [handle])
    return location


# ------------------------------------------------------------------------------------------
# round trip


def test_round_trip_of_state_files_and_metadata(base):
    storage = CheckpointStorage(base, JOB)
    location = storage.checkpoint_location(1)
    assert location == base.rstrip("/") + f"/{JOB}/chk-1"
    assert _fs(location)[0].get_file_info(_fs(location)[1]).type == pafs.FileType.Directory

    arrow = _arrow_state(1000)
    h_arrow = write_state_file(location, "op-3f2a9c-0-counts.arrow", arrow)
    h_bytes = write_state_file(location, "op-3f2a9c-1-counts.arrow", b"\x00\x01 plain bytes")
    h_empty = write_state_file(location, "op-77-0-empty.arrow", b"")
    h_nested = write_state_file(location, "operator/op-9/0-list.arrow", memoryview(b"nested"))
    assert h_arrow == StateHandle(
        "op-3f2a9c-0-counts.arrow", arrow.size, compute_checksum(arrow.to_pybytes())
    )
    assert h_bytes.size == 14 and h_empty.size == 0 and h_nested.size == 6

    user_meta = {
        "checkpoint_id": 1,
        "timestamp": 1700000000123,
        "savepoint": False,
        "operators": {"op-3f2a9c": {"parallelism": 2, "max_parallelism": 128}},
        "ratio": 0.25,
        "note": "ünïcode",
        "none": None,
    }
    handles = [h_arrow, h_bytes, h_empty, h_nested]
    write_metadata(location, user_meta, handles)

    meta, read_handles = read_metadata(location)
    assert meta == user_meta
    assert read_handles == handles
    assert read_state_file(location, h_bytes).to_pybytes() == b"\x00\x01 plain bytes"
    assert read_state_file(location, h_empty).to_pybytes() == b""
    assert read_state_file(location, h_nested).to_pybytes() == b"nested"
    state_meta, table = read_stream(read_state_file(location, h_arrow))
    assert state_meta.state_name == "counts"
    assert table.num_rows == 1000
    assert table.column("key").to_pylist()[:2] == [b"k0", b"k1"]

    # exactly the state files and _metadata: no temp file left behind
    fs, path = _fs(location)
    files = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    names = {f.path[len(path) + 1 :] for f in files if f.type == pafs.FileType.File}
    assert names == {h.name for h in handles} | {"_metadata"}

    # the document on storage: format, version, caller's metadata, handles, its own checksum
    doc = json.loads(_read_raw(location + "/_metadata"))
    assert doc["format"] == "flowrun-checkpoint-metadata"
    assert doc["version"] == 1
    assert doc["metadata"] == user_meta
    assert doc["handles"][0] == {
        "name": "op-3f2a9c-0-counts.arrow",
        "size": arrow.size,
        "checksum": h_arrow.checksum,
    }
    assert doc["checksum"].startswith("crc32:")


def test_metadata_on_s3_is_one_put_not_a_multipart_upload(s3_base, moto_s3_server):
    storage = CheckpointStorage(s3_base, JOB)
    location = storage.checkpoint_location(5)
    handles = [write_state_file(location, f"op-{i}.arrow", b"x" * 1000) for i in range(200)]
    write_metadata(location, {"checkpoint_id": 5}, handles)
    key = location[len(f"s3://{S3_TEST_BUCKET}/") :] + "/_metadata"
    etag = moto_s3_server.etag(S3_TEST_BUCKET, key)
    # a multipart upload's ETag ends in -<number of parts>
    assert "-" not in etag.strip('"'), etag
    assert len(_read_raw(location + "/_metadata")) > 10_000


def test_writes_from_another_process_with_only_the_location_string(base):
    storage = CheckpointStorage(base, JOB)
    location = storage.checkpoint_location(2)
    code = (
        "import json, sys\n"
        "from flowrun.core.runtime.checkpoint_storage import write_state_file\n"
        "h = write_state_file(sys.argv[1], sys.argv[2], sys.argv[3].encode())\n"
        "print(json.dumps(h.to_json()))\n"
    )
    handles = []
    for sub in range(2):
        out = subprocess.run(
            [sys.executable, "-c", code, location, f"op-1-{sub}.arrow", f"from subtask {sub}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        handles.append(StateHandle.from_json(json.loads(out.stdout)))
    write_metadata(location, {"checkpoint_id": 2}, handles)
    _, read_handles = read_metadata(location)
    assert [read_state_file(location, h).to_pybytes() for h in read_handles] == [
        b"from subtask 0",
        b"from subtask 1",
    ]


# ------------------------------------------------------------------------------------------
# completeness and corruption


def test_a_directory_without_metadata_is_incomplete_and_skipped(base, capsys):
    storage = CheckpointStorage(base, JOB)
    first = _complete(storage, 1)
    second = storage.checkpoint_location(2)
    handle = write_state_file(second, "op-0-s.arrow", b"written, but no _metadata yet")
    with pytest.raises(CorruptCheckpointError, match="incomplete checkpoint .*chk-2: no _metadata"):
        read_metadata(second)
    assert find_latest_checkpoint(base, JOB) == first
    err = capsys.readouterr().err
    assert f"skipping checkpoint {second}: incomplete checkpoint" in err

    write_metadata(second, {"checkpoint_id": 2}, [handle])
    assert find_latest_checkpoint(base, JOB) == second
    assert capsys.readouterr().err == ""


def test_flipped_byte_in_a_state_file_fails_read_state_file(base):
    storage = CheckpointStorage(base, JOB)
    location = storage.checkpoint_location(1)
    data = _arrow_state(100)
    handle = write_state_file(location, "op-3f2a9c-0-counts.arrow", data)
    write_metadata(location, {}, [handle])
    raw = bytearray(_read_raw(location + "/op-3f2a9c-0-counts.arrow"))
    raw[len(raw) // 2] ^= 0x01
    _write_raw(location + "/op-3f2a9c-0-counts.arrow", bytes(raw))

    read_metadata(location)  # same size: the listing check cannot see it ...
    with pytest.raises(CorruptCheckpointError) as info:  # ... the checksum does
        read_state_file(location, handle)
    message = str(info.value)
    assert location in message
    assert "'op-3f2a9c-0-counts.arrow' has checksum crc32:" in message
    assert f"_metadata records {handle.checksum}" in message


def test_state_file_of_the_wrong_size(base):
    storage = CheckpointStorage(base, JOB)
    location = storage.checkpoint_location(1)
    handle = write_state_file(location, "s.arrow", b"0123456789")
    write_metadata(location, {}, [handle])
    _write_raw(location + "/s.arrow", b"0123456789 and more")
    expected = "state file 's.arrow' has 19 bytes, _metadata records 10"
    with pytest.raises(CorruptCheckpointError, match=expected):
        read_metadata(location)
    with pytest.raises(CorruptCheckpointError, match=expected):
        read_state_file(location, handle)
    read_metadata(location, verify_files=False)  # the document itself is fine


def test_truncated_metadata(base):
    storage = CheckpointStorage(base, JOB)
    location = _complete(storage, 1)
    raw = _read_raw(location + "/_metadata")
    _write_raw(location + "/_metadata", raw[: len(raw) // 2])
    with pytest.raises(CorruptCheckpointError) as info:
        read_metadata(location)
    assert str(info.value).startswith(f"corrupt checkpoint {location}: _metadata (")
    assert "is not valid JSON" in str(info.value)


def test_garbled_metadata_fails_its_own_checksum(base):
    storage = CheckpointStorage(base, JOB)
    location = _complete(storage, 1)
    raw = _read_raw(location + "/_metadata")
    assert b'"checkpoint_id":1' in raw
    _write_raw(location + "/_metadata", raw.replace(b'"checkpoint_id":1', b'"checkpoint_id":7'))
    with pytest.raises(CorruptCheckpointError, match=r"_metadata field 'checksum' is crc32:"):
        read_metadata(location)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "is not valid JSON"),
        (b"\xff\xfe garbage", "is not valid JSON"),
        (b'{"some": "other json"}', "field 'format'"),
        (b"[1, 2]", "field 'format'"),
    ],
)
def test_metadata_that_is_not_ours(tmp_path, content, expected):
    location = str(tmp_path / "chk-1")
    os.mkdir(location)
    (tmp_path / "chk-1" / "_metadata").write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=expected):
        read_metadata(location)


def test_metadata_with_a_bad_handle_field_names_it(tmp_path):
    location = str(tmp_path / "sp")
    os.mkdir(location)
    body = {
        "format": cs.METADATA_FORMAT,
        "version": 1,
        "metadata": {},
        "handles": [{"name": "ok.arrow", "size": 1, "checksum": "crc32:00000000"}, {"name": "x"}],
    }
    doc = dict(body, checksum=compute_checksum(cs._canonical(body)))
    (tmp_path / "sp" / "_metadata").write_text(json.dumps(doc))
    with pytest.raises(CorruptCheckpointError, match=r"field 'handles\[1\]'.*lacks field"):
        read_metadata(location)


def test_metadata_of_a_newer_format_version_is_not_called_corrupt(tmp_path):
    location = str(tmp_path / "sp")
    os.mkdir(location)
    body = {"format": cs.METADATA_FORMAT, "version": 99, "metadata": {}, "handles": []}
    doc = dict(body, checksum=compute_checksum(cs._canonical(body)))
    (tmp_path / "sp" / "_metadata").write_text(json.dumps(doc))
    with pytest.raises(CheckpointStorageError, match="format version 99") as info:
        read_metadata(location)
    assert not isinstance(info.value, CorruptCheckpointError)


def test_missing_listed_file(base):
    storage = CheckpointStorage(base, JOB)
    location = storage.checkpoint_location(1)
    handles = [write_state_file(location, f"op-{i}.arrow", b"abc") for i in range(3)]
    write_metadata(location, {}, handles)
    _delete_raw(location + "/op-1.arrow")
    with pytest.raises(
        CorruptCheckpointError,
        match=f"corrupt checkpoint {location}: state file 'op-1.arrow' listed in _metadata is "
        "missing",
    ):
        read_metadata(location)
    with pytest.raises(CorruptCheckpointError, match="'op-1.arrow' is missing"):
        read_state_file(location, handles[1])


def test_write_metadata_refuses_handles_whose_files_are_not_there(base):
    storage = CheckpointStorage(base, JOB)
    location = storage.checkpoint_location(1)
    ghost = StateHandle("never-written.arrow", 3, compute_checksum(b"abc"))
    with pytest.raises(CorruptCheckpointError, match="'never-written.arrow' .* is missing"):
        write_metadata(location, {}, [ghost])
    assert not _exists(location + "/_metadata")


def test_latest_valid_checkpoint_is_chosen_when_the_newest_are_corrupt(base, capsys):
    storage = CheckpointStorage(base, JOB)
    for n in (1, 2, 9, 10):
        _complete(storage, n)
    # chk-10: garbled _metadata; chk-9: a state file is gone; chk-11: never completed
    raw = _read_raw(storage.job_location + "/chk-10/_metadata")
    _write_raw(storage.job_location + "/chk-10/_metadata", raw[:-20])
    _delete_raw(storage.job_location + "/chk-9/op-0-s.arrow")
    storage.checkpoint_location(11)

    latest = find_latest_checkpoint(base, JOB)
    assert latest == storage.job_location + "/chk-2"  # by number: chk-2 < chk-9 < chk-10
    assert find_latest_checkpoint(storage.job_location) == latest
    assert storage.latest_checkpoint() == latest
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "skipping checkpoint" in line]
    assert len(skipped) == 3 * 3
    assert f"skipping checkpoint {storage.job_location}/chk-11: incomplete checkpoint" in err
    assert f"skipping checkpoint {storage.job_location}/chk-10: corrupt checkpoint" in err
    assert "'op-0-s.arrow' listed in _metadata is missing" in err
    assert "chk-1:" not in err and "chk-2:" not in err


def test_no_checkpoint_at_all(base):
    assert find_latest_checkpoint(base, JOB) is None
    storage = CheckpointStorage(base, JOB)
    storage.checkpoint_location(1)
    assert find_latest_checkpoint(base, JOB) is None


# ------------------------------------------------------------------------------------------
# retention and discarding


def test_retention_keeps_the_newest_n(base):
    storage = CheckpointStorage(base, JOB)
    for n in range(1, 6):
        _complete(storage, n)
    storage.checkpoint_location(6)  # in progress: newer than every kept one, must survive
    deleted = retain_checkpoints(base, JOB, 2)
    assert deleted == [storage.job_location + f"/chk-{n}" for n in (1, 2, 3)]
    remaining = [loc.rsplit("/", 1)[1] for _, loc in cs.list_checkpoints(storage.job_location)]
    assert remaining == ["chk-4", "chk-5", "chk-6"]
    assert read_metadata(storage.job_location + "/chk-4")[0] == {"checkpoint_id": 4}
    assert storage.retain(2) == []


def test_retention_counts_only_valid_checkpoints(tmp_path, capsys):
    base = str(tmp_path)
    storage = CheckpointStorage(base, JOB)
    for n in (1, 2, 3):
        _complete(storage, n)
    raw = _read_raw(storage.job_location + "/chk-3/_metadata")
    _write_raw(storage.job_location + "/chk-3/_metadata", raw[:10])
    assert retain_checkpoints(base, JOB, 1) == [storage.job_location + "/chk-1"]
    # chk-3 is corrupt: chk-2 stays as the one valid checkpoint, chk-3 is left for inspection
    assert find_latest_checkpoint(base, JOB) == storage.job_location + "/chk-2"
    assert os.path.isdir(storage.job_location + "/chk-3")


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_retention_rejects_a_bad_count(tmp_path, bad):
    with pytest.raises(ValueError, match="state.checkpoints.num-retained"):
        retain_checkpoints(str(tmp_path), JOB, bad)


def test_discard_location_removes_complete_and_incomplete_dirs(base):
    storage = CheckpointStorage(base, JOB)
    complete = _complete(storage, 1)
    incomplete = storage.checkpoint_location(2)
    write_state_file(incomplete, "a/b/c.arrow", b"half a checkpoint")
    discard_location(complete)
    discard_location(incomplete)
    discard_location(incomplete)  # already gone: not an error
    assert not _exists(complete) and not _exists(incomplete)
    assert cs.list_checkpoints(storage.job_location) == []


def test_a_completed_checkpoint_is_never_overwritten(base):
    storage = CheckpointStorage(base, JOB)
    location = _complete(storage, 1)
    with pytest.raises(CheckpointStorageError, match="already complete"):
        write_metadata(location, {"again": True}, [])
    with pytest.raises(CheckpointStorageError, match="already holds a completed checkpoint"):
        storage.checkpoint_location(1)
    assert read_metadata(location)[0] == {"checkpoint_id": 1}


def test_a_leftover_incomplete_checkpoint_dir_is_emptied_on_reuse(base):
    storage = CheckpointStorage(base, JOB)
    location = storage.checkpoint_location(3)
    write_state_file(location, "stale.arrow", b"from a crashed attempt")
    assert storage.checkpoint_location(3) == location
    assert not _exists(location + "/stale.arrow")
    write_metadata(location, {}, [])


# ------------------------------------------------------------------------------------------
# savepoints: location, relocation, disposal


def test_savepoint_location(base):
    storage = CheckpointStorage(base, JOB)
    target = base + "/savepoints"
    first = storage.savepoint_location(target)
    second = storage.savepoint_location(target)
    assert first != second
    parent, name = first.rsplit("/", 1)
    assert parent == target
    assert name.startswith(f"savepoint-{JOB[:6]}-")
    suffix = name[len(f"savepoint-{JOB[:6]}-") :]
    assert len(suffix) == 12 and int(suffix, 16) >= 0
    fs, path = _fs(first)
    assert fs.get_file_info(path).type == pafs.FileType.Directory

    with pytest.raises(CheckpointStorageError, match="state.savepoints.dir"):
        storage.savepoint_location(None)
    with_default = CheckpointStorage(base, JOB, default_savepoint_dir=target)
    assert with_default.savepoint_location(None).startswith(target + "/savepoint-")


def _write_savepoint(target: str) -> tuple[str, dict, list[StateHandle], dict[str, bytes]]:
    location = CheckpointStorage(target, JOB).savepoint_location(target)
    contents = {
        "op-3f2a9c-0-counts.arrow": _arrow_state(50).to_pybytes(),
        "op-3f2a9c-1-counts.arrow": _arrow_state(7).to_pybytes(),
        "operator/op-src-0.arrow": b"offsets",
    }
    handles = [write_state_file(location, n, d) for n, d in contents.items()]
    meta = {"savepoint": True, "job_id": JOB}
    write_metadata(location, meta, handles)
    return location, meta, handles, contents


def _assert_restores(location: str, meta: dict, contents: dict[str, bytes]) -> None:
    assert resolve_restore_path(location) == location
    read_meta, handles = read_metadata(location)
    assert read_meta == meta
    assert {h.name: read_state_file(location, h).to_pybytes() for h in handles} == contents


def test_savepoint_is_relocatable_moved_and_copied_to_s3_and_back(tmp_path, s3_base):
    location, meta, _, contents = _write_savepoint(str(tmp_path / "sp"))

    moved = str(tmp_path / "elsewhere" / "renamed-savepoint")
    os.makedirs(os.path.dirname(moved))
    os.rename(location, moved)
    _assert_restores(moved, meta, contents)
    assert b"tmp" not in _read_raw(moved + "/_metadata")  # nothing absolute inside

    s3_copy = s3_base + "/copied/savepoint"
    s3_fs, s3_path = resolve_filesystem(s3_copy)
    pafs.copy_files(
        moved, s3_path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3_fs
    )
    _assert_restores(s3_copy, meta, contents)

    back = str(tmp_path / "back-from-s3")
    pafs.copy_files(
        s3_path, back, source_filesystem=s3_fs, destination_filesystem=pafs.LocalFileSystem()
    )
    _assert_restores(back, meta, contents)
    _assert_restores("file://" + back, meta, contents)


def test_dispose_savepoint(base):
    location, _, _, _ = _write_savepoint(base + "/sp")
    other, _, _, _ = _write_savepoint(base + "/sp")
    dispose_savepoint(location)
    assert not _exists(location)
    dispose_savepoint(other + "/_metadata")
    assert not _exists(other)


def test_dispose_works_on_a_damaged_savepoint(tmp_path):
    location, _, _, _ = _write_savepoint(str(tmp_path))
    os.unlink(location + "/op-3f2a9c-1-counts.arrow")
    dispose_savepoint(location)
    assert not os.path.exists(location)


def test_dispose_refuses_what_is_not_a_savepoint(base):
    storage = CheckpointStorage(base, JOB)
    _complete(storage, 1)
    incomplete = storage.checkpoint_location(2)
    write_state_file(incomplete, "x.arrow", b"x")
    with pytest.raises(CheckpointStorageError, match="refusing to dispose .*no _metadata"):
        dispose_savepoint(incomplete)
    with pytest.raises(CheckpointStorageError, match="refusing to dispose .*no _metadata"):
        dispose_savepoint(storage.job_location)  # a job dir holding checkpoints
    with pytest.raises(CheckpointStorageError, match="refusing to dispose .*: it does not exist"):
        dispose_savepoint(base + "/no-such-savepoint")

    write_state_file(incomplete, "y.arrow", b"y")
    with pytest.raises(CheckpointStorageError, match="refusing to dispose .*: it is a file"):
        dispose_savepoint(incomplete + "/y.arrow")

    plain = base + "/some-data"
    _fs(plain)[0].create_dir(_fs(plain)[1])
    _write_raw(plain + "/_metadata", b"not json at all")
    with pytest.raises(CheckpointStorageError, match="refusing to dispose .*not valid JSON"):
        dispose_savepoint(plain)

    location, _, _, _ = _write_savepoint(base + "/sp")
    _write_raw(location + "/unrelated.txt", b"somebody else's file")
    with pytest.raises(
        CheckpointStorageError, match=r"holds 1 file\(s\) its _metadata does not list \(unrelated"
    ):
        dispose_savepoint(location)
    for kept in (incomplete + "/x.arrow", storage.job_location + "/chk-1/_metadata", location):
        assert _exists(kept)


# ------------------------------------------------------------------------------------------
# resolve_restore_path


def test_resolve_restore_path_accepts_each_form(base):
    storage = CheckpointStorage(base, JOB)
    chk1 = _complete(storage, 1)
    chk2 = _complete(storage, 2)
    storage.checkpoint_location(3)  # incomplete, newest
    savepoint, _, _, _ = _write_savepoint(base + "/savepoints")

    assert resolve_restore_path(chk1) == chk1
    assert resolve_restore_path(chk1 + "/") == chk1
    assert resolve_restore_path(chk1 + "/_metadata") == chk1
    assert resolve_restore_path(savepoint) == savepoint
    assert resolve_restore_path(savepoint + "/_metadata") == savepoint
    assert resolve_restore_path(storage.job_location) == chk2
    assert resolve_restore_path(storage.job_location + "/") == chk2


def test_resolve_restore_path_local_forms(tmp_path, monkeypatch):
    storage = CheckpointStorage(str(tmp_path / "base"), JOB)
    chk = _complete(storage, 4)
    assert resolve_restore_path("file://" + chk) == "file://" + chk
    monkeypatch.chdir(tmp_path)
    assert resolve_restore_path(f"base/{JOB}/chk-4") == chk  # relative -> absolute
    assert resolve_restore_path(f"base/{JOB}") == chk


def test_resolve_restore_path_errors(base):
    storage = CheckpointStorage(base, JOB)
    with pytest.raises(CheckpointStorageError, match="no such file or directory"):
        resolve_restore_path(base + "/nothing-here")

    incomplete = storage.checkpoint_location(1)
    with pytest.raises(CorruptCheckpointError, match="incomplete checkpoint .*chk-1"):
        resolve_restore_path(incomplete)
    with pytest.raises(CorruptCheckpointError, match=r"none of its 1 checkpoint\(s\) \(chk-1\)"):
        resolve_restore_path(storage.job_location)
    with pytest.raises(CorruptCheckpointError, match="incomplete checkpoint"):
        resolve_restore_path(incomplete + "/_metadata")

    write_state_file(incomplete, "s.arrow", b"x")
    with pytest.raises(CheckpointStorageError, match="it is a file; expected a checkpoint"):
        resolve_restore_path(incomplete + "/s.arrow")

    empty = base + "/empty"
    _fs(empty)[0].create_dir(_fs(empty)[1])
    _write_raw(empty + "/readme.txt", b"hello")
    with pytest.raises(CheckpointStorageError, match="nothing restorable there") as info:
        resolve_restore_path(empty)
    assert not isinstance(info.value, CorruptCheckpointError)

    location, _, handles, _ = _write_savepoint(base + "/sp")
    _delete_raw(location + "/" + handles[0].name)
    with pytest.raises(CorruptCheckpointError, match="listed in _metadata is missing"):
        resolve_restore_path(location)


# ------------------------------------------------------------------------------------------
# URIs and bad input


@pytest.mark.parametrize(
    "uri", ["hdfs://namenode/flink/checkpoints", "gs://bucket/x", "abfs://c/x"]
)
def test_unknown_uri_scheme(uri):
    scheme = uri.split(":", 1)[0]
    expected = (
        f"unsupported file system scheme '{scheme}' in '{uri}': checkpoint storage takes a "
        "local path, file:// or s3://"
    )
    with pytest.raises(CheckpointStorageError) as info:
        resolve_filesystem(uri)
    assert str(info.value) == expected
    with pytest.raises(CheckpointStorageError, match="unsupported file system scheme"):
        CheckpointStorage(uri, JOB)
    with pytest.raises(CheckpointStorageError, match="unsupported file system scheme"):
        resolve_restore_path(uri)


def test_resolve_filesystem_forms(tmp_path, monkeypatch, s3_base):
    fs, path = resolve_filesystem(str(tmp_path))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)
    fs, path = resolve_filesystem("file:///tmp/a%20b/")
    assert isinstance(fs, pafs.LocalFileSystem) and path == "/tmp/a b"
    monkeypatch.chdir(tmp_path)
    assert resolve_filesystem("rel/dir")[1] == str(tmp_path / "rel" / "dir")
    fs, path = resolve_filesystem("s3://bucket/some/prefix/")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/some/prefix"
    assert resolve_filesystem("s3://bucket")[1] == "bucket"

    for bad, expected in [
        ("s3:///no-bucket", "must name a bucket"),
        ("file://otherhost/x", "not host 'otherhost'"),
        ("s3://bucket/x?endpoint_override=y", "query strings"),
        ("", "non-empty str"),
    ]:
        with pytest.raises(CheckpointStorageError, match=expected):
            resolve_filesystem(bad)

    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://127.0.0.1:1")
    with pytest.raises(CheckpointStorageError, match="scheme must be http or https"):
        resolve_filesystem("s3://bucket/x")


def test_s3_bucket_that_does_not_exist_is_an_error_not_created(s3_base, moto_s3_server):
    storage = CheckpointStorage(f"s3://no-such-bucket-{JOB[:8]}/ck", JOB)
    with pytest.raises(CheckpointStorageError, match="cannot create s3://no-such-bucket"):
        storage.checkpoint_location(1)
    assert moto_s3_server.bucket_names() == [S3_TEST_BUCKET]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("/abs/path.arrow", "must be relative"),
        ("../escape.arrow", r"'\.\.' component"),
        ("a//b.arrow", "empty"),
        ("_metadata", "reserved"),
        ("s3://b/x", "must be relative"),
        ("a\\b", "must be relative"),
        ("", "non-empty"),
        (".x.inprogress-1", "temp files"),
    ],
)
def test_bad_state_file_names(tmp_path, name, expected):
    with pytest.raises(ValueError, match=expected):
        write_state_file(str(tmp_path), name, b"x")
    with pytest.raises(ValueError, match=expected):
        StateHandle(name, 1, "crc32:00000000")


def test_bad_handles_and_metadata(tmp_path):
    location = str(tmp_path)
    with pytest.raises(ValueError, match="size must be an int >= 0"):
        StateHandle("a", -1, "crc32:00000000")
    with pytest.raises(ValueError, match="unknown checksum algorithm 'md5'"):
        StateHandle("a", 1, "md5:00")
    with pytest.raises(TypeError, match="got str"):
        write_state_file(location, "a", "text is not bytes")
    with pytest.raises(ValueError, match=r"metadata\['ids'\]\[1\] is a tuple"):
        write_metadata(location, {"ids": [1, (2, 3)]}, [])
    with pytest.raises(ValueError, match="has key 1 of type int"):
        write_metadata(location, {1: "x"}, [])
    with pytest.raises(ValueError, match="which JSON cannot hold"):
        write_metadata(location, {"x": float("nan")}, [])
    h = write_state_file(location, "a", b"x")
    with pytest.raises(ValueError, match="listed twice"):
        write_metadata(location, {}, [h, h])
    assert not os.path.exists(os.path.join(location, "_metadata"))
    with pytest.raises(ValueError, match="job_id must be"):
        CheckpointStorage(location, "a/b")
    with pytest.raises(ValueError, match="checkpoint_id must be an int >= 1"):
        CheckpointStorage(location, JOB).checkpoint_location(0)


def test_writing_into_a_discarded_local_location_fails(tmp_path):
    location = CheckpointStorage(str(tmp_path), JOB).checkpoint_location(1)
    shutil.rmtree(location)
    with pytest.raises(CheckpointStorageError, match="does not exist"):
        write_state_file(location, "late.arrow", b"too late")


def test_checksums():
    assert compute_checksum(b"") == "crc32:00000000"
    assert compute_checksum(b"hello") == "crc32:3610a686"
    assert compute_checksum(pa.py_buffer(b"hello")) == "crc32:3610a686"
    assert compute_checksum(b"abc", "sha256") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_docstring_examples():
    module = importlib.import_module("flowrun.core.runtime.checkpoint_storage")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 20
