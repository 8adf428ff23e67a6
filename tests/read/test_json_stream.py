"""Large JSON arrays are read element by element (read/json_stream.py): the same records as the whole-file
parse for a valid file, constant memory, and a broken element or structure reported where it is."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

import sftprep.read.json_stream as js
from sftprep.read.records import read_records

TRICKY = [
    {"messages": [{"role": "user", "content": 'brackets ] } [ { and "quotes", commas, \\\\ \\" escapes'}]},
    {"a": [1, [2, [3, {"b": "]"}]], {}], "c": "\u00e9\u4e2d\U0001f600"},
    "a string element",
    42,
    [1, 2],
    {"x": None, "y": 1.5e-7, "z": True},
    {},
]


def records(path: Path) -> list[tuple[int, Any, str | None]]:
    return [(r.line, r.data, r.error_kind) for r in read_records(path)]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_streamed_equals_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, indent: int | None, chunk: int) -> None:
    path = tmp_path / "a.json"
    path.write_text("\ufeff \n" + json.dumps(TRICKY, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    whole = records(path)
    monkeypatch.setattr(js, "WHOLE_MAX", 0)
    monkeypatch.setattr(js, "CHUNK", chunk)
    streamed = records(path)
    assert [(line, data) for line, data, _ in streamed] == [(line, data) for line, data, _ in whole]
    assert [k for *_, k in streamed] == [k for *_, k in whole] == [None, None, "not_object", "not_object",
                                                                  "not_object", None, None]  # fmt: skip


def test_elements_and_offsets() -> None:
    data = b'[ {"a": 1} ,2,"x,]" ,[3] ]'
    got = list(js.iter_elements(io.BytesIO(data)))
    assert [(i, raw) for i, _, raw in got] == [(1, b'{"a": 1}'), (2, b"2"), (3, b'"x,]"'), (4, b"[3]")]
    assert all(data[off : off + len(raw)] == raw for _, off, raw in got)
    assert list(js.iter_elements(io.BytesIO(b" [ ] "))) == []


@pytest.mark.parametrize(
    ("data", "says", "kept"),
    [
        (b'[{"a": 1}, {"a": 2}', "the array is not closed", 2),
        (b'[{"a": 1}, {"a": "cut', "a string is not closed", 1),
        (b'[{"a": 1} {"a": 2}]', "expected , or ] between elements", 1),
        (b'[{"a": 1},, {"a": 2}]', "an empty element", 1),
        (b'[{"a": 1},]', "a comma before ]", 1),
        (b'{"a": 1}', "expected a JSON array", 0),
    ],
)
def test_broken_structure(data: bytes, says: str, kept: int) -> None:
    out = []
    with pytest.raises(js.BrokenArray, match=says):
        for item in js.iter_elements(io.BytesIO(data)):
            out.append(item)
    assert len(out) == kept


def test_a_bad_element_is_one_reject_and_a_broken_end_one_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(js, "WHOLE_MAX_COMPRESSED", 0)
    path = tmp_path / "a.json.gz"
    path.write_bytes(gzip.compress(b'[{"a": 1}, {"a": NaN}, {"a": tru}, {"a": 4}, {"a": 5'))
    got = records(path)
    assert [(line, kind) for line, _, kind in got] == [(1, None), (2, "nan_literal"), (3, "invalid_json"),
                                                       (4, None), (5, "invalid_json")]  # fmt: skip
    last = list(read_records(path))[-1]
    assert "the array is not closed" in str(last.error) and "after element 4" in str(last.error)


def test_only_large_arrays_are_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    path.write_text('[\n  {"a": 1},\n  {"a": 2,}\n]\n')  # invalid: whole-file parse says so once, at line 1
    assert [(line, kind) for line, _, kind in records(path)] == [(1, "invalid_json")]
    monkeypatch.setattr(js, "WHOLE_MAX", 10)
    assert [(line, kind) for line, _, kind in records(path)] == [(1, None), (2, "invalid_json")]


def test_memory_holds_one_element_not_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(js, "WHOLE_MAX", 0)
    monkeypatch.setattr(js, "CHUNK", 4096)
    path = tmp_path / "big.json"
    row = json.dumps({"messages": [{"role": "user", "content": "x" * 1000}]})
    path.write_text("[" + ",".join([row] * 2000) + "]")  # 2 MB
    sizes = []
    real_more = js._Scanner.more

    def spy(self: js._Scanner) -> bool:
        sizes.append(len(self.buf))
        return real_more(self)

    monkeypatch.setattr(js._Scanner, "more", spy)
    assert sum(1 for _ in read_records(path)) == 2000
    assert max(sizes) < 3 * 4096  # the buffer never holds more than a chunk and an element
