"""Columnar inputs, streamed: Parquet (row group by row group, with pyarrow), Arrow IPC files and streams
(record batch by record batch, read from the file, never memory-mapped), and `datasets.save_to_disk`
directories (the Arrow files its state.json lists). Memory holds one row group or record batch, sliced into
rows of `ROWS` at a time.

Each row becomes a RawRecord whose `line` is its 1-based row number in the input (across every Arrow file of
a save_to_disk directory), so the same rows give the same records, whatever the container:

- Arrow cannot tell an absent field from a null one, so nulls are dropped from every object (top-level
  columns and struct fields: a JSON record without `system` and a Parquet row whose `system` is null are the
  same record). Nulls inside lists are kept (positions matter).
- Values of Arrow's JSON type (`arrow.json`: `datasets` stores objects whose keys vary from row to row in it)
  are decoded: they come through exactly as the JSON held them (key order and nulls included).
- Values JSON has no type for become JSON ones: maps -> objects, bytes -> text (UTF-8) or base64, dates and
  times -> ISO 8601 text, decimals -> text, so every record can be written to rejects.jsonl.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sftprep.types import RawRecord

ROWS = 256  # rows turned into Python objects at a time
STATE = "state.json"  # what `datasets.Dataset.save_to_disk` writes beside its Arrow files
DATASET_DICT = "dataset_dict.json"  # `datasets.DatasetDict.save_to_disk`: one such directory per split


def is_dataset_dir(path: Path) -> bool:
    """A directory written by `datasets.Dataset.save_to_disk`."""
    return (path / STATE).is_file() and any(path.glob("*.arrow"))


def dataset_dir_files(path: Path) -> list[Path]:
    """The Arrow files of a save_to_disk directory, in its order (state.json `_data_files`)."""
    try:
        state = json.loads((path / STATE).read_text("utf-8"))
        names = [f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        names = []
    return [path / n for n in names] if names else sorted(path.glob("*.arrow"))


def dataset_dict_splits(path: Path) -> list[str]:
    """The split names of a DatasetDict.save_to_disk directory ([] when `path` is not one)."""
    try:
        splits = json.loads((path / DATASET_DICT).read_text("utf-8")).get("splits", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [str(s) for s in splits if (path / str(s)).is_dir()]


# ---------------------------------------------------------------------------- batches


def parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows, one row group at a time (never the whole file)."""
    with pq.ParquetFile(path, memory_map=False, pre_buffer=False, buffer_size=1 << 20) as f:
        for group in range(f.num_row_groups):
            yield from f.iter_batches(batch_size=ROWS, row_groups=[group], use_threads=False)


def arrow_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """An Arrow IPC file or stream, one record batch at a time, read from the file (not memory-mapped:
    memory stays at one batch)."""
    with pa.OSFile(str(path), "rb") as source:
        magic = source.read(6)
        source.seek(0)
        if magic == b"ARROW1":
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        else:
            yield from pa.ipc.open_stream(source)


def dataset_dir_batches(path: Path) -> Iterator[pa.RecordBatch]:
    for f in dataset_dir_files(path):
        yield from arrow_batches(f)


# ---------------------------------------------------------------------------- rows


def iter_rows(batches: Iterator[pa.RecordBatch], source: str) -> Iterator[RawRecord]:
    """RawRecords of 1-based row numbers from record batches (sliced: at most ROWS rows in Python at once)."""
    line = 0
    clean: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    schema: pa.Schema | None = None
    for batch in batches:
        if batch.schema != schema:
            schema, clean = batch.schema, _cleaner(batch.schema)
        for start in range(0, batch.num_rows, ROWS):
            part = batch.slice(start, ROWS)
            size = max(1, part.nbytes // max(1, part.num_rows))  # bounds batches as JSONL line lengths do
            for row in part.to_pylist():
                line += 1
                yield RawRecord(source, line, data=clean(row) if clean else row, size=size)


def _cleaner(schema: pa.Schema) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Per-row conversion for this schema: nulls dropped, JSON-typed values decoded, other non-JSON values
    converted (nested values are walked only where the schema has something to convert)."""
    fields = [(f.name, _converter(f.type)) for f in schema]
    if all(conv is None for _, conv in fields):
        return _drop_top_nulls
    convs = {name: conv for name, conv in fields if conv is not None}

    def clean(row: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in row.items():
            if v is not None:
                conv = convs.get(k)
                v = conv(v) if conv is not None else v
                if v is not None:
                    out[k] = v
        return out

    return clean


Convert = Callable[[Any], Any]
_JSON_EXTENSION = "arrow.json"  # Arrow's canonical JSON type: datasets stores objects of varying keys in it


def _converter(t: pa.DataType) -> Convert | None:
    """How a non-null value of type `t` becomes a JSON value (None: it already is one, no null inside to drop)."""
    if getattr(t, "extension_name", None) == _JSON_EXTENSION:
        return _json_value
    if isinstance(t, pa.BaseExtensionType):
        return _converter(t.storage_type)
    if pa.types.is_struct(t):
        subs = [(t.field(i).name, _converter(t.field(i).type)) for i in range(t.num_fields)]
        return lambda v: _struct(v, subs)
    if pa.types.is_map(t):
        sub = _converter(t.item_type)
        return lambda v: {str(k): (sub(x) if sub else x) for k, x in v if x is not None}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        sub = _converter(t.value_type)
        return None if sub is None else (lambda v: [None if x is None else sub(x) for x in v])
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _bytes
    if pa.types.is_temporal(t) or pa.types.is_decimal(t):
        return _text
    return None


def _struct(v: dict[str, Any], subs: list[tuple[str, Convert | None]]) -> dict[str, Any]:
    out = {}
    for name, conv in subs:
        x = v.get(name)
        if x is not None and conv is not None:
            x = conv(x)
        if x is not None:
            out[name] = x
    return out


def _json_value(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def _bytes(v: Any) -> str:
    raw = bytes(v)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")


def _text(v: Any) -> str:
    return v.isoformat() if isinstance(v, (dt.datetime, dt.date, dt.time)) else str(v)


def _drop_top_nulls(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}
