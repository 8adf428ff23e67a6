"""rejects.jsonl lines: orjson's where it writes the row exactly, json's (as before) where it would not."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq

from sftprep.preparation.output import (
    DICTIONARY_COLUMNS,
    SCHEMA,
    RejectWriter,
    ShardWriter,
    reject_line,
    reject_row_line,
)
from sftprep.types import Reject


def test_plain_rows_are_compact_utf8_json() -> None:
    row = {"reason": "x", "record": {"messages": [{"role": "user", "content": "héllo 你好", "w": None}]}}
    line = reject_line(row)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == row
    assert "你好".encode() in line  # not \\u-escaped


def test_non_finite_floats_are_kept_as_json_writes_them() -> None:
    row = {"record": {"score": math.nan, "b": [1.5, math.inf], "c": None}}
    line = reject_line(row)
    assert b"NaN" in line and b"Infinity" in line  # orjson would have written null
    back = json.loads(line)
    assert math.isnan(back["record"]["score"]) and back["record"]["b"][1] == math.inf


def test_a_non_finite_float_is_found_wherever_it_is_nested() -> None:
    import numpy as np

    deep = {"m": [{"a": None, "t": ({"x": [1, "s", True, {"y": (None, np.float64("-inf"))}]},)}]}
    assert b"-Infinity" in reject_line({"record": deep})
    assert b"NaN" in reject_line({"record": {"m": [{"a": None}, [None, float("nan")]]}})
    finite = {"m": [{"a": None, "t": [{"x": [1, "s", True, {"y": [None, 2.5]}]}]}]}
    assert reject_line({"record": finite}) == json.dumps({"record": finite}, separators=(",", ":")).encode() + b"\n"


def test_integers_over_64_bits_are_kept() -> None:
    assert json.loads(reject_line({"n": 2**70})) == {"n": 2**70}


def test_writer_resumes_after_kept_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "rejects.jsonl"
    w = RejectWriter(path)
    w.add(Reject("a.jsonl", 1, "invalid_json", "a.jsonl:1: bad", raw_text="{"))
    kept = w.tell()
    w.add(Reject("a.jsonl", 2, "invalid_json", "a.jsonl:2: bad", raw_text="{"))
    w.close()
    w = RejectWriter(path, keep_bytes=kept)
    w.add(Reject("a.jsonl", 3, "no_assistant_turn", "a.jsonl:3: none", record={"x": 1}), turn=0)
    w.close()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["source_line"] for r in rows] == [1, 3]
    assert rows[1] == {
        "source_file": "a.jsonl",
        "source_line": 3,
        "reason": "no_assistant_turn",
        "message": "a.jsonl:3: none",
        "turn": 0,
        "record": {"x": 1},
    }


def test_token_columns_are_not_dictionary_encoded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    w = ShardWriter(tmp_path, shard_size=10)
    for k in range(3):
        w.add(np.arange(5, dtype=np.int32) + k, np.full(5, -100, np.int32), "a.jsonl", k + 1, -1)
    w.flush()
    (shard,) = sorted(tmp_path.glob("*.parquet"))
    meta = pq.ParquetFile(shard).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert not any("DICTIONARY" in str(e) for k, e in encodings.items() if k.startswith(("input_ids", "labels")))
    assert any("DICTIONARY" in str(e) for k, e in encodings.items() if k == "source_file")
    assert set(DICTIONARY_COLUMNS) <= set(SCHEMA.names)
    assert pq.read_table(shard).column("input_ids").to_pylist()[2] == [2, 3, 4, 5, 6]


def test_a_worker_sends_reject_lines_not_records(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """run._run_in_worker: the rejects.jsonl lines are made in the worker (the same bytes RejectWriter.add
    writes); the Reject objects that travel back quote no record."""
    from dummy_tokenizer import write_dummy_tokenizer

    import sftprep.preparation.run as run
    from sftprep.preparation.options import PrepareOptions
    from sftprep.preparation.pipeline import Preparer, load_components
    from sftprep.preparation.sourcing import line_batches

    src = tmp_path / "in.jsonl"
    good = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    src.write_text(json.dumps(good) + "\n" + json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n{\n")
    opts = PrepareOptions(inputs=[str(src)], tokenizer=str(write_dummy_tokenizer(tmp_path / "tok")), template="chatml")
    preparer = Preparer(opts, *load_components(opts))
    (batch,) = line_batches(src, "in.jsonl", 100)
    expected = preparer.run_batch(batch.records())
    monkeypatch.setattr(run, "_WORKERS", [preparer])  # what _init_worker sets in a worker process
    result = run._run_in_worker(0, batch)
    assert len(result.rejects) == len(expected.rejects) == 2 and len(result.examples) == 1
    assert all(r.record is None and r.raw_text is None for r in result.rejects)
    assert result.reject_lines == [reject_row_line(r, r.turn) for r in expected.rejects]
    rows = [json.loads(line) for line in result.reject_lines]
    assert rows[0]["record"] == {"messages": [{"role": "user", "content": "x"}]} and rows[1]["raw_text"] == "{\n"
