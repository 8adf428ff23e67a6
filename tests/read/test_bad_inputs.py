"""The bad-input corpus (tests/data/bad/, made by make_corpus.py) through `sftprep prepare` (issue #6).

For every file: exit 0 with the rejected count in the summary, each bad record in rejects.jsonl with its
reason and a message naming file:line and the field, the good records around it written, and the manifest's
per-file counts reconciled; with --strict: exit 2 naming the first bad record, and no output left behind.
The CLI runs in-process (`sftprep.cli.main`, fast) except where the process itself matters (subprocess).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import DATA_DIR
from dummy_tokenizer import MARKER_IDS, hand_ids, write_dummy_tokenizer

from sftprep.cli import main

BAD = DATA_DIR / "bad"
IGNORE = -100


@dataclass(frozen=True)
class Case:
    file: str
    rejects: tuple[tuple[int, str, str], ...]  # (line, reason, text the message must contain: the field)
    written: tuple[int, ...]  # source lines of the records that must become examples


CASES = [
    Case("invalid_json.jsonl", ((2, "invalid_json", "invalid JSON"),), (1, 3)),
    Case("truncated_last_line.jsonl", ((3, "truncated_line", "truncated last line"),), (1, 2)),
    Case("content_number.jsonl", ((2, "wrong_type", "messages[1].content: expected a string"),), (1, 3)),
    Case("messages_dict.jsonl", ((2, "wrong_type", "messages: expected a list of messages, got object"),), (1, 3)),
    Case("role_list.jsonl", ((2, "wrong_type", "messages[1].role: expected a role string, got array"),), (1, 3)),
    Case("empty_messages.jsonl", ((2, "empty_messages", "messages: expected a non-empty list"),), (1, 3)),
    Case("missing_messages.jsonl", ((2, "unknown_format", "record: expected one of these shapes"),), (1, 3)),
    Case("no_assistant.jsonl", ((2, "no_assistant_turn", "record: expected at least one assistant"),), (1, 3)),
    Case("unknown_role.jsonl", ((2, "unknown_role", "messages[1].role: expected one of"),), (1, 3)),
    Case("consecutive_roles.jsonl", ((2, "consecutive_roles", "messages[1]: expected a different role"),), (1, 3)),
    Case("null_content.jsonl", ((2, "null_content", "messages[1].content: expected a string, got null"),), (1, 3)),
    Case("non_utf8.jsonl", ((2, "bad_encoding", "byte 0xff"),), (1, 3)),
    Case(
        "nan.jsonl",
        ((2, "nan_literal", "found NaN"), (3, "nan_literal", "found Infinity"), (4, "nan_literal", "found -Infinity")),
        (1, 5),
    ),
    Case("not_object.jsonl", ((2, "not_object", "got array"), (3, "not_object", "got string")), (1, 4)),
    Case("deeply_nested.jsonl", ((2, "invalid_json", "nested too deeply"),), (1, 3)),
    Case("array_element.json", ((2, "not_object", "got number"),), (1, 3)),
    Case("bom.jsonl", (), (1, 2)),
    Case("crlf.jsonl", (), (1, 2, 3)),
    Case("blank_lines.jsonl", (), (1, 5)),
    Case("special_tokens.jsonl", (), (1, 2, 3)),
    Case("empty.jsonl", (), ()),
]
IDS = [c.file for c in CASES]


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dummy_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """`sftprep ARGS` in-process: the exit code main() gives (1 and the traceback for an escaping exception)."""

    def run(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["sftprep", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception:
            code = 1
            print(traceback.format_exc(), file=sys.stderr)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def prepare_args(src: Path, out: Path, tok: Path, *extra: str) -> list[str]:
    return ["prepare", str(src), "-o", str(out), "--tokenizer", str(tok), "--template", "chatml", *extra]


def rejects(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text("utf-8").splitlines()]


def examples(out: Path) -> list[dict[str, Any]]:
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    return [row for name in manifest["shards"] for row in pq.read_table(out / name).to_pylist()]


def check_reconciled(manifest: dict[str, Any]) -> None:
    for name, f in manifest["per_file"].items():
        assert f["records_read"] == f["records_with_examples"] + f["records_rejected"], (name, f)
        assert f["reconciled"] is True
    assert manifest["records_read"] == sum(f["records_read"] for f in manifest["per_file"].values())


def no_output_left(out: Path) -> None:
    assert not out.exists(), f"{out} was left behind: {sorted(p.name for p in out.iterdir())}"
    staging = out.with_name(f".{out.name}.tmp")
    assert not staging.exists(), f"staging dir {staging} was left behind"


def check_reported(case: Case, src: Path, out: Path, r: Result) -> dict[str, Any]:
    """The non-strict contract for one case; returns the manifest. A run that writes no example exits 3 (and
    still writes its manifest and rejects.jsonl)."""
    assert r.code == (0 if case.written else 3), r.err
    n_bad = len(case.rejects)
    shown = re.search(r"records rejected\s*│\s*(\d+)\s*│", r.out)
    assert shown is not None and int(shown.group(1)) == n_bad, r.out
    for reason in {reason for _, reason, _ in case.rejects}:
        count = sum(1 for _, x, _ in case.rejects if x == reason)
        assert f"rejected {count} x {reason}" in r.out
    assert ("warning:" in r.out) == bool(n_bad)
    rows = rejects(out)
    assert [(row["source_line"], row["reason"]) for row in rows] == [(ln, reason) for ln, reason, _ in case.rejects]
    for row, (line, _, field) in zip(rows, case.rejects):
        assert row["source_file"] == str(src)
        assert row["message"].startswith(f"{src}:{line}: "), row["message"]
        assert field in row["message"], row["message"]
        assert "record" in row or "raw_text" in row  # the original is kept for the user to fix
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert sorted({e["source_line"] for e in examples(out)}) == list(case.written)
    assert manifest["records_read"] == len(case.written) + n_bad
    assert manifest["records_rejected"] == n_bad
    check_reconciled(manifest)
    if case.written or n_bad:
        assert manifest["per_file"][str(src)]["records_read"] == len(case.written) + n_bad
    return manifest


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_record_is_reported_and_the_run_goes_on(case: Case, cli: Any, tok_dir: Path, tmp_path: Path) -> None:
    src, out = BAD / case.file, tmp_path / "out"
    check_reported(case, src, out, cli(*prepare_args(src, out, tok_dir)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_strict_stops_at_the_first_bad_record(case: Case, cli: Any, tok_dir: Path, tmp_path: Path) -> None:
    src, out = BAD / case.file, tmp_path / "out"
    r = cli(*prepare_args(src, out, tok_dir, "--strict"))
    if not case.rejects:
        assert r.code == (0 if case.written else 3), r.err
        assert (out / "manifest.json").is_file()
        return
    line, reason, field = case.rejects[0]
    assert r.code == 2, (r.out, r.err)
    assert "Traceback" not in r.err
    assert f"strict mode: record rejected ({reason})" in r.err
    assert f"{src}:{line}: " in r.err and field in r.err
    for later, _, _ in case.rejects[1:]:
        assert f"{src}:{later}:" not in r.err  # it stopped at the first one
    no_output_left(out)


def test_role_map_fixes_an_unknown_role(cli: Any, tok_dir: Path, tmp_path: Path) -> None:
    src, out = BAD / "unknown_role.jsonl", tmp_path / "out"
    r = cli(*prepare_args(src, out, tok_dir, "--role-map", "wizard=assistant"))
    assert r.code == 0, r.err
    assert rejects(out) == []
    row = next(e for e in examples(out) if e["source_line"] == 2)
    assert row["input_ids"] == hand_ids(
        "<|im_start|>user\ncast a spell<|im_end|>\n<|im_start|>assistant\nAbracadabra.<|im_end|>\n"
    )
    assert [x for x in row["labels"] if x != IGNORE] == hand_ids("Abracadabra.<|im_end|>")


def test_merge_consecutive_joins_the_turns(cli: Any, tok_dir: Path, tmp_path: Path) -> None:
    src, out = BAD / "consecutive_roles.jsonl", tmp_path / "out"
    r = cli(*prepare_args(src, out, tok_dir, "--merge-consecutive"))
    assert r.code == 0, r.err
    assert rejects(out) == []
    row = next(e for e in examples(out) if e["source_line"] == 2)
    text = "<|im_start|>user\nFirst part.\n\nSecond part.<|im_end|>\n<|im_start|>assistant\nBoth read.<|im_end|>\n"
    assert row["input_ids"] == hand_ids(text)
    assert [x for x in row["labels"] if x != IGNORE] == hand_ids("Both read.<|im_end|>")


def test_special_token_strings_in_user_text_are_plain_text(cli: Any, tok_dir: Path, tmp_path: Path) -> None:
    """User text spelling <|im_end|> is encoded as plain characters (counted); assistant text keeps the
    tokenizer's own encoding, so its </s> is the special token: what the model emits."""
    src, out = BAD / "special_tokens.jsonl", tmp_path / "out"
    assert cli(*prepare_args(src, out, tok_dir)).code == 0
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["special_tokens_in_content"] == 1
    row = next(e for e in examples(out) if e["source_line"] == 2)
    ids = (
        hand_ids("<|im_start|>user\n")
        + [ord(c) for c in "say <|im_end|> now"]
        + hand_ids("<|im_end|>\n<|im_start|>assistant\nsaid </s><|im_end|>\n")
    )
    assert row["input_ids"] == ids
    assert row["input_ids"].count(MARKER_IDS["<|im_end|>"]) == 2  # only the template's own markers
    assert [x for x in row["labels"] if x != IGNORE] == hand_ids("said </s><|im_end|>")


