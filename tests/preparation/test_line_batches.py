"""line_batches (JSONL lines left for the worker to parse) cut and parse exactly as batched(read_records):
the same records in the same batches, for every input kind and for batches ended by count or by bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftprep.preparation.sourcing import LineBatch, batched, line_batches
from sftprep.read.records import read_records


def _jsonl(tmp_path: Path) -> Path:
    good = [json.dumps({"messages": [{"role": "user", "content": f"q{i} " * (i % 7)}, {"role": "assistant",
            "content": "中文 answer " * i}]}, ensure_ascii=i % 2 == 0) for i in range(40)]  # fmt: skip
    bad = ['{"messages": [', "[1, 2]", '{"a": NaN}', "", "   ", '{"x": "\\ud800"}']
    lines = [x for pair in zip(good, bad * 7) for x in pair]
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n" + b'{"cut": tr')  # BOM, truncated end
    return p


def _array(tmp_path: Path) -> Path:
    p = tmp_path / "array.json"
    p.write_text(json.dumps([{"instruction": f"i{i}", "output": f"o{i}"} for i in range(25)] + [3]))
    return p


def _csv(tmp_path: Path) -> Path:
    p = tmp_path / "pairs.csv"
    p.write_text("prompt,completion\n" + "".join(f'p{i},"c{i}, more"\n' for i in range(30)))
    return p


def _pretty(tmp_path: Path) -> Path:
    p = tmp_path / "one.json"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}, indent=2))
    return p


@pytest.mark.parametrize("make", [_jsonl, _array, _csv, _pretty])
@pytest.mark.parametrize(("n", "max_bytes"), [(1, 1 << 20), (7, 1 << 20), (1000, 200), (5, 90), (1000, 1 << 20)])
def test_line_batches_are_the_parsed_batches(tmp_path: Path, make, n: int, max_bytes: int) -> None:
    path = make(tmp_path)
    expected = list(batched(read_records(path, "name.jsonl"), n, max_bytes))
    got = list(line_batches(path, "name.jsonl", n, max_bytes))
    assert all(isinstance(b, LineBatch) and b.source_file == "name.jsonl" for b in got)
    assert [b.records() for b in got] == expected
    assert [[r.size for r in b.records()] for b in got] == [[r.size for r in b] for b in expected]
    if make is _jsonl and (n < 1000 or max_bytes < 1000):
        assert len(expected) > 1  # the cut points were exercised


def test_a_jsonl_batch_travels_unparsed(tmp_path: Path) -> None:
    (batch,) = line_batches(_jsonl(tmp_path), "x", 1000)
    assert all(raw is not None and record is None for _, _, raw, record in batch.lines if raw)
    assert any(r.error_kind == "invalid_json" for r in batch.records())
