"""The readers (issue #13): Parquet, Arrow IPC (file and stream), datasets.save_to_disk directories, CSV/TSV,
compressed JSONL/CSV, directories and globs. The same rows in any container are the same records; positions
are 1-based row numbers; nested columns come through unchanged; bad rows are rejects, not crashes."""

from __future__ import annotations

import bz2
import csv
import datetime as dt
import gzip
import json
import lzma
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sftprep.errors import InputError
from sftprep.read import columnar
from sftprep.read.inputs import iter_input_files
from sftprep.read.records import iter_raw_lines, read_records
from sftprep.types import RawRecord

CHAT = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "add", "arguments": "{}"}}]},
        ],
        "tools": '[{"name": "add"}]',
    },
    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 1}]},
]


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The rows as columns of every key (pa.Table.from_pylist and Dataset.from_list take the first row's keys)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in keys}


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pydict(columns(rows))


def data(path: Path) -> list[Any]:
    return [r.data for r in read_records(path)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def without_nulls(v: Any) -> Any:
    """What a JSON record looks like after Arrow (absent = null, dropped)."""
    if isinstance(v, dict):
        return {k: without_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [without_nulls(x) for x in v]
    return v


# ---------------------------------------------------------------------------- Parquet and Arrow


def test_parquet_rows_are_records_numbered_from_1_across_row_groups(tmp_path: Path) -> None:
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet", row_group_size=3)
    assert pq.ParquetFile(tmp_path / "a.parquet").num_row_groups == 4
    recs = list(read_records(tmp_path / "a.parquet"))
    assert [r.line for r in recs] == list(range(1, 11))
    assert [r.data for r in recs] == rows
    assert all(r.size > 0 and r.source_file == str(tmp_path / "a.parquet") for r in recs)


def test_nested_columns_come_through_unchanged_nulls_dropped(tmp_path: Path) -> None:
    table = table_of(CHAT)  # messages: list<struct<role, content, tool_calls, weight>>
    assert pa.types.is_struct(table.schema.field("messages").type.value_type)
    pq.write_table(table, tmp_path / "a.parquet")
    assert data(tmp_path / "a.parquet") == [without_nulls(r) for r in CHAT]


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_arrow_ipc_file_and_stream(tmp_path: Path, kind: str) -> None:
    table = table_of(CHAT)
    path = tmp_path / "a.arrow"
    new = pa.ipc.new_file if kind == "file" else pa.ipc.new_stream
    with pa.OSFile(str(path), "wb") as sink, new(sink, table.schema) as w:
        for batch in table.to_batches(max_chunksize=2):
            w.write_batch(batch)
    recs = list(read_records(path))
    assert [r.line for r in recs] == [1, 2, 3]
    assert [r.data for r in recs] == [without_nulls(r) for r in CHAT]


def test_json_typed_values_are_decoded_with_their_key_order(tmp_path: Path) -> None:
    objs = [{"z": 1, "a": None}, {"b": [1, 2]}]
    storage = pa.array([json.dumps(o) for o in objs], pa.string())
    table = pa.table({"tools": pa.ExtensionArray.from_storage(pa.json_(), storage)})
    pq.write_table(table, tmp_path / "a.parquet")
    got = data(tmp_path / "a.parquet")
    assert got == [{"tools": objs[0]}, {"tools": objs[1]}]
    assert list(got[0]["tools"]) == ["z", "a"]  # JSON's own nulls and order kept


def test_non_json_values_become_json(tmp_path: Path) -> None:
    table = pa.table(
        {
            "when": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5)], pa.timestamp("s")),
            "blob": pa.array([b"text"], pa.binary()),
            "raw": pa.array([b"\xff\x00"], pa.binary()),
            "meta": pa.array([[("k", "v")]], pa.map_(pa.string(), pa.string())),
        }
    )
    pq.write_table(table, tmp_path / "a.parquet")
    (rec,) = data(tmp_path / "a.parquet")
    assert rec == {"when": "2024-01-02T03:04:05", "blob": "text", "raw": "base64:/wA=", "meta": {"k": "v"}}
    json.dumps(rec)  # what rejects.jsonl needs