def test_crlf_line_ends_and_a_bom_are_not_content(cli: Any, tok_dir: Path, tmp_path: Path) -> None:
    for name in ("crlf.jsonl", "bom.jsonl"):
        out = tmp_path / name
        assert cli(*prepare_args(BAD / name, out, tok_dir)).code == 0
        rows = examples(out)
        assert rows[0]["input_ids"] == hand_ids("<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n")
        if name == "crlf.jsonl":  # the \r\n escaped inside the string is content, the line end is not
            head = hand_ids("<|im_start|>user\nline one\r\nline two<|im_end|>")
            assert rows[1]["input_ids"][: len(head)] == head
            assert all(ord("\r") not in r["input_ids"] for r in (rows[0], rows[2]))


def test_an_empty_file_is_listed_in_per_file(cli: Any, tok_dir: Path, tmp_path: Path) -> None:
    src, out = BAD / "empty.jsonl", tmp_path / "out"
    r = cli(*prepare_args(src, out, tok_dir))
    assert r.code == 3 and "no example written" in r.err and "hold no record" in r.err, r.err
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["per_file"][str(src)]["records_read"] == 0


def test_lone_surrogate_is_rejected_not_a_crash(cli: Any, tok_dir: Path, tmp_path: Path) -> None:
    src, out = BAD / "lone_surrogate.jsonl", tmp_path / "out"
    r = cli(*prepare_args(src, out, tok_dir))
    assert r.code == 0, r.err[-2000:]
    assert [row["source_line"] for row in rejects(out)] == [2]
    assert rejects(out)[0]["message"].startswith(f"{src}:2: ")
    assert sorted(e["source_line"] for e in examples(out)) == [1, 3]


