"""Where tokenizer analyses are cached: `$SFTPREP_CACHE_DIR`, else `$XDG_CACHE_HOME/sftprep`, else
`~/.cache/sftprep`; one folder per kind of analysis."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    root = os.environ.get("SFTPREP_CACHE_DIR") or str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "sftprep")
    return Path(root).expanduser() / kind
