"""Formats sftprep recognises in an input file but does not read (see `sniff.sniff_format`), and for each a
shell command that converts it into something it reads. tests/test_hints.py runs every command."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

# kind -> (what the file is, a shell command that converts it: {py} the
# Python running sftprep, {src} the input, {dst} the result). tests/test_hints.py runs every command.
_ROWS = "[print(json.dumps(r, default=str)) for r in {rows}]"
_CONVERT = '{py} -c "import json, sys, {mod} as m; ' + _ROWS + '" {src} > {dst}'
_DECOMPRESS = (
    '{py} -c "import sys, shutil, {mod} as m; shutil.copyfileobj(m.open(sys.argv[1]), sys.stdout.buffer)" {src} > {dst}'
)
_UTF16 = "{py} -c \"import sys; sys.stdout.write(open(sys.argv[1], encoding='utf-16').read())\" {src} > {dst}"


def _convert(mod: str, rows: str) -> str:
    return _CONVERT.replace("{mod}", mod).replace("{rows}", rows)


UNREADABLE: dict[str, tuple[str, str]] = {
    "parquet": ("an Apache Parquet file", _convert("pyarrow.parquet", "m.read_table(sys.argv[1]).to_pylist()")),
    "arrow": ("an Apache Arrow IPC file", _convert("pyarrow", "m.ipc.open_file(sys.argv[1]).read_all().to_pylist()")),
    "arrow-stream": (
        "an Apache Arrow IPC stream (e.g. a Hugging Face datasets cache file)",
        _convert("pyarrow", "m.ipc.open_stream(sys.argv[1]).read_all().to_pylist()"),
    ),
    "csv": ("a CSV file (a header row, then rows)", _convert("csv", "m.DictReader(open(sys.argv[1], newline=''))")),
    "tsv": (
        "a TSV file (a header row, then tab-separated rows)",
        _convert("csv", "m.DictReader(open(sys.argv[1], newline=''), dialect='excel-tab')"),
    ),
    "bz2": ("bzip2-compressed", _DECOMPRESS.replace("{mod}", "bz2")),
    "xz": ("xz-compressed", _DECOMPRESS.replace("{mod}", "lzma")),
    "zstd": ("zstd-compressed", "zstd -d {src} -o {dst}"),
    "zip": ("a zip archive", "{py} -m zipfile -e {src} {dst}"),
    "utf-16": ("UTF-16 text (sftprep reads UTF-8)", _UTF16),
}
_COMPRESSED = {"bz2": ".bz2", "xz": ".xz", "zstd": ".zst", "gzip": ".gz"}


def _python() -> str:
    """How to call the Python that runs sftprep (it has pyarrow): `python` when that is it, else its path."""
    return "python" if shutil.which("python") == sys.executable else shlex.quote(sys.executable)


def _result_name(src: str, kind: str) -> str:
    """Where a conversion of `src` writes: a path that does not exist (never `src` or another file)."""
    if kind in _COMPRESSED:
        dst = src.removesuffix(_COMPRESSED[kind])
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
    """The shell command that turns `src` (of an UNREADABLE `kind`, or "gzip") into something sftprep reads,
    and the path it writes."""
    dst = _result_name(src, kind)
    template = _DECOMPRESS.replace("{mod}", "gzip") if kind == "gzip" else UNREADABLE[kind][1]
    return template.format(py=_python(), src=shlex.quote(src), dst=shlex.quote(dst)), dst
