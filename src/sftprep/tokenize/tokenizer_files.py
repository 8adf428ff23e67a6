"""The files behind a tokenizer: their hashes (once per process), transformers' configured backend cached by
them, and a chat template stored beside tokenizer.json."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from sftprep.cache import cache_dir, package_version


def cached_backend(d: Path) -> Path | None:
    """The cached transformers-configured backend of tokenizer directory `d`, if one was written."""
    version = package_version("transformers")
    if version is None:
        return None
    cached = backend_cache_path(d, version)
    return cached if cached is not None and cached.is_file() else None


def backend_cache_path(d: Path, transformers_version: str) -> Path | None:
    h = hashlib.sha256(transformers_version.encode())
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        f = d / name
        if f.is_file():
            h.update(f"{name}:{sha256_file(f)};".encode())
    try:
        folder = cache_dir("tokenizers")
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder / f"{h.hexdigest()}.json"


def template_beside(d: Path) -> str | None:
    jinja = d / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    js = d / "chat_template.json"
    if js.is_file():
        value = json.loads(js.read_text(encoding="utf-8")).get("chat_template")
        return value if isinstance(value, str) else None
    return None


def sha256_file(path: Path) -> str:
    st = path.stat()
    return _sha256_of(str(path), (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


@lru_cache(maxsize=32)
def _sha256_of(path: str, _stat: tuple[int, int, int, int]) -> str:
    """A file's hash, once per process while its inode, size and times stay (a 9 MB tokenizer.json: 12 ms)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