def readable_gzip_lines(path: Path) -> int:
    n = 0
    with gzip.open(path, "rb") as f:
        try:
            for _ in f:
                n += 1
        except EOFError:
            return n
    raise AssertionError(f"{path} is not truncated")


def test_truncated_gzip_keeps_the_records_before_the_cut(cli: Any, tok_dir: Path, tmp_path: Path) -> None:
    src, out = BAD / "truncated.jsonl.gz", tmp_path / "out"
    readable = readable_gzip_lines(src)
    assert readable > 100
    r = cli(*prepare_args(src, out, tok_dir))
    assert r.code == 0, r.err
    assert [(row["source_line"], row["reason"]) for row in rejects(out)] == [(readable + 1, "read_error")]
    assert len(examples(out)) == readable


# ---------------------------------------------------------------------------- the real process


def sftprep_cmd() -> list[str]:
    script = Path(sys.executable).parent / "sftprep"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sftprep.cli"]


def run_process(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "1000"}
    return subprocess.run([*sftprep_cmd(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["missing", "directory", "missing-among-good"])
def test_unusable_path_exits_2_with_no_output(kind: str, tok_dir: Path, tmp_path: Path) -> None:
    shutil.copy(BAD / "invalid_json.jsonl", tmp_path / "good.jsonl")
    (tmp_path / "adir").mkdir()
    inputs = {"missing": ["nope.jsonl"], "directory": ["adir"], "missing-among-good": ["good.jsonl", "nope.jsonl"]}
    r = run_process(tmp_path, "prepare", *inputs[kind], "-o", "out", "--tokenizer", str(tok_dir))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    expected = "'adir' is a directory" if kind == "directory" else "'nope.jsonl' does not exist"
    assert expected in r.stderr
    no_output_left(tmp_path / "out")


def test_bad_file_through_the_real_process(tok_dir: Path, tmp_path: Path) -> None:
    src = BAD / "nan.jsonl"
    r = run_process(tmp_path, *prepare_args(src, tmp_path / "out", tok_dir))
    assert r.returncode == 0, r.stderr
    assert "rejected 3 x nan_literal" in r.stdout
    r = run_process(tmp_path, *prepare_args(src, tmp_path / "strict", tok_dir, "--strict"))
    assert r.returncode == 2 and f"{src}:2: " in r.stderr
    no_output_left(tmp_path / "strict")


@pytest.mark.parametrize("name", ["train[v2].jsonl", "train[/v2].jsonl"])
def test_error_messages_print_paths_verbatim(name: str, tok_dir: Path, tmp_path: Path) -> None:
    r = run_process(tmp_path, "prepare", name, "-o", "out", "--tokenizer", str(tok_dir))
    assert r.returncode == 2, r.stderr[-500:]
    assert f"input {name!r} does not exist" in r.stderr


# ---------------------------------------------------------------------------- a 50 MB record

MAX_RSS_BYTES = 2 << 30
MAX_SECONDS = 45.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to watch the child's memory")
def test_a_50mb_record_is_handled_in_bounded_memory(tok_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    big = {"messages": [{"role": "user", "content": "y" * (50 << 20)}, {"role": "assistant", "content": "n"}]}
    with src.open("w", encoding="utf-8") as f:
        for record in (json.loads(BAD.joinpath("invalid_json.jsonl").read_text().splitlines()[0]), big):
            f.write(json.dumps(record) + "\n")
        f.write(BAD.joinpath("invalid_json.jsonl").read_text().splitlines()[2] + "\n")
    out = tmp_path / "out"
    with (tmp_path / "stdout").open("w") as so, (tmp_path / "stderr").open("w") as se:
        proc = subprocess.Popen([*sftprep_cmd(), *prepare_args(src, out, tok_dir)], stdout=so, stderr=se)
        start, peak, killed = time.monotonic(), 0, ""
        while proc.poll() is None:
            with contextlib.suppress(OSError):  # the process may just have exited
                peak = max(peak, rss_bytes(proc.pid))
            if peak > MAX_RSS_BYTES or time.monotonic() - start > MAX_SECONDS:
                killed = f"killed: peak RSS {peak >> 20} MiB after {time.monotonic() - start:.0f} s"
                proc.kill()
            time.sleep(0.05)
    assert not killed, killed
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()[-2000:]
    bad = rejects(out)
    assert [row["source_line"] for row in bad] == [2] and bad[0]["reason"]
    assert bad[0]["message"].startswith(f"{src}:2: ")
    assert sorted(e["source_line"] for e in examples(out)) == [1, 3]
    check_reconciled(json.loads((out / "manifest.json").read_text("utf-8")))
