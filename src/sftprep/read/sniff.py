"""What a file holds, from its first bytes (inside gzip): the formats sftprep reads, and the ones it recognises
to refuse or convert (Parquet, Arrow, CSV/TSV, compressed, UTF-16) instead of reading them as broken JSON."""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from itertools import islice
from pathlib import Path

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"

# Leading bytes of binary formats.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PAR1", "parquet"),
    (b"ARROW1", "arrow"),
    (b"\xff\xff\xff\xff", "arrow-stream"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_HEADER_FIELD = re.compile(r'^\s*"?[\w .:/()\-]{1,64}"?\s*$')
_SNIFF_BYTES = 4096


def sniff_format(path: str | Path) -> str:
    """What the file holds, from its first bytes (inside gzip): a READABLE name, or an UNREADABLE one."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(_SNIFF_BYTES)
        except (OSError, EOFError, zlib.error):
            return "text"  # a damaged gzip: the reader reports where it stopped
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    text = head.removeprefix(_BOM).lstrip(_WHITESPACE)
    if not text:
        return "empty"
    if text[:1] == b"[":
        return "json"
    if text[:1] == b"{":
        return "jsonl"
    for sep, name in (("\t", "tsv"), (",", "csv")):
        if _looks_tabular(text.decode("utf-8", errors="replace"), sep, whole=len(head) < _SNIFF_BYTES):
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
