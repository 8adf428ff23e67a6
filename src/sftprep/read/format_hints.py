"""Formats sftprep recognises in an input file but does not read (see `sniff.sniff_format`), and for each a
shell command that converts it into something it reads. tests/end_to_end/test_hints.py runs every command.

Read directly: JSON, JSONL, CSV, TSV (each also gzip/zstd/bzip2/xz-compressed), Parquet and Arrow IPC. Left:
zip archives, UTF-16 text, and a Parquet or Arrow file inside a compressed stream (they need random access)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

# kind -> (what the file is, a shell command that converts it: {py} the Python running sftprep, {src} the
# input, {dst} the result).
_DECOMPRESS = (
    '{py} -c "import sys, shutil, {mod} as m; shutil.copyfileobj(m.open(sys.argv[1]), sys.stdout.buffer)" {src} > {dst}'
)
_ZSTD = (
    "{py} -c \"import sys, shutil, pyarrow as pa; shutil.copyfileobj(pa.input_stream(sys.argv[1], compression='zstd'),"
    ' sys.stdout.buffer)" {src} > {dst}'
)
_UTF16 = "{py} -c \"import sys; sys.stdout.write(open(sys.argv[1], encoding='utf-16').read())\" {src} > {dst}"

UNREADABLE: dict[str, tuple[str, str]] = {
    "zip": ("a zip archive", "{py} -m zipfile -e {src} {dst}"),
    "utf-16": ("UTF-16 text (sftprep reads UTF-8)", _UTF16),
}
_DECOMPRESSORS = {
    "gzip": _DECOMPRESS.replace("{mod}", "gzip"),
    "bz2": _DECOMPRESS.replace("{mod}", "bz2"),
    "xz": _DECOMPRESS.replace("{mod}", "lzma"),
    "zstd": _ZSTD,
}
_SUFFIX = {"bz2": ".bz2", "xz": ".xz", "zstd": ".zst", "gzip": ".gz"}


def _python() -> str:
    """How to call the Python that runs sftprep (it has pyarrow): `python` when that is it, else its path."""
    return "python" if shutil.which("python") == sys.executable else shlex.quote(sys.executable)


def _result_name(src: str, kind: str) -> str:
    """Where a conversion of `src` writes: a path that does not exist (never `src` or another file)."""
    if kind in _SUFFIX:
        dst = src.removesuffix(_SUFFIX[kind])
    elif kind == "zip":
        dst = src.removesuffix(".zip") + "_files"
    else:
        dst = str(Path(src).with_suffix("")) + ".jsonl"
    base, n = dst, 1
    while dst == src or os.path.lexists(dst):
        stem, dot, suffix = base.rpartition(".") if "." in Path(base).name else (base, "", "")
        dst = f"{stem}-{n}{dot}{suffix}"
        n += 1
    return dst


def conversion_command(kind: str, src: str) -> tuple[str, str]:
    """The shell command that turns `src` (of an UNREADABLE `kind`, or a compression: gzip, zstd, bz2, xz)
    into something sftprep reads, and the path it writes."""
    dst = _result_name(src, kind)
    template = _DECOMPRESSORS[kind] if kind in _DECOMPRESSORS else UNREADABLE[kind][1]
    return template.format(py=_python(), src=shlex.quote(src), dst=shlex.quote(dst)), dst
