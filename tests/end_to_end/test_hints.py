"""Every fix that an error or reject message suggests works: each case makes the mistake, reads the hint from
the message, applies exactly that fix and shows the error is gone.

To add a case: write a function `case_NAME(d: Path) -> None` that sets up the mistake in `d` (the cwd), runs
the failing command with `sftprep(...)`, checks the exit code and message, applies the hint (for a shell
command quoted in the message, `run_hint`), runs the fixed command and checks it succeeds; then add it to
CASES. `sftprep(...)` runs in this process (fast); prepare runs with one worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import GOOD, write_jsonl
from hint_helpers import fails, fix_of, ok, run_hint, sftprep, write_parquet

from sftprep.outdir import out_dir_lock


def case_directory_input(d: Path) -> None:
    write_jsonl((d / "data").mkdir() or d / "data" / "a.jsonl", GOOD)
    write_parquet(d / "data" / "b.parquet")
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
