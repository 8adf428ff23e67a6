"""The `sftprep` command line, run as a subprocess: exit codes, outputs, and messages for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import GOOD, cli, no_traceback, write_jsonl
from conftest import REPO_ROOT

from sftprep.templates.loader import builtin_names
from sftprep.tokenize.tokenizer import BPETokenizer

SAMPLE = REPO_ROOT / "examples" / "sample.jsonl"


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name not in ("in.jsonl", "bad.jsonl"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding in.jsonl and out/ written by `sftprep prepare` (shared by inspect tests)."""
    d = tmp_path_factory.mktemp("cli")
    write_jsonl(d / "in.jsonl", GOOD)
    r = cli(d, "prepare", "in.jsonl", "-o", "out")
    assert r.returncode == 0, r.stderr
    return d


def test_prepare_good_input(prepared: Path) -> None:
    out = prepared / "out"
    assert sorted(p.name for p in out.iterdir()) == ["data-00000.parquet", "manifest.json", "rejects.jsonl"]
    assert (out / "rejects.jsonl").read_text() == ""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records_read"] == 2 and manifest["examples_written"] == 2
    assert manifest["shards"] == ["data-00000.parquet"]


def test_prepare_prints_a_summary(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    r = cli(tmp_path, "prepare", "in.jsonl", "-o", "out")
    assert r.returncode == 0
    no_traceback(r)
    assert "examples written" in r.stdout
    quiet = cli(tmp_path, "prepare", "in.jsonl", "-o", "out2", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_missing_input_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    r = cli(tmp_path, "prepare", "missing.jsonl", "-o", "out")
    assert r.returncode == 2
    no_traceback(r)
    assert "missing.jsonl" in r.stderr and "does not exist" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_bad_input_is_listed(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    r = cli(tmp_path, "prepare", "in.jsonl", "nope1.jsonl", "nope2.jsonl", "-o", "out")
    assert r.returncode == 2
    assert "nope1.jsonl" in r.stderr and "nope2.jsonl" in r.stderr
    assert leftovers(tmp_path) == []


def test_long_missing_path_is_named_verbatim(tmp_path: Path) -> None:
    missing = tmp_path / ("d" * 90) / "missing.jsonl"
    r = cli(tmp_path, "prepare", str(missing), "-o", "out", columns=None)
    assert r.returncode == 2
    assert str(missing) in r.stderr


def test_directory_input_exits_2(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    r = cli(tmp_path, "prepare", "data", "-o", "out")
    assert r.returncode == 2
    no_traceback(r)
    assert "'data' is a directory" in r.stderr
    assert leftovers(tmp_path) == ["data"]


def bad_file(d: Path) -> Path:
    return write_jsonl(
        d / "bad.jsonl",
        [
            GOOD[0],
            '{"messages": [broken',
            {"messages": [{"role": "user", "content": "no answer"}]},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Boo"}]},
        ],
    )


def test_bad_records_are_rejected_with_reasons(tmp_path: Path) -> None:
    bad_file(tmp_path)
    r = cli(tmp_path, "prepare", "bad.jsonl", "-o", "out")
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(x["source_line"], x["reason"]) for x in rejects] == [
        (2, "invalid_json"),
        (3, "no_assistant_turn"),
        (4, "unknown_role"),
    ]
    for x in rejects:
        assert x["source_file"] == "bad.jsonl"
        assert x["message"].startswith(f"bad.jsonl:{x['source_line']}: ")
    assert rejects[0]["raw_text"].startswith('{"messages": [broken')
    assert rejects[2]["record"]["messages"][1]["role"] == "wizard"
    said = " ".join((r.stdout + r.stderr).split())
    assert "records rejected │ 3" in said
    for reason in ("invalid_json", "no_assistant_turn", "unknown_role"):
        assert f"rejected 1 x {reason}" in said
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["examples_written"] == 1 and manifest["records_rejected"] == 3


def test_strict_exits_2_without_output(tmp_path: Path) -> None:
    bad_file(tmp_path)
    r = cli(tmp_path, "prepare", "bad.jsonl", "-o", "out", "--strict")
    assert r.returncode == 2
    no_traceback(r)
    assert "strict mode" in r.stderr and "invalid_json" in r.stderr and "bad.jsonl:2" in r.stderr
    assert not (tmp_path / "out").exists()


def test_strict_failure_leaves_no_staging_directory(tmp_path: Path) -> None:
    bad_file(tmp_path)
    r = cli(tmp_path, "prepare", "bad.jsonl", "-o", "out", "--strict")
    assert r.returncode == 2
    assert leftovers(tmp_path) == []


def test_existing_out_dir_needs_overwrite(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    write_jsonl(tmp_path / "other.jsonl", GOOD[:1])
    assert cli(tmp_path, "prepare", "other.jsonl", "-o", "out").returncode == 0
    before = (tmp_path / "out" / "manifest.json").read_bytes()
    r = cli(tmp_path, "prepare", "in.jsonl", "-o", "out")
    assert r.returncode == 2
    no_traceback(r)
    assert "--overwrite" in r.stderr and "earlier sftprep run" in r.stderr
    assert (tmp_path / "out" / "manifest.json").read_bytes() == before
    r = cli(tmp_path, "prepare", "in.jsonl", "-o", "out", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["examples_written"] == 2


def test_overwrite_never_deletes_a_directory_sftprep_did_not_write(tmp_path: Path) -> None:
    """Issue #16: `-o scratch/mydata --overwrite` deleted the user's notes.txt."""
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    user = tmp_path / "scratch" / "mydata"
    user.mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        r = cli(tmp_path, "prepare", "in.jsonl", "-o", "scratch/mydata", *extra)
        assert r.returncode == 2, r.stderr
        no_traceback(r)
        assert "not written by sftprep" in r.stderr and "notes.txt" in r.stderr and "other inputs" not in r.stderr
        assert [p.name for p in user.iterdir()] == ["notes.txt"]
        assert sorted(p.name for p in user.parent.iterdir()) == ["mydata"]  # no staging, no lock left
    # an sftprep output with a file of the user's added to it is refused too, naming that file
    assert cli(tmp_path, "prepare", "in.jsonl", "-o", "out").returncode == 0
    (tmp_path / "out" / "report.html").write_text("mine")
    write_jsonl(tmp_path / "in.jsonl", GOOD[:1])
    r = cli(tmp_path, "prepare", "in.jsonl", "-o", "out", "--overwrite")
    assert r.returncode == 2 and "report.html" in r.stderr and "did not write" in r.stderr
    assert (tmp_path / "out" / "report.html").read_text() == "mine"


def test_unknown_template_lists_builtins(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    r = cli(tmp_path, "prepare", "in.jsonl", "-o", "out", "--template", "nosuch")
    assert r.returncode == 2
    no_traceback(r)
    assert "'nosuch'" in r.stderr
    names = builtin_names()
    assert len(names) == 11
    assert ", ".join(names) in r.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--mask", "everything", "assistant, last-turn, split-turns, none"),
        ("--truncation", "middle", "drop, right, history"),
        ("--max-length", "0", "positive"),
    ],
)
def test_bad_option_value_exits_2(tmp_path: Path, flag: str, value: str, expected: str) -> None:
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    r = cli(tmp_path, "prepare", "in.jsonl", "-o", "out", flag, value)
    assert r.returncode == 2
    no_traceback(r)
    assert flag in r.stderr and expected in r.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["prepare", "in.jsonl", "--no-such-option"], "No such option: --no-such-option"),
        (["prepare", "in.jsonl", "--max-length", "abc"], "Invalid value for '--max-length'"),
        (["prepare", "in.jsonl", "--template-var", "novalue"], "--template-var 'novalue': expected KEY=VALUE"),
        (["prepare"], "no input files given: pass INPUT..."),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_exit_2_without_traceback(tmp_path: Path, args: list[str], says: str) -> None:
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    r = cli(tmp_path, *args)
    no_traceback(r)
    assert r.returncode == 2
    assert says in r.stderr and "Usage: sftprep" in r.stderr
    assert leftovers(tmp_path) == []


def test_inspect_prints_tokens(prepared: Path) -> None:
    r = cli(prepared, "inspect", "out", "--index", "1")
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    assert "example 1 from in.jsonl:2" in r.stdout
    assert "[user] 2+2?" in r.stdout
    assert "[assistant] 4<|im_end|>" in r.stdout


def test_inspect_index_out_of_range(prepared: Path) -> None:
    r = cli(prepared, "inspect", "out", "--index", "999")
    assert r.returncode == 2
    no_traceback(r)
    assert "--index 999" in r.stderr and "2 examples" in r.stderr


def test_inspect_negative_index(prepared: Path) -> None:
    r = cli(prepared, "inspect", "out", "--index", "-1")
    no_traceback(r)
    assert r.returncode == 2
    assert "--index -1: expected 0 or more (0 is the first example)" in r.stderr
    assert r.stdout == ""


def test_inspect_missing_directory(tmp_path: Path) -> None:
    r = cli(tmp_path, "inspect", "nowhere")
    no_traceback(r)
    assert r.returncode == 2
    assert "nowhere" in r.stderr


def test_tokenizer_train_then_prepare(tmp_path: Path) -> None:
    r = cli(tmp_path, "tokenizer", "train", str(SAMPLE), "--vocab-size", "400", "-o", "tok")
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    tok = BPETokenizer.load(tmp_path / "tok")
    assert tok.vocab_size == 400
    assert tok.eos_token == "<|im_end|>" and tok.default_template == "chatml"
    assert tok.encode("<|im_start|>") == [tok.token_to_id("<|im_start|>")]
    text = "Paris is the capital."
    assert tok.decode(tok.encode(text)) == text
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    r = cli(tmp_path, "prepare", "in.jsonl", "-o", "out", "--tokenizer", "tok")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["examples_written"] == 2
    assert manifest["template"]["name"] == "chatml"
    assert manifest["tokenizer"]["vocab_size"] == 400


def test_tokenizer_train_vocab_too_small(tmp_path: Path) -> None:
    r = cli(tmp_path, "tokenizer", "train", str(SAMPLE), "--vocab-size", "100", "-o", "tok")
    assert r.returncode == 2
    no_traceback(r)
    assert "vocab size 100" in r.stderr
    assert not (tmp_path / "tok").exists()


def test_tokenizer_train_unknown_template(tmp_path: Path) -> None:
    r = cli(tmp_path, "tokenizer", "train", str(SAMPLE), "--template", "nosuch", "-o", "tok")
    no_traceback(r)
    assert r.returncode == 2
    assert f"--template 'nosuch': expected a built-in ({', '.join(builtin_names())})" in r.stderr
    assert list(tmp_path.iterdir()) == []


_ENTRY = """import atexit, sys
atexit.register(lambda: print("interpreter torn down"))
from sftprep.cli import entry
sys.argv = ["sftprep", *sys.argv[1:]]
entry()
"""


def _entry(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _ENTRY, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_executable_ends_at_once_after_a_local_prepare_only(tmp_path: Path) -> None:
    """cli.entry: a successful local `prepare` ends the process without tearing it down (atexit does not run),
    its output written and flushed; other commands and failed runs exit as usual."""
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    r = _entry(tmp_path, "prepare", "in.jsonl", "-o", "out", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "examples written" in r.stdout and "interpreter torn down" not in r.stdout
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["examples_written"] == 2
    again = _entry(tmp_path, "prepare", "in.jsonl", "-o", "out")  # up to date: nothing was run
    assert again.returncode == 0 and "up to date" in again.stdout and "interpreter torn down" in again.stdout
    shown = _entry(tmp_path, "inspect", "out")
    assert shown.returncode == 0 and "interpreter torn down" in shown.stdout
    write_jsonl(tmp_path / "bad.jsonl", [{"a": 1}])
    failed = _entry(tmp_path, "prepare", "bad.jsonl", "-o", "out-bad")
    assert failed.returncode == 3 and "interpreter torn down" in failed.stdout
