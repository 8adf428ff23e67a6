"""Stage 7: Parquet shards (written as they fill), rejects.jsonl and manifest.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from sftprep.types import Reject

SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("turn", pa.int32()),
        # the template variables beyond the defaults the example was rendered with (a JSON object, "{}"): with
        # them anyone rebuilds the exact prompt (a reasoning switch chosen per turn, the user's --template-var)
        ("template_vars", pa.string()),
    ]
)
SHARD_PATTERN = "data-{:05d}.parquet"


class ShardWriter:
    """Writes `data-NNNNN.parquet` shards, streaming row groups of `row_group_size` examples as they
    fill, so memory stays flat whatever the input size. A shard is closed at the first batch boundary
    once it holds `shard_size` examples: every closed shard ends with a whole batch (resumable)."""

    def __init__(
        self, out_dir: Path, shard_size: int = 50_000, row_group_size: int = 2_000, shards: list[str] | None = None
    ) -> None:
        self.out_dir = out_dir
        self.shard_size = shard_size
        self.row_group_size = min(row_group_size, shard_size)
        self.shards: list[str] = list(shards or [])
        self._writer: pq.ParquetWriter | None = None
        self._in_shard = 0
        self._reset()

    def _reset(self) -> None:
        self._ids: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._files: list[str] = []
        self._lines: list[int] = []
        self._turns: list[int] = []
        self._vars: list[str] = []

    def add(
        self,
        input_ids: np.ndarray,
        labels: np.ndarray,
        source_file: str,
        line: int,
        turn: int,
        template_vars: str = "{}",
    ) -> None:
        self._ids.append(input_ids)
        self._labels.append(labels)
        self._files.append(source_file)
        self._lines.append(line)
        self._turns.append(turn)
        self._vars.append(template_vars)
        if len(self._ids) >= self.row_group_size:
            self._write_row_group()

    def end_batch(self) -> bool:
        """Called after each batch; True when a shard was closed (a resumable point)."""
        if self._in_shard + len(self._ids) >= self.shard_size:
            self.flush()
            return True
        return False

    def _write_row_group(self) -> None:
        if not self._ids:
            return
        table = pa.Table.from_arrays(
            [
                _list_array(self._ids),
                _list_array(self._labels),
                _string_array(self._files),
                _from_numpy(np.array(self._lines, dtype=np.int64), pa.int64()),
                _from_numpy(np.array(self._turns, dtype=np.int32), pa.int32()),
                _string_array(self._vars),
            ],
            schema=SCHEMA,
        )
        if self._writer is None:
            name = SHARD_PATTERN.format(len(self.shards))
            self._writer = pq.ParquetWriter(
                self.out_dir / name,
                SCHEMA,
                compression="zstd",
                write_statistics=False,
                use_dictionary=DICTIONARY_COLUMNS,
            )
            self.shards.append(name)
        self._writer.write_table(table, row_group_size=len(self._ids))
        self._in_shard += len(self._ids)
        self._reset()

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._in_shard = 0

    def flush(self) -> None:
        """Write what is buffered and close the current shard."""
        self._write_row_group()
        self._close_shard()


# Token ids do not repeat as a dictionary would need (a 128k vocabulary): plain + zstd writes them ~30% faster
# and ~25% smaller (measured on the realistic mix); file names and template variables repeat.
DICTIONARY_COLUMNS = ["source_file", "template_vars"]


def _list_array(rows: list[np.ndarray]) -> pa.ListArray:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(rows).astype(np.int32, copy=False) if rows else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(_int32_array(offsets), _int32_array(values))


def _int32_array(values: np.ndarray) -> pa.Array:
    return _from_numpy(np.ascontiguousarray(values, dtype=np.int32), pa.int32())


# Arrays are built from buffers: `pa.array` imports pandas on first use when it is installed (0.2-0.3 s).
def _from_numpy(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def _string_array(values: list[str]) -> pa.Array:
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets), data])


class RejectWriter:
    """rejects.jsonl: one line per rejected record (or dropped turn), with the original record."""

    def __init__(self, path: Path, keep_bytes: int = 0) -> None:
        """`keep_bytes`: resume after that many bytes of an earlier, interrupted run's file."""
        if keep_bytes:
            with open(path, "r+b") as f:
                f.truncate(keep_bytes)
        self._f = open(path, "ab" if keep_bytes else "wb")  # noqa: SIM115 (closed in close())

    def add(self, r: Reject, turn: int | None = None) -> None:
        self._f.write(reject_row_line(r, turn))

    def add_lines(self, lines: list[bytes]) -> None:
        """Lines `reject_row_line` made (in a worker process)."""
        self._f.write(b"".join(lines))

    def tell(self) -> int:
        self._f.flush()
        return self._f.tell()

    def close(self) -> None:
        self._f.close()


def reject_row_line(r: Reject, turn: int | None = None) -> bytes:
    """The rejects.jsonl line of a rejected record (or of a dropped turn: `turn`), quoting the record."""
    row: dict[str, Any] = {
        "source_file": r.source_file,
        "source_line": r.line,
        "reason": r.reason,
        "message": r.message,
    }
    if turn is not None:
        row["turn"] = turn
    if r.record is not None:
        row["record"] = r.record
    elif r.raw_text is not None:
        row["raw_text"] = r.raw_text
    return reject_line(row)


def reject_line(row: dict[str, Any]) -> bytes:
    """One JSON line (orjson: 5-10x json's speed on whole records). orjson writes NaN and Infinity as null and
    refuses lone surrogates and integers over 64 bits: for a row holding any of them json writes the line as
    before (NaN kept)."""
    try:
        line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        line = None
    if line is not None and (b"null" not in line or not _non_finite(row)):
        return line
    return (json.dumps(row, ensure_ascii=False, allow_nan=True) + "\n").encode("utf-8")


def _non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity is anywhere in `value` (one loop, no call per value: rows of tool and
    reasoning records hold hundreds of values, and nulls send each through here)."""
    stack = [value]
    while stack:
        v = stack.pop()
        kind = type(v)
        if kind is str or v is None or kind is int or kind is bool:
            continue
        if kind is dict:
            stack.extend(v.values())
        elif kind is list or kind is tuple:
            stack.extend(v)
        elif isinstance(v, float):
            if not math.isfinite(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return False
