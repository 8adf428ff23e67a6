"""What a file holds, from its first bytes (inside gzip, zstd, bzip2 or xz): the formats sftprep reads (JSON,
JSONL, CSV/TSV, Parquet, Arrow IPC) and the ones it recognises to refuse or convert (zip, UTF-16, a compressed
Parquet or Arrow file) instead of reading them as broken JSON."""

from __future__ import annotations

import csv
import io
import re
from itertools import islice
from pathlib import Path

from sftprep.read.containers import head

_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"

# Leading bytes of binary formats.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PAR1", "parquet"),
    (b"ARROW1", "arrow"),
    (b"\xff\xff\xff\xff", "arrow-stream"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_HEADER_FIELD = re.compile(r'^\s*"?[\w .:/()\-]{1,64}"?\s*$')
_SNIFF_BYTES = 4096
COLUMNAR = ("parquet", "arrow", "arrow-stream")  # read with random access: never inside a compressed stream


def sniff_format(path: str | Path) -> str:
    """What the file holds, from its first (decompressed) bytes: json, jsonl, csv, tsv, parquet, arrow,
    arrow-stream, empty, text (none of these: read as JSON Lines, each bad line a reject), or a kind sftprep
    does not read (zip, utf-16)."""
    data = head(path, _SNIFF_BYTES)
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    text = data.removeprefix(_BOM).lstrip(_WHITESPACE)
    if not text:
        return "empty"  # (a damaged compressed stream too: the reader reports where it stops)
    if text[:1] == b"[":
        return "json"
    if text[:1] == b"{":
        return "jsonl"
    for sep, name in (("\t", "tsv"), (",", "csv")):
        if _looks_tabular(text.decode("utf-8", errors="replace"), sep, whole=len(data) < _SNIFF_BYTES):
            return name
    return "text"


def _looks_tabular(text: str, sep: str, whole: bool) -> bool:
    """A header of 2+ column names, and a first row (when there is one) with as many fields."""
    try:
        rows = list(islice(csv.reader(io.StringIO(text), delimiter=sep), 3))
    except csv.Error:
        return False
    if not rows or len(rows[0]) < 2 or not all(_HEADER_FIELD.match(f) for f in rows[0]):
        return False
    complete = rows[1:] if whole else rows[1:-1]  # the last row read may be cut at _SNIFF_BYTES
    return all(len(r) == len(rows[0]) for r in complete[:1])
