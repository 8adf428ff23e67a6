"""Input paths to the files a run reads, every problem found before anything runs.

An input is a file (JSON, JSONL, CSV, TSV, also compressed; Parquet; Arrow IPC), a `datasets.save_to_disk`
directory, a directory of data files (the files directly in it, of one format, in name order), or a glob
(`data/*.parquet`, `shards/**/*.jsonl`: quoted, so that sftprep expands it; sorted). A format sftprep does not
read is refused with the command that converts it.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from sftprep.errors import InputError
from sftprep.read.columnar import DATASET_DICT, dataset_dict_splits, is_dataset_dir
from sftprep.read.containers import SUFFIXES, compression_of
from sftprep.read.format_hints import UNREADABLE, conversion_command
from sftprep.read.sniff import COLUMNAR, sniff_format

EXPECTED = (
    "JSONL, JSON, CSV or TSV (optionally gzip/zstd/bz2/xz-compressed), Parquet, Arrow, a datasets.save_to_disk "
    "directory, a directory of such files or a glob"
)
# Formats sftprep reads (`sniff_format` names); "text" is read as JSON Lines (each bad line becomes a reject).
READABLE = ("json", "jsonl", "empty", "text", "csv", "tsv", *COLUMNAR)
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".arrow")
_META = {"dataset_info.json", "state.json", DATASET_DICT, "manifest.json"}  # metadata, not records
_GLOB_CHARS = set("*?[")
_SHOWN = 5


def data_suffix(name: str) -> str | None:
    """The data format suffix of a file name (compression suffixes looked through), or None."""
    lower = name.lower()
    for suffix in SUFFIXES.values():
        lower = lower.removesuffix(suffix)
    return next((s for s in DATA_SUFFIXES if lower.endswith(s)), None)


def _data_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in _META and data_suffix(p.name)
    )


def _directory(given: str, p: Path) -> tuple[list[Path], list[str]]:
    """The inputs a directory stands for, or the problem with it."""
    where = given.rstrip("/") or "/"
    if is_dataset_dir(p):
        return [p], []
    splits = dataset_dict_splits(p)
    if splits:
        return [], [
            f"input {given!r} is a directory written by datasets.DatasetDict.save_to_disk (splits: "
            f"{', '.join(splits)}); fix: pass one split, e.g. {where}/{splits[0]}"
        ]
    if (p / "manifest.json").is_file() and any(p.glob("data-*.parquet")):
        return [], [
            f"input {given!r} is a directory written by `sftprep prepare` (prepared examples, not records); "
            "fix: pass the data files it was prepared from"
        ]
    try:
        files = _data_files(p)
    except OSError as exc:
        return [], [f"input {given!r} is a directory that cannot be read ({exc.strerror or exc})"]
    if not files:
        hint = _nested_hint(p, where)
        return [], [f"input {given!r} is a directory that holds no data files ({', '.join(DATA_SUFFIXES)}); {hint}"]
    kinds = sorted({str(data_suffix(f.name)) for f in files})
    if len(kinds) > 1:
        shown = ", ".join(f"{sum(data_suffix(f.name) == k for f in files)} {k}" for k in kinds)
        return [], [
            f"input {given!r} is a directory holding data files of several formats ({shown}); "
            f"fix: pass the files of one format, e.g. '{where}/*{kinds[0]}'"
        ]
    return files, []


def _nested_hint(p: Path, where: str) -> str:
    """A glob naming data files one level down, when there are some."""
    try:
        for sub in sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))[:50]:
            if is_dataset_dir(sub):
                return f"fix: pass the datasets.save_to_disk directory inside it, e.g. {where}/{sub.name}"
            found = [f for f in sub.iterdir() if f.is_file() and data_suffix(f.name)][:1]
            if found:
                pattern = f"{where}/**/*{data_suffix(found[0].name)}"
                return f"fix: pass a glob of the files in its subdirectories, e.g. '{pattern}'"
    except OSError:
        pass
    return f"expected {EXPECTED}; fix: check the path"


def _glob(given: str) -> tuple[list[Path], list[str]]:
    matches = sorted(Path(m) for m in glob.glob(given, recursive=True))
    files = [m for m in matches if m.is_file() or is_dataset_dir(m)]
    if not files:
        return [], [
            f"input {given!r} does not exist and, as a glob, matches no file; expected {EXPECTED}; "
            "fix: check the path or the pattern"
        ]
    return files, []


def _file_problem(given: str, p: Path) -> str | None:
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        return f"input {given!r} cannot be read ({reason}); expected {EXPECTED}; fix: check its permissions"
    return format_problem(p, given)


def expand(given: str | Path) -> tuple[list[Path], list[str]]:
    """The files one input path stands for, and the problems with it (one message each)."""
    text = str(given)
    p = Path(given)
    if not p.exists():
        if _GLOB_CHARS & set(text):
            files, problems = _glob(text)
        else:
            return [], [f"input {text!r} does not exist; expected {EXPECTED}; fix: check the path and spelling"]
    elif p.is_dir():
        files, problems = _directory(text, p)
    else:
        files, problems = [p], []
    problems += [msg for f in files if f.is_file() for msg in [_file_problem(str(f), f)] if msg]
    return files, problems


def check_input_path(path: str | Path) -> Path:
    """`path` as a Path when it is one readable input file or dataset directory, else InputError."""
    files, problems = expand(path)
    if problems:
        raise InputError("\n".join(problems))
    if len(files) != 1 or files[0] != Path(path):
        raise InputError(f"input {str(path)!r} stands for {len(files)} files; read them one by one")
    return files[0]


def iter_input_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every input path expanded and checked up front; one InputError listing every problem."""
    given = list(paths)
    if not given:
        raise InputError(f"no input files given; expected {EXPECTED}")
    files: list[Path] = []
    problems: list[str] = []
    for g in given:
        found, bad = expand(g)
        files += found
        problems += bad
    if problems:
        raise InputError("\n".join(problems))
    return files


def format_problem(path: Path, given: str) -> str | None:
    """Why `path` cannot be read as a record file (a format sftprep recognises but does not read), or None."""
    try:
        kind = sniff_format(path)
        compression = compression_of(path)
    except OSError as exc:
        return f"input {given!r} cannot be read ({exc.strerror or exc}); expected {EXPECTED}"
    if kind in READABLE and not (compression and kind in COLUMNAR):
        return None
    steps = []
    src = given
    if compression:
        command, src = conversion_command(compression, given)
        steps.append(command)
    if kind in COLUMNAR:
        what = f"a {compression}-compressed {'Parquet' if kind == 'parquet' else 'Arrow'} file"
        then = f"pass {src}"
    else:
        what = UNREADABLE[kind][0] + (f", {compression}-compressed" if compression else "")
        command, dst = conversion_command(kind, src)
        steps.append(command)
        then = "pass the files inside it" if kind == "zip" else f"pass {dst}"
    return (
        f"input {given!r} is {what}, which sftprep does not read; expected {EXPECTED}; "
        f"fix: {' && '.join(steps)}, then {then}"
    )
