"""Compiled chat templates cached on disk across processes (`cache_dir("templates")`): Jinja's parse and code
generation of a 4-10 KB template and the two scans for the variables it reads cost ~0.1 s of every run's
start-up. Values are stored with `marshal` (what Jinja's own bytecode cache stores), keyed by the template
source, what was computed, the Jinja and Python versions and the code that computes it."""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TypeVar

from sftprep.cache import cache_dir, package_version, store

T = TypeVar("T")


def cached(kind: str, source: str, compute: Callable[[], T]) -> T:
    """`compute()` (a code object or plain data), read from the disk cache when present; stored after."""
    path = cache_dir("templates") / f"{_key(kind, source)}.marshal"
    try:
        return marshal.loads(path.read_bytes())  # type: ignore[no-any-return]
    except Exception:  # absent, unreadable or truncated: compute again
        pass
    value = compute()
    with contextlib.suppress(ValueError):  # a value marshal cannot store: computed each time
        store(path, marshal.dumps(value))
    return value


def _key(kind: str, source: str) -> str:
    return hashlib.sha256("\0".join((kind, *_context(), source)).encode()).hexdigest()


@cache
def _context() -> tuple[str, ...]:
    """The Jinja and Python versions and the source of the modules that configure and compile templates."""
    here = Path(__file__).parent
    code = hashlib.sha256(b"".join((here / f).read_bytes() for f in ("hf_jinja.py", "code_cache.py")))
    return package_version("jinja2") or "?", sys.version, code.hexdigest()
