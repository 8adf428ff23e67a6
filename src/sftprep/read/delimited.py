"""CSV and TSV inputs (also compressed), streamed row by row: the header names the columns, each row is a
record of strings whose `line` is its 1-based row number (not counting the header; a quoted field may span
several lines of the file). Cells holding JSON (a `messages` list, `tools`) are decoded by the column map
(read/columns.py). A row whose field count differs from the header's, or whose bytes are not UTF-8, becomes a
reject; the rows around it are read."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path

from sftprep.read.containers import open_binary
from sftprep.types import RawRecord

ERR_ROW = "invalid_row"
ERR_ENCODING = "bad_encoding"
MAX_RAW_TEXT = 2000
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)  # csv's default (128 KiB) is below one long conversation


def iter_delimited(path: Path, source: str, delimiter: str) -> Iterator[RawRecord]:
    csv.field_size_limit(_FIELD_LIMIT)
    with open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        for line, row in enumerate(reader, 1):
            if not row:  # a blank line: no record (as blank JSONL lines)
                continue
            size = sum(map(len, row)) + len(row)
            try:
                "".join(row).encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = exc.object[exc.start].encode("utf-8", "surrogateescape").hex()
                msg = f"row is not valid UTF-8: byte 0x{bad}"
                yield RawRecord(source, line, error=msg, error_kind=ERR_ENCODING, raw_text=_text(row), size=size)
                continue
            if len(row) != len(header):
                msg = f"row has {len(row)} fields, the header {len(header)} ({delimiter_name(delimiter)}-separated)"
                yield RawRecord(source, line, error=msg, error_kind=ERR_ROW, raw_text=_text(row), size=size)
                continue
            yield RawRecord(source, line, data=dict(zip(header, row)), size=size)


def delimiter_name(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else "comma"


def _text(row: list[str]) -> str:
    return ",".join(row).encode("utf-8", "replace").decode("utf-8", "replace")[:MAX_RAW_TEXT]
