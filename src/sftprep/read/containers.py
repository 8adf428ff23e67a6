"""Opening an input file as a stream of its bytes: plain, or decompressed on the fly (gzip, zstd, bzip2, xz),
detected by the leading magic bytes, never by the suffix. Nothing is read ahead beyond a buffer."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path
from typing import IO

import pyarrow as pa

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
COMPRESSIONS: tuple[str, ...] = tuple(name for _, name in _MAGIC)
# What the suffix of a compressed file is (a decompressed copy drops it).
SUFFIXES = {"gzip": ".gz", "zstd": ".zst", "bz2": ".bz2", "xz": ".xz"}
STREAM_ERRORS = (OSError, EOFError, ValueError, pa.ArrowException)  # what a damaged compressed stream raises
_BUFFER = 1 << 16


def compression_of(path: str | Path) -> str | None:
    """ "gzip", "zstd", "bz2" or "xz" from the file's first bytes; None for an uncompressed file."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def open_binary(path: str | Path, compression: str | None = None) -> IO[bytes]:
    """The file's bytes, decompressed when it is compressed (`compression`, else detected): a buffered
    stream read front to back (constant memory)."""
    kind = compression if compression is not None else compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    if kind == "zstd":  # pyarrow's streaming codec: no extra dependency
        return io.BufferedReader(pa.input_stream(str(path), compression="zstd"), _BUFFER)  # type: ignore[arg-type]
    return open(path, "rb")


def head(path: str | Path, n: int) -> bytes:
    """Up to `n` decompressed leading bytes (fewer when a damaged stream ends early)."""
    with open_binary(path) as f:
        out = b""
        try:
            while len(out) < n:
                chunk = f.read(n - len(out))
                if not chunk:
                    break
                out += chunk
        except STREAM_ERRORS:
            pass
        return out