def test_parquet_is_read_one_row_group_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"instruction": "q" * 100, "output": "a"} for _ in range(50)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet", row_group_size=10)
    asked: list[list[int]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["row_groups"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("a whole-table read"))
    it = iter(read_records(tmp_path / "a.parquet"))
    next(it)
    assert asked == [[0]]  # the first record needs the first row group only
    assert len(list(it)) == 49 and asked == [[g] for g in range(5)]


def test_damaged_parquet_is_a_read_error_record(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist([{"instruction": "q", "output": "a"}] * 5), tmp_path / "a.parquet")
    raw = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "b.parquet").write_bytes(raw[:4] + b"\x00" * 40 + raw[44:])  # column data damaged
    recs = list(read_records(tmp_path / "b.parquet"))
    assert recs[-1].error_kind == "read_error" and "could not be read to the end" in str(recs[-1].error)


def test_save_to_disk_directory_and_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(columns(CHAT))
    ds.save_to_disk(str(tmp_path / "ds"), max_shard_size="1KB")
    assert len(columnar.dataset_dir_files(tmp_path / "ds")) >= 1
    assert iter_input_files([tmp_path / "ds"]) == [tmp_path / "ds"]
    recs = list(read_records(tmp_path / "ds"))
    assert [r.line for r in recs] == [1, 2, 3] and [r.data for r in recs] == [without_nulls(r) for r in CHAT]
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"DatasetDict.save_to_disk \(splits: .*\); fix: pass one split, e\.g\."):
        iter_input_files([tmp_path / "dd"])


# ---------------------------------------------------------------------------- CSV, TSV, compression


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


@pytest.mark.parametrize(("suffix", "delimiter"), [(".csv", ","), (".tsv", "\t")])
def test_csv_and_tsv_rows_with_quoted_newlines(tmp_path: Path, suffix: str, delimiter: str) -> None:
    rows = [["instruction", "output"], ["line one\nline two", "a, b"], ["q2", "a2"]]
    path = write_csv(tmp_path / f"a{suffix}", rows, delimiter)
    recs = list(read_records(path))
    assert [r.line for r in recs] == [1, 2]
    assert [r.data for r in recs] == [
        {"instruction": "line one\nline two", "output": "a, b"},
        {"instruction": "q2", "output": "a2"},
    ]


def test_csv_bad_rows_are_rejects_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"instruction,output\nq1,a1\nq2,a2,extra\nq3,\xe9t\xe9\nq4,a4\n")
    recs = list(read_records(path))
    assert [(r.line, r.error_kind) for r in recs] == [(1, None), (2, "invalid_row"), (3, "bad_encoding"), (4, None)]
    assert "0xe9" in str(recs[2].error)


def test_csv_cells_can_be_long_and_hold_json(tmp_path: Path) -> None:
    long = "x" * 300_000  # over csv's default field limit
    messages = json.dumps([{"role": "user", "content": long}, {"role": "assistant", "content": "ok"}])
    path = write_csv(tmp_path / "a.csv", [["messages", "id"], [messages, "1"]])
    (rec,) = read_records(path)
    assert rec.data == {"messages": messages, "id": "1"}  # decoded by the column map (read/columns.py)


@pytest.mark.parametrize(
    "compress",
    [gzip.compress, bz2.compress, lzma.compress, "zstd"],
    ids=["gzip", "bz2", "xz", "zstd"],
)
def test_compressed_jsonl_and_csv(tmp_path: Path, compress: Any) -> None:
    def packed(raw: bytes, path: Path) -> Path:
        if compress == "zstd":
            with pa.output_stream(str(path), compression="zstd") as f:
                f.write(raw)
        else:
            path.write_bytes(compress(raw))
        return path

    jsonl = b"".join(json.dumps(r).encode() + b"\n" for r in CHAT)
    assert data(packed(jsonl, tmp_path / "a.jsonl.z")) == CHAT
    assert data(packed(b'[{"a": 1}, {"a": 2}]', tmp_path / "b.json.z")) == [{"a": 1}, {"a": 2}]
    assert data(packed(b"instruction,output\nq,a\n", tmp_path / "c.csv.z")) == [{"instruction": "q", "output": "a"}]


