"""TextFileSource: every line exactly once, in order, whatever the parallelism and read size."""

from __future__ import annotations

import os
import random

import pyarrow as pa
import pytest

from flowrun.core.connectors import line_blocks, text_file
from flowrun.core.connectors.line_blocks import PENDING, LineBlockReader
from flowrun.core.connectors.text_file import (
    LINE_SCHEMA,
    FileSplit,
    TextDecodeError,
    TextFileSource,
    list_input_files,
    reader_splits,
)


def reference_lines(data: bytes, charset: str = "utf-8") -> list[str]:
    """The specification, written the slow and obvious way."""
    if not data:
        return []
    parts = data.split(b"\n")
    if data.endswith(b"\n"):
        parts.pop()
    return [(p[:-1] if p.endswith(b"\r") else p).decode(charset) for p in parts]


def drain(reader, max_records: int = 1000, counts: dict | None = None) -> list[str]:
    """Poll until the reader is done; checks the per-poll contract on the way."""
    out: list[str] = []
    counts = {} if counts is None else counts
    reader.open()
    for _ in range(1_000_000):
        got = reader.poll(max_records)
        if got is None:
            reader.close()
            return out
        if isinstance(got, pa.RecordBatch):
            assert got.schema == LINE_SCHEMA
            got = got.column(0).to_pylist()
        assert len(got) <= max_records
        if not got:
            assert reader.next_wakeup() is not None, "[] must come with a reason to wake up"
            counts["empty"] = counts.get("empty", 0) + 1
        out.extend(got)
    raise AssertionError("reader never finished")


def _words(seed: int, count: int) -> bytes:
    rng = random.Random(seed)
    words = ["a", "bb", "", "ccc", "héllo", "日本語", "tab\there", "x" * 50, "🎉"]
    terminators = ["\n", "\r\n", "\n"]
    return "".join(rng.choice(words) + rng.choice(terminators) for _ in range(count)).encode()


SMALL_CASES = {
    "empty": b"",
    "single_newline": b"\n",
    "only_newlines": b"\n\n\n",
    "one_line_no_newline": b"abc",
    "one_line": b"abc\n",
    "no_trailing_newline": b"one\ntwo\nthree",
    "crlf": b"a\r\nb\r\n\r\nc",
    "crlf_trailing": b"a\r\nb\r\n",
    "lone_cr_is_data": b"a\rb\nc\r",
    "double_cr": b"x\r\r\ny\r\r",
    "empty_lines": b"a\n\n\nb\n\n",
    "starts_with_newlines": b"\n\nz",
    "unicode": "héllo\n日本語\n🎉 emoji\n\nçava".encode(),
    "words": _words(1, 60),
}


@pytest.fixture(params=["normal", "no_time_budget"])
def time_budget(request, monkeypatch):
    """``no_time_budget`` makes every poll yield after one read, exercising the [] path."""
    if request.param == "no_time_budget":
        monkeypatch.setattr(line_blocks, "_TIME_BUDGET", 0.0)
        monkeypatch.setattr(text_file, "_TIME_BUDGET", 0.0)
    return request.param


@pytest.mark.parametrize("case", sorted(SMALL_CASES))
@pytest.mark.parametrize("as_arrow", [False, True], ids=["rows", "arrow"])
def test_every_line_once_in_order_for_all_parallelisms(tmp_path, case, as_arrow, time_budget):
    data = SMALL_CASES[case]
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    expected = reference_lines(data)
    for chunk_size in (1, 2, 3, 7, 1 << 20):
        source = TextFileSource(str(path), as_arrow=as_arrow, chunk_size=chunk_size)
        for parallelism in range(1, 8):
            per_reader = [
                drain(source.create_reader(i, parallelism), max_records=3)
                for i in range(parallelism)
            ]
            # Splits are contiguous and in reader order, so concatenation is the file.
            combined = [line for lines in per_reader for line in lines]
            assert combined == expected, (case, chunk_size, parallelism, per_reader)


def test_every_split_boundary_of_line_block_reader(tmp_path):
    """Cut the file at every pair of byte offsets: lines split by first byte, never lost."""
    data = b"ab\n\ncde\r\nf\n\n\ngh"
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    expected = reference_lines(data)
    for cut in range(len(data) + 1):
        for chunk in (1, 2, 4, 64):
            blocks = []
            for start, end in ((0, cut), (cut, len(data))):
                reader = LineBlockReader(str(path), start, end, chunk)
                while (block := reader.read_block()) is not None:
                    if block is not PENDING:
                        blocks.append(block[1])
                reader.close()
            assert reference_lines(b"".join(blocks)) == expected, (cut, chunk)


