"""Input formats (issue #13): those sftprep reads give the examples of the same records as JSONL; those it
recognises and does not read are refused up front with a conversion command that works (applied here)."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import GOOD, write_jsonl
from hint_helpers import ALPACA, fails, ok, run_hint, sftprep, write_parquet


def _arrow(p: Path) -> None:
    table = pa.Table.from_pylist(GOOD)
    with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def _arrow_stream(p: Path) -> None:
    table = pa.Table.from_pylist(GOOD)
    with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)


def _csv(p: Path, dialect: str = "excel") -> None:
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, ["instruction", "input", "output"], dialect=dialect)
        w.writeheader()
        w.writerows(ALPACA)


def _jsonl_bytes() -> bytes:
    return "".join(json.dumps(r) + "\n" for r in GOOD).encode()


def _packed(make: Callable[[Path], None], compress: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """`make` writes the file without the compression suffix; the result is it compressed."""

    def write(p: Path) -> None:
        make(p.with_suffix(""))
        p.write_bytes(compress(p.with_suffix("").read_bytes()))

    return write


def _zstd_frame(raw: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as f:
        f.write(raw)
    return sink.getvalue().to_pybytes()


def _zstd(p: Path, raw: bytes) -> None:
    p.write_bytes(_zstd_frame(raw))


def _examples(out: Path) -> list[list[int]]:
    return [ids for f in sorted(out.glob("data-*.parquet")) for ids in pq.read_table(f)["input_ids"].to_pylist()]


# Formats read directly (issue #13): each gives the examples of the same records as JSONL.
READ: dict[str, tuple[str, Callable[[Path], None]]] = {
    "parquet": ("data.parquet", write_parquet),
    "arrow": ("data.arrow", _arrow),
    "arrow-stream": ("data-00000-of-00001.arrow", _arrow_stream),
    "csv": ("data.csv", _csv),
    "tsv": ("data.tsv", lambda p: _csv(p, "excel-tab")),
    "csv.gz": ("data.csv.gz", _packed(_csv, gzip.compress)),
    "bz2": ("data.jsonl.bz2", lambda p: p.write_bytes(bz2.compress(_jsonl_bytes()))),
    "xz": ("data.jsonl.xz", lambda p: p.write_bytes(lzma.compress(_jsonl_bytes()))),
    "zstd": ("data.jsonl.zst", lambda p: _zstd(p, _jsonl_bytes())),
    "parquet named .jsonl": ("data.jsonl", write_parquet),  # sniffed by its bytes, not its name
}  # fmt: skip


@pytest.mark.parametrize("kind", list(READ))
def test_formats_are_read_as_their_records(tmp_path: Path, kind: str) -> None:
    name, make = READ[kind]
    make(tmp_path / name)
    ok(sftprep(tmp_path, "prepare", name, "-o", "out"), 2, tmp_path / "out")
    reference = ALPACA if kind in ("csv", "tsv", "csv.gz") else GOOD
    write_jsonl(tmp_path / "ref.jsonl", reference)
    ok(sftprep(tmp_path, "prepare", "ref.jsonl", "-o", "ref"), 2, tmp_path / "ref")
    assert _examples(tmp_path / "out") == _examples(tmp_path / "ref")


# Formats sftprep recognises and does not read: refused up front with a command that converts them.
FORMATS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "utf-16": ("data.jsonl", lambda p: p.write_text(_jsonl_bytes().decode(), encoding="utf-16")),
    "parquet.gz": ("data.parquet.gz", _packed(write_parquet, gzip.compress)),
    "arrow.zst": ("data.arrow.zst", _packed(_arrow, _zstd_frame)),
    "parquet.xz": ("data.parquet.xz", _packed(write_parquet, lzma.compress)),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(FORMATS))
def test_unreadable_format_is_refused_with_a_working_conversion(tmp_path: Path, kind: str) -> None:
    name, make = FORMATS[kind]
    make(tmp_path / name)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}  # (parquet.gz: data.parquet is there too)
    err = fails(sftprep(tmp_path, "prepare", name, "-o", "out"), 2, name, "which sftprep does not read")
    assert not (tmp_path / "out").exists()
    m = re.search(r"fix: (.*), then pass (\S+)$", err, re.M)
    assert m, err
    for p in before:  # the decompressed file the conversion writes must not be one that exists
        if p.name != name:
            p.unlink()
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    run_hint(tmp_path, m.group(1))
    assert {p: p.read_bytes() for p in before} == before  # the conversion wrote only new files
    ok(sftprep(tmp_path, "prepare", m.group(2), "-o", "out"), 2, tmp_path / "out")


def test_zip_input_is_refused_with_a_working_command(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        z.writestr("inner/data.jsonl", _jsonl_bytes())
    err = fails(sftprep(tmp_path, "prepare", "data.zip", "-o", "out"), 2, "a zip archive", "pass the files inside it")
    run_hint(tmp_path, re.search(r"fix: (.*), then pass", err).group(1))  # type: ignore[union-attr]
    ok(sftprep(tmp_path, "prepare", "data_files/inner/data.jsonl", "-o", "out"), 2, tmp_path / "out")


# ---------------------------------------------------------------------------- paths and OUT_DIR
