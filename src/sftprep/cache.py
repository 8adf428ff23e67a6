"""Where analyses are cached: `$SFTPREP_CACHE_DIR`, else `$XDG_CACHE_HOME/sftprep`, else `~/.cache/sftprep`;
one folder per kind of analysis. Entries are written atomically and at most once per key: a reader sees a
whole entry or none, and an unwritable cache only means computing again."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    root = os.environ.get("SFTPREP_CACHE_DIR") or str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "sftprep")
    return Path(root).expanduser() / kind


def store(path: Path, data: bytes) -> None:
    """Write a cache entry atomically (a temporary file renamed over it); nothing when the cache is unwritable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass
