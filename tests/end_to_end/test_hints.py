"""Every fix that an error or reject message suggests works: each case makes the mistake, reads the hint from
the message, applies exactly that fix and shows the error is gone.

To add a case: write a function `case_NAME(d: Path) -> None` that sets up the mistake in `d` (the cwd), runs
the failing command with `sftprep(...)`, checks the exit code and message, applies the hint (for a shell
command quoted in the message, `run_hint`), runs the fixed command and checks it succeeds; then add it to
CASES. `sftprep(...)` runs in this process (fast); prepare runs with one worker.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import re
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import GOOD, Result, no_traceback, run_main, write_jsonl

from sftprep.outdir import out_dir_lock

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


def _parquet(p: Path) -> None:
    pq.write_table(pa.Table.from_pylist(GOOD), p)


def _arrow(p: Path) -> None:
    table = pa.Table.from_pylist(GOOD)
    with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def _arrow_stream(p: Path) -> None:
    table = pa.Table.from_pylist(GOOD)
    with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)


def _csv(p: Path, dialect: str = "excel") -> None:
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, ["instruction", "input", "output"], dialect=dialect)
        w.writeheader()
        w.writerows(ALPACA)


def _jsonl_bytes() -> bytes:
    return "".join(json.dumps(r) + "\n" for r in GOOD).encode()


def _packed(make: Callable[[Path], None], compress: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """`make` writes the file without the compression suffix; the result is it compressed."""

    def write(p: Path) -> None:
        make(p.with_suffix(""))
        p.write_bytes(compress(p.with_suffix("").read_bytes()))

    return write


def _zstd_frame(raw: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as f:
        f.write(raw)
    return sink.getvalue().to_pybytes()


def _zstd(p: Path, raw: bytes) -> None:
    p.write_bytes(_zstd_frame(raw))


def _examples(out: Path) -> list[list[int]]:
    return [ids for f in sorted(out.glob("data-*.parquet")) for ids in pq.read_table(f)["input_ids"].to_pylist()]


# Formats read directly (issue #13): each gives the examples of the same records as JSONL.
READ: dict[str, tuple[str, Callable[[Path], None]]] = {
    "parquet": ("data.parquet", _parquet),
    "arrow": ("data.arrow", _arrow),
    "arrow-stream": ("data-00000-of-00001.arrow", _arrow_stream),
    "csv": ("data.csv", _csv),
    "tsv": ("data.tsv", lambda p: _csv(p, "excel-tab")),
    "csv.gz": ("data.csv.gz", _packed(_csv, gzip.compress)),
    "bz2": ("data.jsonl.bz2", lambda p: p.write_bytes(bz2.compress(_jsonl_bytes()))),
    "xz": ("data.jsonl.xz", lambda p: p.write_bytes(lzma.compress(_jsonl_bytes()))),
    "zstd": ("data.jsonl.zst", lambda p: _zstd(p, _jsonl_bytes())),
    "parquet named .jsonl": ("data.jsonl", _parquet),  # sniffed by its bytes, not its name
}  # fmt: skip


@pytest.mark.parametrize("kind", list(READ))
def test_formats_are_read_as_their_records(tmp_path: Path, kind: str) -> None:
    name, make = READ[kind]
    make(tmp_path / name)
    ok(sftprep(tmp_path, "prepare", name, "-o", "out"), 2, tmp_path / "out")
    reference = ALPACA if kind in ("csv", "tsv", "csv.gz") else GOOD
    write_jsonl(tmp_path / "ref.jsonl", reference)
    ok(sftprep(tmp_path, "prepare", "ref.jsonl", "-o", "ref"), 2, tmp_path / "ref")
    assert _examples(tmp_path / "out") == _examples(tmp_path / "ref")


# Formats sftprep recognises and does not read: refused up front with a command that converts them.
FORMATS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "utf-16": ("data.jsonl", lambda p: p.write_text(_jsonl_bytes().decode(), encoding="utf-16")),
    "parquet.gz": ("data.parquet.gz", _packed(_parquet, gzip.compress)),
    "arrow.zst": ("data.arrow.zst", _packed(_arrow, _zstd_frame)),
    "parquet.xz": ("data.parquet.xz", _packed(_parquet, lzma.compress)),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(FORMATS))
def test_unreadable_format_is_refused_with_a_working_conversion(tmp_path: Path, kind: str) -> None:
    name, make = FORMATS[kind]
    make(tmp_path / name)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}  # (parquet.gz: data.parquet is there too)
    err = fails(sftprep(tmp_path, "prepare", name, "-o", "out"), 2, name, "which sftprep does not read")
    assert not (tmp_path / "out").exists()
    m = re.search(r"fix: (.*), then pass (\S+)$", err, re.M)
    assert m, err
    for p in before:  # the decompressed file the conversion writes must not be one that exists
        if p.name != name:
            p.unlink()
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    run_hint(tmp_path, m.group(1))
    assert {p: p.read_bytes() for p in before} == before  # the conversion wrote only new files
    ok(sftprep(tmp_path, "prepare", m.group(2), "-o", "out"), 2, tmp_path / "out")


def test_zip_input_is_refused_with_a_working_command(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        z.writestr("inner/data.jsonl", _jsonl_bytes())
    err = fails(sftprep(tmp_path, "prepare", "data.zip", "-o", "out"), 2, "a zip archive", "pass the files inside it")
    run_hint(tmp_path, re.search(r"fix: (.*), then pass", err).group(1))  # type: ignore[union-attr]
    ok(sftprep(tmp_path, "prepare", "data_files/inner/data.jsonl", "-o", "out"), 2, tmp_path / "out")


# ---------------------------------------------------------------------------- paths and OUT_DIR


def case_directory_input(d: Path) -> None:
    write_jsonl((d / "data").mkdir() or d / "data" / "a.jsonl", GOOD)
    _parquet(d / "data" / "b.parquet")
    err = fails(sftprep(d, "prepare", "data", "-o", "out"), 2, "is a directory", "several formats")
    pattern = re.search(r"e\.g\. '(\S+)'", fix_of(err)).group(1)  # type: ignore[union-attr]
    ok(sftprep(d, "prepare", pattern, "-o", "out"), 2, d / "out")  # the quoted glob, expanded by sftprep


def case_directory_of_subdirectories(d: Path) -> None:
    write_jsonl((d / "data" / "train").mkdir(parents=True) or d / "data" / "train" / "a.jsonl", GOOD)
    err = fails(sftprep(d, "prepare", "data", "-o", "out"), 2, "holds no data files")
    pattern = re.search(r"e\.g\. '(\S+)'", fix_of(err)).group(1)  # type: ignore[union-attr]
    ok(sftprep(d, "prepare", pattern, "-o", "out"), 2, d / "out")


def case_dataset_dict_directory(d: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(GOOD)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(d / "dd"))
    err = fails(sftprep(d, "prepare", "dd", "-o", "out"), 2, "DatasetDict")
    split = re.search(r"e\.g\. (\S+)$", fix_of(err)).group(1)  # type: ignore[union-attr]
    ok(sftprep(d, "prepare", split, "-o", "out"), 2, d / "out")


def case_records_of_another_shape(d: Path) -> None:
    write_jsonl(d / "qa.jsonl", [{"question": "2+2?", "answer": "4"}, {"question": "3+3?", "answer": "6"}])
    err = fails(sftprep(d, "prepare", "qa.jsonl", "-o", "out"), 3, "unknown_format", "keys [question, answer]")
    flags = re.search(r"fix: pass (--columns \S+)", err).group(1).split(" ")  # type: ignore[union-attr]
    ok(sftprep(d, "prepare", "qa.jsonl", "-o", "out", "--overwrite", *flags), 2, d / "out")


def case_parquet_of_another_shape(d: Path) -> None:
    rows = [{"dialog": [{"speaker": "user", "text": "hi"}, {"speaker": "bot", "text": "yo"}]}] * 2
    pq.write_table(pa.Table.from_pylist(rows), d / "chats.parquet")
    err = fails(sftprep(d, "prepare", "chats.parquet", "-o", "out"), 2, "refused before the run")
    assert not (d / "out").exists()
    found = re.search(r"fix: pass (--columns \S+) (--tags \S+)", err)
    assert found, err
    ok(sftprep(d, "prepare", "chats.parquet", "-o", "out", *found.group(1).split(" "), *found.group(2).split(" ")), 2,
       d / "out")  # fmt: skip


def case_out_dir_of_another_run(d: Path) -> None:
    write_jsonl(d / "a.jsonl", GOOD[:1])
    write_jsonl(d / "b.jsonl", GOOD)
    ok(sftprep(d, "prepare", "a.jsonl", "-o", "out"))
    fails(sftprep(d, "prepare", "b.jsonl", "-o", "out"), 2, "pass --overwrite")
    ok(sftprep(d, "prepare", "b.jsonl", "-o", "out", "--overwrite"), 2, d / "out")


def case_user_directory(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    (d / "mydata").mkdir()
    (d / "mydata" / "notes.txt").write_text("mine")
    fails(sftprep(d, "prepare", "in.jsonl", "-o", "mydata", "--overwrite"), 2, "choose another -o", "move it away")
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "mydata-prepared"), 2, d / "mydata-prepared")
    assert (d / "mydata" / "notes.txt").read_text() == "mine"
    (d / "mydata").rename(d / "mydata-moved")  # "or move it away yourself"
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "mydata"), 2, d / "mydata")


def case_user_file_in_an_output(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--max-length", "16"))
    (d / "out" / "notes.txt").write_text("mine")
    err = fails(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--overwrite"), 2, "notes.txt")
    assert "move them out of" in err
    (d / "out" / "notes.txt").rename(d / "notes.txt")
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--overwrite"), 2, d / "out")


def case_symlinked_out_dir(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "real", "--max-length", "16"))
    (d / "link").symlink_to("real")
    fails(sftprep(d, "prepare", "in.jsonl", "-o", "link", "--overwrite"), 2, "symbolic link", "target directory")
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "real", "--overwrite"), 2, d / "real")
    assert (d / "link").is_symlink()


def case_current_directory(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    err = fails(sftprep(d, "prepare", "in.jsonl", "-o", "."), 2, "current directory")
    flag = re.search(r"e\.g\. -o (\S+)", err).group(1)  # type: ignore[union-attr]
    ok(sftprep(d, "prepare", "in.jsonl", "-o", flag), 2, d / flag)


def case_busy_out_dir(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    with out_dir_lock(d / "out", "prepare"):
        fails(sftprep(d, "prepare", "in.jsonl", "-o", "out"), 2, "being written by another sftprep run", "pid")
        ok(sftprep(d, "prepare", "in.jsonl", "-o", "out2"), 2, d / "out2")  # "or choose another -o"
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out"), 2, d / "out")  # "wait for it to finish"


# ---------------------------------------------------------------------------- reject hints (fix: in rejects.jsonl)


def case_max_length_too_small(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)  # 19 and 15 tokens with the default tokenizer and chatml
    err = fails(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--max-length", "4"), 3, "no example written")
    assert "raise --max-length to at least" in err and "--truncation" not in err  # the prompt alone is too long
    need = max(int(x) for x in re.findall(r"at least (\d+)", (d / "out" / "rejects.jsonl").read_text()))
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--max-length", str(need), "--overwrite"), 2, d / "out")


def case_a_file_in_another_encoding(d: Path) -> None:
    line = json.dumps(
        {"messages": [{"role": "user", "content": "café?"}, {"role": "assistant", "content": "oui"}]},
        ensure_ascii=False,
    )
    (d / "in.jsonl").write_bytes(line.encode("utf-8").replace("é".encode(), b"\xe9") + b"\n")
    fails(sftprep(d, "prepare", "in.jsonl", "-o", "out"), 3, "bad_encoding")
    message = json.loads((d / "out" / "rejects.jsonl").read_text())["message"]
    command = re.search(r"(iconv [^)]*)\)", message)
    assert command, message
    run_hint(d, command.group(1))
    ok(sftprep(d, "prepare", "converted.jsonl", "-o", "out2"), 1, d / "out2")


def case_tool_conversation_with_a_builtin_template(d: Path) -> None:
    call = {"type": "function", "id": "c1", "function": {"name": "get_weather", "arguments": "{}"}}
    record = {
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
            {"role": "assistant", "content": "Sunny."},
        ],
    }
    write_jsonl(d / "in.jsonl", [record])
    fails(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--template", "vicuna"), 3, "template_unsupported")
    fix = fix_of(json.loads((d / "out" / "rejects.jsonl").read_text())["message"])
    assert fix.startswith("--template ")  # a built-in verified to render tools with the embedded tokenizer
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out2", *fix.split(" or ")[0].split()), 1, d / "out2")


def case_max_length_truncation(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--max-length", "16"), 1, d / "out")
    reject = json.loads((d / "out" / "rejects.jsonl").read_text())
    assert reject["reason"] == "too_long" and "--truncation right" in reject["message"]
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out2", "--max-length", "16", "--truncation", "right"), 2, d / "out2")


def case_max_chars(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    err = fails(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--max-chars", "20"), 3, "record_too_large")
    assert "raise --max-chars" in err
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--max-chars", "100000", "--overwrite"), 2, d / "out")


# ---------------------------------------------------------------------------- inspect, stats, tokenizer train


def case_inspect_index_out_of_range(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out"))
    err = fails(sftprep(d, "inspect", "out", "--index", "7"), 2, "--index 7")
    last = re.search(r"give --index 0 to (\d+)", err).group(1)  # type: ignore[union-attr]
    ok(sftprep(d, "inspect", "out", "--index", last))


def case_inspect_html_is_a_directory(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out"))
    (d / "reports").mkdir()
    (d / "reports" / "report.html").write_text("my own notes")
    err = fails(sftprep(d, "inspect", "out", "--html", "reports"), 2, "is a directory")
    suggested = re.search(r"e\.g\. --html (\S+)", err).group(1)  # type: ignore[union-attr]
    ok(sftprep(d, "inspect", "out", "--html", suggested))
    assert (d / "reports" / "report.html").read_text() == "my own notes"
    assert "sftprep report" in (d / suggested).read_text()
    ok(sftprep(d, "inspect", "out", "--html", suggested))  # its own report is replaced


def case_inspect_html_is_a_user_file(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out"))
    (d / "notes.txt").write_text("mine")
    err = fails(sftprep(d, "inspect", "out", "--html", "notes.txt"), 2, "not a report sftprep wrote")
    suggested = re.search(r"e\.g\. --html (\S+)", err).group(1)  # type: ignore[union-attr]
    ok(sftprep(d, "inspect", "out", "--html", suggested))
    assert (d / "notes.txt").read_text() == "mine"


def case_stats_of_a_missing_directory(d: Path) -> None:
    fails(sftprep(d, "stats", "out"), 2, "does not exist", "sftprep prepare data.jsonl -o out")
    write_jsonl(d / "data.jsonl", GOOD)
    ok(sftprep(d, "prepare", "data.jsonl", "-o", "out"))
    ok(sftprep(d, "stats", "out"))


def case_stats_of_a_damaged_directory(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD)
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out"))
    (d / "out" / "data-00000.parquet").unlink()
    fails(sftprep(d, "stats", "out"), 2, "data-00000.parquet", "missing", "--overwrite")
    ok(sftprep(d, "prepare", "in.jsonl", "-o", "out", "--overwrite"))
    ok(sftprep(d, "stats", "out"))


def case_tokenizer_train_into_a_user_directory(d: Path) -> None:
    write_jsonl(d / "in.jsonl", GOOD * 20)
    (d / "tok").mkdir()
    (d / "tok" / "notes.txt").write_text("mine")
    fails(sftprep(d, "tokenizer", "train", "in.jsonl", "--vocab-size", "300", "-o", "tok"), 2, "choose another -o")
    ok(sftprep(d, "tokenizer", "train", "in.jsonl", "--vocab-size", "300", "-o", "tok2"))
    assert [p.name for p in (d / "tok").iterdir()] == ["notes.txt"]


CASES = [
    case_directory_input,
    case_directory_of_subdirectories,
    case_dataset_dict_directory,
    case_records_of_another_shape,
    case_parquet_of_another_shape,
    case_out_dir_of_another_run,
    case_user_directory,
    case_user_file_in_an_output,
    case_symlinked_out_dir,
    case_current_directory,
    case_busy_out_dir,
    case_max_length_too_small,
    case_max_length_truncation,
    case_tool_conversation_with_a_builtin_template,
    case_a_file_in_another_encoding,
    case_max_chars,
    case_inspect_index_out_of_range,
    case_inspect_html_is_a_directory,
    case_inspect_html_is_a_user_file,
    case_stats_of_a_missing_directory,
    case_stats_of_a_damaged_directory,
    case_tokenizer_train_into_a_user_directory,
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.removeprefix("case_"))
def test_hint_works(case: Callable[[Path], None], tmp_path: Path) -> None:
    case(tmp_path)
