"""Columnar inputs, streamed: Parquet (row group by row group, with pyarrow), Arrow IPC files and streams
(record batch by record batch, read from the file, never memory-mapped), and `datasets.save_to_disk`
directories (the Arrow files its state.json lists). Memory holds one row group or record batch, sliced into
rows of `ROWS` at a time.

Each row becomes a RawRecord whose `line` is its 1-based row number in the input (across every Arrow file of
a save_to_disk directory), so the same rows give the same records, whatever the container:

- Arrow cannot tell an absent field from a null one, so nulls are dropped from every object (top-level
  columns and struct fields: a JSON record without `system` and a Parquet row whose `system` is null are the
  same record). Nulls inside lists are kept (positions matter).
- Values JSON has no type for become JSON ones: maps -> objects, bytes -> text (UTF-8) or base64, dates and
  times -> ISO 8601 text, decimals -> text, so every record can be written to rejects.jsonl.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
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
    """Per-row conversion for this schema: nulls dropped, non-JSON values converted (walks nested values
    only where the schema has them)."""
    if all(_flat(f.type) for f in schema):
        return _drop_top_nulls
    return _clean_object


def _flat(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
    )


def _drop_top_nulls(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}


def _clean_object(row: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _clean(v) for k, v in row.items() if v is not None}


def _clean(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, dict):
        return _clean_object(v)
    if isinstance(v, list):
        if v and all(isinstance(x, tuple) and len(x) == 2 for x in v):  # an Arrow map: [(key, value), ...]
            return {str(k): _clean(x) for k, x in v if x is not None}
        return [_clean(x) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        raw = bytes(v)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (decimal.Decimal, dt.timedelta)):
        return str(v)
    if isinstance(v, tuple):
        return [_clean(x) for x in v]
    return str(v)
