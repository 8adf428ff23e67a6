"""Reading input files: formats, line numbers, and every kind of bad input."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest

from sftprep.errors import InputError, SftprepError
from sftprep.read.records import (
    ERR_ENCODING,
    ERR_INVALID_JSON,
    ERR_NAN,
    ERR_NOT_OBJECT,
    ERR_READ,
    ERR_TRUNCATED,
    MAX_RAW_TEXT,
    iter_input_files,
    read_records,
)
from sftprep.types import RawRecord


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read(path: Path) -> list[RawRecord]:
    return list(read_records(path))


def kind(rec: RawRecord) -> str:
    assert rec.error is not None, rec
    return str(rec.error_kind)


# ---------------------------------------------------------------------------- good input


def test_jsonl_records_with_blank_lines_counted(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", '{"a": 1}\n\n   \n{"a": 2}\n{"a": 3}\n')
    recs = read(p)
    assert [(r.line, r.data) for r in recs] == [(1, {"a": 1}), (4, {"a": 2}), (5, {"a": 3})]
    assert all(r.error is None and r.source_file == str(p) for r in recs)


def test_source_file_is_the_path_as_given(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", '{"a": 1}\n')
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert read_records("a.jsonl").__next__().source_file == "a.jsonl"
    finally:
        os.chdir(old)


def test_json_array_uses_1_based_index(tmp_path: Path) -> None:
    p = write(tmp_path / "a.json", '\n  [{"a": 1},\n {"a": 2}]\n')
    assert [(r.line, r.data) for r in read(p)] == [(1, {"a": 1}), (2, {"a": 2})]


def test_last_line_without_newline_is_fine_when_valid(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", '{"a": 1}\n{"a": 2}')
    assert [r.data for r in read(p)] == [{"a": 1}, {"a": 2}]


def test_bom_is_stripped_jsonl_and_array(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", b'\xef\xbb\xbf{"a": 1}\n')
    assert read(p) == [RawRecord(str(p), 1, data={"a": 1})]
    q = write(tmp_path / "b.json", b'\xef\xbb\xbf[{"a": 1}]')
    assert read(q) == [RawRecord(str(q), 1, data={"a": 1})]


def test_crlf_line_ends(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", b'{"a": "x"}\r\n\r\n{"a": "y"}\r\n')
    assert [(r.line, r.data) for r in read(p)] == [(1, {"a": "x"}), (3, {"a": "y"})]


def test_empty_and_whitespace_files_yield_nothing(tmp_path: Path) -> None:
    assert read(write(tmp_path / "e.jsonl", b"")) == []
    assert read(write(tmp_path / "w.jsonl", b"\n  \n\t\n")) == []
    assert read(write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf\n")) == []


def test_gzipped_jsonl_and_array(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl.gz", gzip.compress(b'{"a": 1}\n\n{"a": 2}\n'))
    assert [(r.line, r.data) for r in read(p)] == [(1, {"a": 1}), (3, {"a": 2})]
    q = write(tmp_path / "b.json.gz", gzip.compress(b'[{"a": 1}, {"b": 2}]'))
    assert [(r.line, r.data) for r in read(q)] == [(1, {"a": 1}), (2, {"b": 2})]


def test_gzip_detected_by_magic_bytes_not_suffix(tmp_path: Path) -> None:
    p = write(tmp_path / "looks_plain.jsonl", gzip.compress(b'{"a": 1}\n'))
    assert [r.data for r in read(p)] == [{"a": 1}]
    q = write(tmp_path / "not_really.jsonl.gz", b'{"a": 1}\n')
    assert [r.data for r in read(q)] == [{"a": 1}]


def test_pretty_printed_single_object_is_one_record(tmp_path: Path) -> None:
    p = write(tmp_path / "obj.json", json.dumps({"messages": [], "x": 1}, indent=2))
    assert read(p) == [RawRecord(str(p), 1, data={"messages": [], "x": 1})]


def test_unicode_is_kept(tmp_path: Path) -> None:
    p = write(tmp_path / "u.jsonl", '{"t": "日本語 \u2028 ✓"}\n')
    assert read(p)[0].data == {"t": "日本語 \u2028 ✓"}


# ---------------------------------------------------------------------------- bad lines


def test_invalid_json_line_is_an_error_and_reading_goes_on(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", '{"a": 1}\n{"a": 1,, }\n{"a": 3}\n')
    recs = read(p)
    assert [r.line for r in recs] == [1, 2, 3]
    bad = recs[1]
    assert kind(bad) == ERR_INVALID_JSON
    assert bad.data is None
    assert "column 9" in bad.error  # type: ignore[operator]
    assert "Expecting" in bad.error  # type: ignore[operator]
    assert bad.raw_text == '{"a": 1,, }\n'
    assert recs[2].data == {"a": 3}


def test_truncated_last_line(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", '{"a": 1}\n{"a": "cut of')
    recs = read(p)
    assert recs[0].data == {"a": 1}
    assert kind(recs[1]) == ERR_TRUNCATED
    assert "truncated last line" in recs[1].error  # type: ignore[operator]
    assert recs[1].raw_text == '{"a": "cut of'
    assert recs[1].line == 2


def test_invalid_line_with_newline_is_not_called_truncated(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", '{"a": "cut of\n')
    assert kind(read(p)[0]) == ERR_INVALID_JSON


def test_non_utf8_bytes_name_the_offset(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", b'{"a": 1}\n{"a": "caf\xe9"}\n{"a": 3}\n')
    recs = read(p)
    assert kind(recs[1]) == ERR_ENCODING
    assert recs[1].line == 2
    assert "byte offset 10 of the line" in recs[1].error  # type: ignore[operator]
    assert "offset 19 in the file" in recs[1].error  # type: ignore[operator]
    assert "0xe9" in recs[1].error  # type: ignore[operator]
    assert recs[1].raw_text == '{"a": "caf\ufffd"}\n'
    assert recs[2].data == {"a": 3}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(tmp_path: Path, literal: str) -> None:
    p = write(tmp_path / "a.jsonl", f'{{"a": {literal}}}\n{{"a": 2}}\n')
    recs = read(p)
    assert kind(recs[0]) == ERR_NAN
    assert "NaN/Infinity is not valid JSON" in recs[0].error  # type: ignore[operator]
    assert literal in recs[0].error  # type: ignore[operator]
    assert recs[1].data == {"a": 2}


def test_nan_inside_an_array_rejects_only_that_element(tmp_path: Path) -> None:
    p = write(tmp_path / "a.json", '[{"a": 1}, {"a": [1, {"b": NaN}]}, {"a": 3}]')
    recs = read(p)
    assert [r.data for r in recs] == [{"a": 1}, None, {"a": 3}]
    assert kind(recs[1]) == ERR_NAN
    assert recs[1].line == 2


@pytest.mark.parametrize("line", ['"just a string"', "42", "null", "[1, 2]"])
def test_top_level_non_object_line(tmp_path: Path, line: str) -> None:
    p = write(tmp_path / "a.jsonl", f'{{"a": 1}}\n{line}\n')
    bad = read(p)[1]
    assert kind(bad) == ERR_NOT_OBJECT
    assert "expected a JSON object" in bad.error  # type: ignore[operator]
    assert bad.raw_text == f"{line}\n"


def test_top_level_non_object_array_element(tmp_path: Path) -> None:
    recs = read(write(tmp_path / "a.json", '[{"a": 1}, "x", [2]]'))
    assert recs[0].data == {"a": 1}
    assert [kind(r) for r in recs[1:]] == [ERR_NOT_OBJECT, ERR_NOT_OBJECT]
    assert [r.line for r in recs] == [1, 2, 3]
    assert recs[1].raw_text == '"x"'


def test_invalid_array_file_is_one_error_at_line_1(tmp_path: Path) -> None:
    p = write(tmp_path / "a.json", '[\n  {"a": 1},\n  {"a": 2,}\n]\n')
    recs = read(p)
    assert len(recs) == 1
    assert recs[0].line == 1
    assert kind(recs[0]) == ERR_INVALID_JSON
    assert "line 3 column 11" in recs[0].error  # type: ignore[operator]


def test_non_utf8_array_file(tmp_path: Path) -> None:
    recs = read(write(tmp_path / "a.json", b'[{"a": "\xff"}]'))
    assert len(recs) == 1
    assert kind(recs[0]) == ERR_ENCODING
    assert "byte offset 8" in recs[0].error  # type: ignore[operator]


def test_raw_text_is_truncated(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", '{"a": "' + "x" * 10_000 + "\n")
    rec = read(p)[0]
    assert kind(rec) == ERR_INVALID_JSON
    assert rec.raw_text is not None
    assert len(rec.raw_text) == MAX_RAW_TEXT


def test_corrupt_gzip_stream_becomes_an_error_record(tmp_path: Path) -> None:
    blob = gzip.compress(b"".join(b'{"a": %d}\n' % (i * 7919 % 100003) for i in range(200_000)))
    p = write(tmp_path / "a.jsonl.gz", blob[: len(blob) // 2])
    recs = read(p)
    assert len(recs) > 1000
    assert kind(recs[-1]) == ERR_READ
    assert "could not be read to the end" in recs[-1].error  # type: ignore[operator]
    good = recs[:-1]
    assert all(r.error is None for r in good[:-1])  # the last one read may be a cut-off line
    assert [r.line for r in good] == list(range(1, len(good) + 1))
    assert recs[-1].line == len(good) + 1
    assert all(r.error is None for r in recs[:-1])


def test_50mb_single_line_record_is_fast(tmp_path: Path) -> None:
    big = "y" * (50 * 1024 * 1024)
    p = tmp_path / "big.jsonl"
    with p.open("w", encoding="utf-8") as f:
        f.write('{"a": 1}\n{"messages": [{"role": "user", "content": "')
        f.write(big)
        f.write('"}]}\n{"a": 3}\n')
    start = time.perf_counter()
    recs = read(p)
    elapsed = time.perf_counter() - start
    assert [r.line for r in recs] == [1, 2, 3]
    assert len(recs[1].data["messages"][0]["content"]) == len(big)
    assert elapsed < 5, f"reading a 50 MB line took {elapsed:.1f}s"


# ---------------------------------------------------------------------------- bad paths


def test_missing_path_raises_input_error_eagerly(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        read_records(tmp_path / "nope.jsonl")  # no iteration needed
    msg = str(info.value)
    assert "nope.jsonl" in msg and "does not exist" in msg and "fix:" in msg and "expected" in msg
    assert info.value.exit_code == 2
    assert isinstance(info.value, SftprepError)


def test_directory_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        read_records(tmp_path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_raises_input_error(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", '{"a": 1}\n')
    p.chmod(0)
    try:
        with pytest.raises(InputError, match="cannot be read"):
            read_records(p)
    finally:
        p.chmod(0o644)


def test_iter_input_files_lists_every_bad_path(tmp_path: Path) -> None:
    good = write(tmp_path / "a.jsonl", '{"a": 1}\n')
    with pytest.raises(InputError) as info:
        (tmp_path / "empty").mkdir()
        iter_input_files([good, tmp_path / "missing1.jsonl", tmp_path / "empty", str(tmp_path / "missing2.json")])
    msg = str(info.value)
    assert "missing1.jsonl" in msg and "missing2.json" in msg and "is a directory" in msg
    assert len(msg.splitlines()) == 3  # one line per bad path, none for the good one
    assert iter_input_files([good, str(good)]) == [good, good]


def test_iter_input_files_needs_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no input files"):
        iter_input_files([])


def test_every_error_has_its_kind_apart_from_its_text(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"a": 1\n[1]\n{"x": NaN}\n\xe9\n')
    recs = list(read_records(p))
    assert [r.error_kind for r in recs] == ["invalid_json", "not_object", "nan_literal", "bad_encoding"]
    assert all(r.error and not r.error.startswith(r.error_kind + ":") for r in recs)


def test_unreadable_formats_are_refused_up_front(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"messages": []}\n')
    (tmp_path / "b.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 10)
    (tmp_path / "c.parquet.gz").write_bytes(gzip.compress(b"PAR1" + b"\x00" * 10))
    (tmp_path / "d.csv").write_text("instruction,output\nq,a\n")  # read now
    with pytest.raises(InputError) as e:
        iter_input_files([tmp_path / n for n in ("a.jsonl", "b.zip", "c.parquet.gz", "d.csv")])
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and "b.zip' is a zip archive" in lines[0]
    assert "c.parquet.gz' is a gzip-compressed Parquet file" in lines[1]
    assert all("fix: " in line for line in lines)
