"""Where analyses are cached: `$SFTPREP_CACHE_DIR`, else `$XDG_CACHE_HOME/sftprep`, else `~/.cache/sftprep`;
one folder per kind of analysis. Entries are written atomically and at most once per key: a reader sees a
whole entry or none, and an unwritable cache only means computing again."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
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


def package_version(name: str) -> str | None:
    """An installed distribution's version, for cache keys (None when it is not installed): its module's
    `__version__` when the module is imported already, else the version its `.dist-info` directory is named
    with (the first on sys.path, as importlib.metadata finds it), else importlib.metadata's answer. Importing
    importlib.metadata and its email parser, and parsing METADATA files, was ~20 ms of every run's start-up."""
    version = getattr(sys.modules.get(name), "__version__", None)
    if isinstance(version, str):
        return version
    found = _dist_info_versions().get(_normal(name))
    if found is not None:
        return found
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


@lru_cache(maxsize=1)
def _dist_info_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for n in names:
            if n.endswith(".dist-info") and "-" in n:
                dist, _, version = n[: -len(".dist-info")].partition("-")
                found.setdefault(_normal(dist), version)
    return found
