"""Running `sftprep` in tests: as a subprocess (`cli`) or in this process (`run_main`, no start-up cost)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOOD = [
    {"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
]


def sftprep_cmd() -> list[str]:
    """The console script next to this interpreter, else `python -m sftprep.cli`."""
    for name in ("sftprep", "sftprep.exe"):
        script = Path(sys.executable).parent / name
        if script.is_file():
            return [str(script)]
    found = shutil.which("sftprep")
    return [found] if found else [sys.executable, "-m", "sftprep.cli"]


def cli(cwd: Path, *args: str, columns: int | None = 1000) -> subprocess.CompletedProcess[str]:
    """Run `sftprep ARGS` in `cwd`; a wide COLUMNS keeps rich from wrapping messages (None: the default)."""
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [*sftprep_cmd(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_main(cwd: Path, *args: str) -> Result:
    """`sftprep ARGS` run by `sftprep.cli.main` in this process, in `cwd`: exit code and output."""
    from sftprep.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, Path.cwd()
    sys.argv = ["sftprep", *args]
    os.chdir(cwd)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Exception:  # what a user would see as a traceback
        code = 1
        err.write("Traceback (in-process run)\n" + traceback.format_exc())
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return Result(code, out.getvalue(), err.getvalue())


def no_traceback(r: Any) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr.strip().splitlines()[-1:]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), "utf-8")
    return path
