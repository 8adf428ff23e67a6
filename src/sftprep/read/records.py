"""Reading input files into `RawRecord`s: the one walk every engine uses (`iter_raw_lines`).

Read: JSONL (one object per line), a JSON array of objects, a single pretty-printed JSON object (each also
gzip/zstd/bzip2/xz-compressed, detected by the magic bytes, not the suffix), CSV/TSV (read/delimited.py),
Parquet, Arrow IPC and `datasets.save_to_disk` directories (read/columnar.py). A line or element that cannot
be used becomes a `RawRecord` with `error` set and the read goes on. `line` is the 1-based JSONL line, JSON
array index, or row number (CSV, Parquet, Arrow).

`RawRecord.error_kind` (one of `ERROR_KINDS`) is the stable reject reason the normalize stage gives it.
Input paths (directories, globs, formats refused up front) are expanded by read/inputs.py.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import lzma
import shlex
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa

import sftprep.read.json_stream as json_stream
from sftprep.read.columnar import arrow_batches, dataset_dir_batches, iter_rows, parquet_batches
from sftprep.read.containers import compression_of, open_binary
from sftprep.read.delimited import ERR_ROW, iter_delimited
from sftprep.read.inputs import check_input_path, iter_input_files
from sftprep.read.sniff import sniff_format
from sftprep.types import RawRecord

__all__ = [
    "ERROR_KINDS",
    "RawLine",
    "check_input_path",
    "iter_input_files",
    "iter_raw_lines",
    "read_records",
    "record_of",
]

ERR_INVALID_JSON = "invalid_json"
ERR_TRUNCATED = "truncated_line"
ERR_NAN = "nan_literal"
ERR_NOT_OBJECT = "not_object"
ERR_ENCODING = "bad_encoding"
ERR_READ = "read_error"
ERR_DUPLICATE = "duplicate"  # set by the dedup step (preparation), not by a reader
ERROR_KINDS: tuple[str, ...] = (
    ERR_INVALID_JSON,
    ERR_TRUNCATED,
    ERR_NAN,
    ERR_NOT_OBJECT,
    ERR_ENCODING,
    ERR_READ,
    ERR_ROW,
    ERR_DUPLICATE,
)

MAX_RAW_TEXT = 2000
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"
_NAN_MESSAGE = "NaN/Infinity is not valid JSON"
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, csv.Error, pa.ArrowException, ValueError)


class _NanError(ValueError):
    pass


class _NanMarker:
    """Stands in for NaN/Infinity while parsing a whole document, so one bad element can be found."""


_NAN = _NanMarker()


# ---------------------------------------------------------------------------- reading


def read_records(path: str | Path, source: str | None = None) -> Iterator[RawRecord]:
    """Yield one RawRecord per JSONL line / array element / row. Raises InputError for a bad path (eagerly).
    `source`: the name records carry (default: the path as given)."""
    p = check_input_path(path)
    return _iter_records(p, str(path) if source is None else source)


def _first_significant_byte(path: Path) -> bytes:
    """The first byte that is not whitespace (after a BOM); b"" for an empty file."""
    first = True
    with open_binary(path) as f:
        while True:
            try:
                chunk = f.read1(4096) if hasattr(f, "read1") else f.read(4096)
            except _READ_ERRORS:  # a cut-off stream: decide from what could be read; the reader reports the rest
                chunk = b""
            if not chunk:
                return b""
            if first and chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
            first = False
            rest = chunk.lstrip(_WHITESPACE)
            if rest:
                return rest[:1]


RawLine = tuple[int, int, bytes | None, RawRecord | None]
"""(line, byte offset, an unparsed JSONL line or None, the record already made or None): one record of a file."""


def iter_raw_lines(path: str | Path, source: str) -> Iterator[RawLine]:
    """The walk over an input that `read_records` parses (decompression, BOM, blank lines skipped but counted,
    a JSON array or a pretty-printed object parsed whole, rows of CSV/Parquet/Arrow as records, read errors as
    records): JSONL lines come unparsed, so an engine can parse them elsewhere with `parse_line`."""
    p = Path(path)
    if p.is_dir():  # a datasets.save_to_disk directory (read/inputs.py lets no other directory through)
        yield from _made(iter_rows(dataset_dir_batches(p), source), source)
        return
    kind = sniff_format(p)
    if kind == "parquet":
        yield from _made(iter_rows(parquet_batches(p), source), source)
    elif kind in ("arrow", "arrow-stream"):
        yield from _made(iter_rows(arrow_batches(p), source), source)
    elif kind in ("csv", "tsv"):
        yield from _made(iter_delimited(p, source, "," if kind == "csv" else "\t"), source)
    else:
        yield from _json_lines(p, source)


def _made(records: Iterator[RawRecord], source: str) -> Iterator[RawLine]:
    """Records a reader made itself; a read error after row N becomes one record at row N + 1."""
    line = 0
    try:
        for r in records:
            line = r.line
            yield r.line, 0, None, r
    except _READ_ERRORS as exc:
        msg = f"the file could not be read to the end, stopped after row {line} ({exc})"
        yield line + 1, 0, None, RawRecord(source, line + 1, error=msg, error_kind=ERR_READ)


def _json_lines(path: Path, source: str) -> Iterator[RawLine]:
    lines_read = [0]  # updated by the JSONL walk, so a read error can say where it happened
    try:
        kind = _first_significant_byte(path)
        if not kind:
            return
        with open_binary(path) as f:
            if kind == b"[" and _streamed(path):
                yield from _array_elements(f, source, lines_read)
            elif kind == b"[":
                yield from ((r.line, 0, None, r) for r in _iter_document(f.read(), source))
            else:
                yield from _jsonl_lines(f, path, source, lines_read)
    except _READ_ERRORS as exc:
        line = lines_read[0] + 1
        msg = f"the file could not be read to the end, stopped at line {line} ({exc})"
        yield line, 0, None, RawRecord(source, line, error=msg, error_kind=ERR_READ)


def _streamed(path: Path) -> bool:
    """A JSON array too large to parse whole (json_stream.py reads it element by element)."""
    limit = json_stream.WHOLE_MAX if compression_of(path) is None else json_stream.WHOLE_MAX_COMPRESSED
    return path.stat().st_size > limit


def _array_elements(f: IO[bytes], source: str, lines_read: list[int]) -> Iterator[RawLine]:
    """A large array's elements as JSONL-like lines (parsed by parse_line, here or on a Ray worker); a broken
    structure ends the read with one invalid_json record."""
    index = 0
    try:
        for index, offset, raw in json_stream.iter_elements(f):
            lines_read[0] = index
            yield index, offset, raw + b"\n", None
    except json_stream.BrokenArray as exc:
        msg = f"invalid JSON array: {exc} (after element {index}); the rest of the file is not read"
        yield index + 1, 0, None, RawRecord(source, index + 1, error=msg, error_kind=ERR_INVALID_JSON)


def _iter_records(path: Path, source: str) -> Iterator[RawRecord]:
    return (record_of(line, source) for line in iter_raw_lines(path, source))


def record_of(line: RawLine, source: str) -> RawRecord:
    """The RawRecord of one `iter_raw_lines` item: the record a reader made, or its JSONL line parsed."""
    number, offset, raw, record = line
    return record if record is not None else parse_line(raw or b"", number, offset, source)


def _error(source: str, line: int, kind: str, message: str, raw_text: str | None) -> RawRecord:
    return RawRecord(source, line, error=message, error_kind=kind, raw_text=raw_text)


def _reject_constant(name: str) -> Any:
    raise _NanError(name)


def _jsonl_lines(f: IO[bytes], path: Path, source: str, lines_read: list[int]) -> Iterator[RawLine]:
    offset = 0
    lineno = 0
    seen_content = False
    for raw in f:
        lineno += 1
        lines_read[0] = lineno
        line_offset = offset
        offset += len(raw)
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if not raw or raw.isspace():
            continue
        if not seen_content:
            seen_content = True
            if len(raw) < 16 and raw.strip() == b"{":
                # A pretty-printed single JSON object, not JSONL: parse the whole file as one document.
                with open_binary(path) as whole:
                    yield from ((r.line, 0, None, r) for r in _iter_document(whole.read(), source))
                return
        yield lineno, line_offset, raw, None


def parse_line(raw: bytes, lineno: int, file_offset: int, source: str) -> RawRecord:
    """One JSONL line as a RawRecord (with `size`, the line's bytes, also for a line that is rejected)."""
    record = _parse_json_line(raw, lineno, file_offset, source)
    return record if record.size else dataclasses.replace(record, size=len(raw))


_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))  # each digit a 0, all else a space
_LONG_NUMBER = b"0" * 19


