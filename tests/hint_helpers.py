"""Helpers of the hint tests (tests/end_to_end/test_hints*.py): run a command in this process, check that it
fails saying what, read the fix its message suggests, run a shell command quoted from a hint."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from cli_helpers import GOOD, Result, no_traceback, run_main

ALPACA = [
    {"instruction": "Capital of France?", "input": "", "output": "Paris."},
    {"instruction": "Add", "input": "2+2", "output": "4"},
]


def sftprep(d: Path, *args: str) -> Result:
    if args and args[0] == "prepare":
        args = (*args, "--workers", "1")
    r = run_main(d, *args)
    no_traceback(r)
    return r


def fails(r: Result, code: int, *says: str) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    for text in says:
        assert text in r.stderr, (text, r.stderr)
    return r.stderr


def ok(r: Result, examples: int | None = None, out: Path | None = None) -> None:
    assert r.returncode == 0, r.stderr
    if examples is not None and out is not None:
        assert json.loads((out / "manifest.json").read_text())["examples_written"] == examples


def fix_of(message: str) -> str:
    """The text after 'fix: ' up to the end of the line."""
    m = re.search(r"fix: (.*)$", message, re.M)
    assert m, message
    return m.group(1)


def run_hint(d: Path, command: str) -> None:
    """Run a shell command quoted from a hint, in `d`."""
    r = subprocess.run(command, shell=True, cwd=d, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, (command, r.stderr)


# ---------------------------------------------------------------------------- input formats


def write_parquet(p: Path) -> None:
    """The GOOD records as a Parquet file."""
    pq.write_table(pa.Table.from_pylist(GOOD), p)
