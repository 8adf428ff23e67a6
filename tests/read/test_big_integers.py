"""Integers over 64 bits stay integers, as json.loads (and transformers' render of the record) keeps them:
orjson, the JSONL fast path, would read them as floats."""

from __future__ import annotations

import json
from pathlib import Path

from sftprep.read.records import parse_line, read_records

BIG = 123456789012345678901234567890


def test_a_jsonl_line_keeps_an_integer_over_64_bits() -> None:
    line = json.dumps({"messages": [{"role": "user", "content": "x"}], "id": BIG, "ok": 2**63 - 1, "f": 0.5})
    record = parse_line(line.encode() + b"\n", 1, 0, "a.jsonl")
    assert record.data == json.loads(line)
    assert type(record.data["id"]) is int and record.data["id"] == BIG
    assert record.size == len(line) + 1


def test_tool_call_arguments_keep_it_through_a_file(tmp_path: Path) -> None:
    call = {"type": "function", "function": {"name": "f", "arguments": {"n": BIG, "m": -BIG}}}
    rec = {
        "messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    }
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(rec) + "\n" + json.dumps({"a": 1}) + "\n")
    first, second = read_records(path)
    args = first.data["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert args == {"n": BIG, "m": -BIG} and all(type(v) is int for v in args.values())
    assert second.data == {"a": 1}


def test_long_digit_runs_in_strings_read_alike() -> None:
    line = json.dumps({"s": "0" * 40, "u": "١٢٣" * 10})
    assert parse_line(line.encode() + b"\n", 1, 0, "a").data == json.loads(line)