def may_hold_big_integer(data: bytes) -> bool:
    """19 digits in a row somewhere (~1 us per KB): orjson reads an integer over 64 bits as a float, where
    json.loads (and so transformers' renders of such a record) keeps the integer."""
    return _LONG_NUMBER in data.translate(_DIGITS_ONLY)


def _parse_json_line(raw: bytes, lineno: int, file_offset: int, source: str) -> RawRecord:
    try:  # fast path; anything orjson refuses (NaN, lone surrogates, bad UTF-8...) takes the path below
        data = None if may_hold_big_integer(raw) else orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if isinstance(data, dict):
            return RawRecord(source, lineno, data=data, size=len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _encoding_error(raw, exc, lineno, file_offset, source)
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except _NanError as exc:
        return _error(source, lineno, ERR_NAN, f"{_NAN_MESSAGE} (found {exc})", text[:MAX_RAW_TEXT])
    except json.JSONDecodeError as exc:
        if not raw.endswith(b"\n"):
            msg = f"truncated last line (no trailing newline): {exc.msg} at column {exc.colno}"
            return _error(source, lineno, ERR_TRUNCATED, msg, text[:MAX_RAW_TEXT])
        msg = f"invalid JSON: {exc.msg} at column {exc.colno}"
        return _error(source, lineno, ERR_INVALID_JSON, msg, text[:MAX_RAW_TEXT])
    except RecursionError:
        return _error(source, lineno, ERR_INVALID_JSON, "JSON nested too deeply", text[:MAX_RAW_TEXT])
    if not isinstance(data, dict):
        msg = f"expected a JSON object, got {json_type_name(data)}"
        return _error(source, lineno, ERR_NOT_OBJECT, msg, text[:MAX_RAW_TEXT])
    return RawRecord(source, lineno, data=data, size=len(raw))


def _encoding_error(
    raw: bytes, exc: UnicodeDecodeError, lineno: int, file_offset: int, source: str, what: str = "line"
) -> RawRecord:
    bad = raw[exc.start : exc.start + 1].hex()
    where = f"byte offset {exc.start} of the {what}"
    if what == "line":
        where += f" (offset {file_offset + exc.start} in the file)"
    msg = f"{what} is not valid UTF-8: byte 0x{bad} at {where}"
    for codec, name in (("cp1252", "CP1252"), ("latin-1", "LATIN1")):  # the common 8-bit encodings
        try:
            decoded = raw.decode(codec)
        except UnicodeDecodeError:
            continue
        if not any(ord(c) < 32 and c not in "\t\n\r" for c in decoded):
            msg += f" (it reads as {name}: iconv -f {name} -t UTF-8 {shlex.quote(source)} > converted.jsonl)"
            break
    text = raw[: MAX_RAW_TEXT * 4].decode("utf-8", errors="replace")[:MAX_RAW_TEXT]
    return _error(source, lineno, ERR_ENCODING, msg, text)


def _iter_document(data: bytes, source: str) -> Iterator[RawRecord]:
    """A whole-file JSON document: an array of objects (one record each) or a single object."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield _encoding_error(data, exc, 1, 0, source, what="file")
        return
    found: list[str] = []

    def on_constant(name: str) -> _NanMarker:
        found.append(name)
        return _NAN

    try:
        value = json.loads(text, parse_constant=on_constant)
    except json.JSONDecodeError as exc:
        start = max(0, exc.pos - MAX_RAW_TEXT // 2)
        msg = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        yield _error(source, 1, ERR_INVALID_JSON, msg, text[start : start + MAX_RAW_TEXT])
        return
    except RecursionError:
        yield _error(source, 1, ERR_INVALID_JSON, "JSON nested too deeply", text[:MAX_RAW_TEXT])
        return
    items = value if isinstance(value, list) else [value]
    for index, item in enumerate(items, 1):
        yield _document_item(item, index, source, bool(found))


def _document_item(item: Any, index: int, source: str, maybe_nan: bool) -> RawRecord:
    if maybe_nan and _contains_nan(item):
        return _error(source, index, ERR_NAN, _NAN_MESSAGE, _snippet(item))
    if not isinstance(item, dict):
        msg = f"expected a JSON object, got {json_type_name(item)}"
        return _error(source, index, ERR_NOT_OBJECT, msg, _snippet(item))
    return RawRecord(source, index, data=item)


def _contains_nan(value: Any) -> bool:
    if value is _NAN:
        return True
    if isinstance(value, dict):
        return any(_contains_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_nan(v) for v in value)
    return False


def _snippet(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=lambda _: "NaN")[:MAX_RAW_TEXT]


def json_type_name(value: Any) -> str:
    """The JSON name of a parsed value's type (string, number, array, object, null, boolean)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