def test_line_belongs_to_split_holding_its_first_byte(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"aa\nbb\ncc\n")  # lines start at 0, 3, 6
    cases = {(0, 3): [b"aa\n"], (1, 4): [b"bb\n"], (3, 4): [b"bb\n"], (4, 6): [], (4, 7): [b"cc\n"]}
    for (start, end), expected in cases.items():
        reader = LineBlockReader(str(path), start, end, 2)
        blocks = []
        while (block := reader.read_block()) is not None:
            if block is not PENDING:
                blocks.append(block[1])
        assert [b"".join(blocks)] == [b"".join(expected)], (start, end)


@pytest.mark.parametrize("as_arrow", [False, True], ids=["rows", "arrow"])
def test_huge_lines_across_many_chunks(tmp_path, as_arrow, time_budget):
    data = b"x" * 300_000 + b"\nshort\n" + "é".encode() * 100_000 + b"\r\n\n" + b"y" * 200_001
    path = tmp_path / "huge.txt"
    path.write_bytes(data)
    expected = reference_lines(data)
    counts: dict = {}
    for chunk_size in (4096, 65536, 1 << 20):
        source = TextFileSource(str(path), as_arrow=as_arrow, chunk_size=chunk_size)
        for parallelism in range(1, 8):
            combined = [
                line
                for i in range(parallelism)
                for line in drain(source.create_reader(i, parallelism), 2, counts)
            ]
            assert combined == expected, (chunk_size, parallelism)
    if time_budget == "no_time_budget":
        assert counts.get("empty", 0) > 0


def test_single_huge_line_without_newline(tmp_path):
    data = b"z" * 1_000_003
    path = tmp_path / "one.txt"
    path.write_bytes(data)
    source = TextFileSource(str(path), chunk_size=1000)
    for parallelism in (1, 2, 7):
        outputs = [drain(source.create_reader(i, parallelism)) for i in range(parallelism)]
        assert outputs[0] == ["z" * 1_000_003]
        assert all(out == [] for out in outputs[1:])


def test_large_random_file_rows_and_arrow_agree(tmp_path):
    data = _words(7, 50_000)
    path = tmp_path / "words.txt"
    path.write_bytes(data)
    expected = reference_lines(data)
    for as_arrow in (False, True):
        source = TextFileSource(str(path), as_arrow=as_arrow, chunk_size=10_000)
        for parallelism in (1, 3, 7):
            per_reader = [
                drain(source.create_reader(i, parallelism), 4096) for i in range(parallelism)
            ]
            assert [x for lines in per_reader for x in lines] == expected
            assert all(per_reader), "every reader of a big file gets work"