def test_truncated_zstd_is_a_read_error_after_the_lines_read(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.zst"
    with pa.output_stream(str(path), compression="zstd") as f:
        f.write(b"".join(json.dumps({"i": i, "pad": "p" * 50}).encode() + b"\n" for i in range(2000)))
    path.write_bytes(path.read_bytes()[:-20])
    recs = list(read_records(path))
    assert recs[-1].error_kind == "read_error" and all(r.error is None for r in recs[:-1])


# ---------------------------------------------------------------------------- the same rows, any container


def test_the_same_rows_are_the_same_records_in_every_container(tmp_path: Path) -> None:
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(7)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet", row_group_size=2)
    write_csv(tmp_path / "a.csv", [list(rows[0])] + [list(r.values()) for r in rows])
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(tmp_path / "a.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    got = {p.suffix: [(r.line, r.data) for r in read_records(p)] for p in sorted(tmp_path.iterdir())}
    assert all(v == got[".jsonl"] for v in got.values()), got


def test_ray_walk_makes_the_same_records(tmp_path: Path) -> None:
    pq.write_table(table_of(CHAT), tmp_path / "a.parquet")
    walked = [rec for _, _, raw, rec in iter_raw_lines(tmp_path / "a.parquet", "a") if raw is None]
    assert [r.data for r in walked] == [r.data for r in read_records(tmp_path / "a.parquet", "a")]
    assert all(isinstance(r, RawRecord) for r in walked)


# ---------------------------------------------------------------------------- directories and globs


def test_a_directory_is_its_data_files_in_name_order(tmp_path: Path) -> None:
    d = tmp_path / "shards"
    d.mkdir()
    for i in (2, 0, 1):
        pq.write_table(pa.Table.from_pylist([{"instruction": f"q{i}", "output": "a"}]), d / f"part-{i}.parquet")
    (d / "README.md").write_text("not data")
    (d / ".hidden.parquet").write_text("x")
    assert iter_input_files([d]) == [d / f"part-{i}.parquet" for i in range(3)]


def test_directory_problems_are_named_with_a_fix(tmp_path: Path) -> None:
    (tmp_path / "mixed").mkdir()
    write_jsonl(tmp_path / "mixed" / "a.jsonl", CHAT)
    pq.write_table(table_of(CHAT), tmp_path / "mixed" / "b.parquet")
    (tmp_path / "nested" / "train").mkdir(parents=True)
    write_jsonl(tmp_path / "nested" / "train" / "a.jsonl", CHAT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as e:
        iter_input_files([tmp_path / "mixed", tmp_path / "nested", tmp_path / "empty"])
    lines = str(e.value).splitlines()
    assert "several formats (1 .jsonl, 1 .parquet); fix: pass the files of one format" in lines[0]
    assert "fix: pass a glob of the files in its subdirectories" in lines[1] and "/**/*.jsonl'" in lines[1]
    assert "holds no data files" in lines[2]


def test_an_sftprep_output_directory_is_not_an_input(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text("{}")
    pq.write_table(pa.Table.from_pylist([{"input_ids": [1]}]), tmp_path / "out" / "data-00000.parquet")
    with pytest.raises(InputError, match="written by `sftprep prepare`"):
        iter_input_files([tmp_path / "out"])


def test_glob_patterns_expand_sorted_and_recursive(tmp_path: Path) -> None:
    for sub in ("b", "a"):
        (tmp_path / sub).mkdir()
        write_jsonl(tmp_path / sub / "x.jsonl", CHAT)
    assert iter_input_files([str(tmp_path / "*" / "x.jsonl")]) == [
        tmp_path / "a" / "x.jsonl",
        tmp_path / "b" / "x.jsonl",
    ]
    assert len(iter_input_files([str(tmp_path / "**" / "*.jsonl")])) == 2
    with pytest.raises(InputError, match="as a glob, matches no file"):
        iter_input_files([str(tmp_path / "*.parquet")])