def test_directory_is_read_recursively_skipping_hidden_names(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "_temporary").mkdir()
    (tmp_path / ".git").mkdir()
    files = {
        "a.txt": b"a1\na2\na3\n",
        "sub/b.txt": b"b1\nb2",
        "empty.txt": b"",
        ".hidden.txt": b"no\n",
        "_SUCCESS": b"no\n",
        "sub/.part-0.inprogress": b"no\n",
        "_temporary/c.txt": b"no\n",
        ".git/d.txt": b"no\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    listed = [os.path.relpath(p, tmp_path) for p, _ in list_input_files(str(tmp_path))]
    assert listed == ["a.txt", "empty.txt", os.path.join("sub", "b.txt")]
    source = TextFileSource(str(tmp_path))
    for parallelism in range(1, 8):
        per_reader = [drain(source.create_reader(i, parallelism), 2) for i in range(parallelism)]
        combined = sorted(line for lines in per_reader for line in lines)
        assert combined == ["a1", "a2", "a3", "b1", "b2"]
        for lines in per_reader:  # file order within each reader
            a_lines = [x for x in lines if x.startswith("a")]
            b_lines = [x for x in lines if x.startswith("b")]
            assert a_lines == sorted(a_lines) and b_lines == sorted(b_lines)
            assert lines == a_lines + b_lines


def test_reader_splits_cover_each_file_exactly():
    files = [("x", 10), ("y", 3), ("z", 0)]
    for parallelism in range(1, 8):
        for path, size in files:
            ranges = [
                (s.start, s.end)
                for i in range(parallelism)
                for s in reader_splits(files, i, parallelism)
                if s.path == path
            ]
            covered = [b for start, end in ranges for b in range(start, end)]
            assert covered == list(range(size))
    assert reader_splits([("x", 10)], 1, 3) == [("x", 3, 6)]


def test_file_uri_and_missing_path(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("q\n")
    assert drain(TextFileSource("file://" + str(path)).create_reader(0, 1)) == ["q"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        TextFileSource(str(tmp_path / "missing"))


@pytest.mark.parametrize("as_arrow", [False, True], ids=["rows", "arrow"])
def test_invalid_utf8_names_file_and_byte_offset(tmp_path, as_arrow):
    path = tmp_path / "bad.txt"
    good = b"fine line\n" * 20_000  # 200_000 bytes, so the error is several chunks in
    path.write_bytes(good + b"ok \xff\xfe bad\nmore\n")
    source = TextFileSource(str(path), as_arrow=as_arrow, chunk_size=65536)
    with pytest.raises(TextDecodeError) as info:
        drain(source.create_reader(0, 1))
    assert info.value.offset == len(good) + 3
    assert str(path) in str(info.value) and f"byte offset {len(good) + 3}" in str(info.value)
    with pytest.raises(TextDecodeError, match=f"byte offset {len(good) + 3}"):
        for i in range(3):  # whichever reader owns the bad line reports the same offset
            drain(source.create_reader(i, 3))


def test_other_charsets(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\r\nnaïve\n".encode("latin-1"))
    for as_arrow in (False, True):
        reader = TextFileSource(str(path), "ISO-8859-1", as_arrow=as_arrow).create_reader(0, 1)
        assert drain(reader) == ["café", "naïve"]
    ascii_path = tmp_path / "ascii.txt"
    ascii_path.write_bytes(b"plain\nbad \xc3\xa9\n")
    with pytest.raises(TextDecodeError, match="byte offset 10"):
        drain(TextFileSource(str(ascii_path), "US-ASCII", as_arrow=True).create_reader(0, 1))
    with pytest.raises(ValueError, match="ASCII-compatible"):
        TextFileSource(str(path), "UTF-16")
    with pytest.raises(ValueError, match="unknown charset"):
        TextFileSource(str(path), "no-such-charset")


@pytest.mark.parametrize("as_arrow", [False, True], ids=["rows", "arrow"])
def test_snapshot_starts_at_next_unread_line(tmp_path, as_arrow):
    path = tmp_path / "f.txt"
    path.write_bytes(b"aa\nbbb\r\n\ncc")
    reader = TextFileSource(str(path), as_arrow=as_arrow).create_reader(0, 1)
    reader.open()
    assert reader.snapshot_state(1) == [FileSplit(str(path), 0, 11)]
    offsets = []
    while (got := reader.poll(1)) is not None:
        assert len(got) == 1
        offsets.append([split.start for split in reader.snapshot_state(2)])
    assert offsets == [[3], [8], [9], []]
    assert reader.snapshot_state(3) == []


def test_snapshot_of_a_later_split_starts_at_its_first_line(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"aaaa\nbb\ncc\n")  # 11 bytes; reader 1 of 2 owns [5, 11)
    reader = TextFileSource(str(path)).create_reader(1, 2)
    reader.open()
    assert reader.snapshot_state(1) == [FileSplit(str(path), 5, 11)]
    assert reader.poll(1) == ["bb"]
    assert reader.snapshot_state(2) == [FileSplit(str(path), 8, 11)]


def test_source_properties_and_pickling(tmp_path):
    import cloudpickle

    path = tmp_path / "f.txt"
    path.write_text("x\ny\n")
    source = TextFileSource(str(path), as_arrow=True)
    assert source.is_bounded() and source.max_parallelism() is None and source.produces_arrow()
    assert not TextFileSource(str(path)).produces_arrow()
    clone = cloudpickle.loads(cloudpickle.dumps(source))
    assert drain(clone.create_reader(0, 1)) == ["x", "y"]


def test_arrow_batches_hold_about_max_records_lines(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(10_000)))
    reader = TextFileSource(str(path), as_arrow=True).create_reader(0, 1)
    reader.open()
    sizes = []
    while (batch := reader.poll(1000)) is not None:
        sizes.append(batch.num_rows)
    assert sum(sizes) == 10_000 and max(sizes) == 1000
