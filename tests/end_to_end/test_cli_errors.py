"""No traceback for any user mistake in the prepare-side commands (prepare, inspect, stats, template check,
tokenizer train): odd paths and option values exit 2 (3: nothing to show or train on) with a message that
names what is wrong, and nothing of the user's is changed."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import GOOD, Result, no_traceback, run_main, write_jsonl


@pytest.fixture
def d(tmp_path: Path) -> Path:
    """A cwd with in.jsonl, an empty dir, a user's dir, a Parquet file, a zip archive, a data config, an sftprep
    OUT_DIR `out` and an empty one."""
    write_jsonl(tmp_path / "in.jsonl", GOOD)
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    pq.write_table(pa.Table.from_pylist(GOOD), tmp_path / "data.parquet")
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        z.writestr("in.jsonl", (tmp_path / "in.jsonl").read_text())
    (tmp_path / "blank.jsonl").write_text("")
    (tmp_path / "data.yaml").write_text("sources:\n  - {name: a, paths: in.jsonl, weight: 2}\n")
    assert run_main(tmp_path, "prepare", "in.jsonl", "-o", "out", "--workers", "1").returncode == 0
    r = run_main(tmp_path, "prepare", "in.jsonl", "-o", "none", "--max-length", "2", "--workers", "1")
    assert r.returncode == 3, r.stderr
    return tmp_path


def by_args(*rows: tuple[Any, ...]) -> list[Any]:
    """Parameter rows, each named by its argument list (the first item)."""
    return [pytest.param(*row, id=" ".join(row[0])) for row in rows]


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def refused(d: Path, code: int, *args: str, says: str | None = None) -> Result:
    before = snapshot(d)
    r = run_main(d, *args)
    no_traceback(r)
    assert r.returncode == code, (args, r.returncode, r.stderr)
    if says is not None:
        assert " ".join(says.split()) in " ".join(r.stderr.split()), (args, r.stderr)  # wherever a line wraps
    after = snapshot(d)
    assert {k: v for k, v in after.items() if k in before} == before, args  # nothing of the user's changed
    if args[0] != "prepare" or code == 2:
        assert set(after) == set(before), (args, set(after) ^ set(before))  # and nothing written
    return r


PREPARE_INPUTS = [
    (["nowhere.jsonl"], "does not exist"),
    (["empty"], "is a directory"),
    (["."], "is a directory holding data files of several formats"),
    (["out"], "is a directory written by `sftprep prepare`"),
    (["in.jsonl/x.jsonl"], "in.jsonl/x.jsonl"),
    (["data.zip"], "a zip archive"),
    (["*.csv"], "as a glob, matches no file"),
    (["in.jsonl", "--config", "data.yaml"], "input paths and sources given together"),
    (["--config", "nowhere.yaml"], "--config 'nowhere.yaml' does not exist"),
    (["--config", "in.jsonl"], "expected a .yaml, .yml or .toml file"),
    (["--config", "data.yaml", "--eval-sources", "b"], "eval.sources: 'b' is not a source"),
    (["--config", "data.yaml", "--mixture-examples", "-1"], "--mixture-examples -1: expected a whole number"),
    (["in.jsonl", "--columns", "dialogue=x"], "--columns 'dialogue': not a field sftprep reads"),
    (["in.jsonl", "--columns", "messages"], "expected FIELD=COLUMN pairs"),
    (["in.jsonl", "--tags", "speaker=x"], "--tags 'speaker': expected one of role_tag"),
    (["in.jsonl", "--eval-fraction", "2"], "--eval-fraction 2.0: expected a fraction"),
    (["in.jsonl", "--eval-sources", "a"], "--eval-sources needs named sources"),
    (["--dataset", "x"], "--dataset names datasets of a registry: give it with --dataset-info"),
    (["--dataset-info", "in.jsonl", "--dataset", "x"], "cannot be read as JSON"),
    (["--dataset-info", "nowhere.json", "--dataset", "x"], "--dataset-info 'nowhere.json' does not exist"),
    (["--config", "data.yaml", "--engine", "ray"], "need the local engine"),
]


@pytest.mark.parametrize(("inputs", "says"), PREPARE_INPUTS)
def test_prepare_bad_inputs(d: Path, inputs: list[str], says: str) -> None:
    refused(d, 2, "prepare", *inputs, "-o", "new", says=says)


@pytest.mark.parametrize(
    ("out", "says"),
    [
        (".", "current directory"),
        ("/", "root"),
        ("..", "current directory"),
        ("empty/..", "current directory"),
        ("in.jsonl", "is a file"),
        ("in.jsonl/sub", "is a file, not a directory"),
        ("mine", "not written by sftprep"),
    ],
)
def test_prepare_bad_out_dir(d: Path, out: str, says: str) -> None:
    refused(d, 2, "prepare", "in.jsonl", "-o", out, says=says)
    refused(d, 2, "prepare", "in.jsonl", "-o", out, "--overwrite", says=says)


def test_prepare_into_an_empty_directory_is_fine(d: Path) -> None:
    r = run_main(d, "prepare", "in.jsonl", "-o", "empty", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads((d / "empty" / "manifest.json").read_text())["examples_written"] == 2


@pytest.mark.parametrize(
    ("option", "says"),
    by_args(
        (["--tokenizer", "nowhere"], "--tokenizer nowhere: no such file or directory"),
        (["--tokenizer", "in.jsonl"], "--tokenizer in.jsonl: cannot load"),
        (["--tokenizer", "empty"], "--tokenizer empty: the directory has no tokenizer.json"),
        (["--tokenizer", "/"], "--tokenizer /: the directory has no tokenizer.json"),
        (["--template", "nosuch"], "--template 'nosuch': not a built-in (alpaca, chatml,"),
        (["--template", "empty"], "empty: no chat template found"),
        (["--template", "in.jsonl"], "--template in.jsonl: expected a .jinja file"),
        (["--template", "."], ".: no chat template found"),
        (["--system-prompt", "@nowhere.txt"], "system prompt file 'nowhere.txt' is missing"),
        (["--system-prompt", "@empty"], "system prompt file 'empty' is a directory"),
        (["--render-timeout", "0"], "--render-timeout 0.0: expected a positive number"),
        (["--max-chars", "0"], "'--max-chars'"),
        (["--reasoning-mode", "sometimes"], "--reasoning-mode 'sometimes': expected one of auto, thinking,"),
        (["--shard-size", "0"], "--shard-size 0: expected a positive number"),
        (["--engine", "spark"], "--engine 'spark': expected local or ray"),
        (["--template-var", "=x"], "--template-var '=x': expected KEY=VALUE"),
        (["--role-map", "human"], "--role-map 'human': expected KEY=VALUE"),
        (["--format", "xml"], "--format 'xml': expected one of auto, messages,"),
    ),
)
def test_prepare_bad_options(d: Path, option: list[str], says: str) -> None:
    refused(d, 2, "prepare", "in.jsonl", "-o", "new", *option, says=says)


def test_prepare_without_records_exits_3(d: Path) -> None:
    r = refused(d, 3, "prepare", "blank.jsonl", "-o", "new", "--workers", "1", says="no example written")
    assert "no record" in r.stderr


ODD_OUT_DIRS = [
    ("nowhere", "does not exist"),
    ("in.jsonl", "is a file"),
    (".", "no manifest.json"),
    ("/", "no manifest.json"),
    ("empty", "no manifest.json"),
    ("mine", "no manifest.json"),
    ("in.jsonl/x", "does not exist"),
]


@pytest.mark.parametrize(("path", "says"), ODD_OUT_DIRS)
@pytest.mark.parametrize("command", [["stats"], ["inspect"], ["inspect", "--html", "r.html"]], ids=" ".join)
def test_reading_commands_on_odd_paths(d: Path, command: list[str], path: str, says: str) -> None:
    refused(d, 2, command[0], path, *command[1:], says=says)


@pytest.mark.parametrize("command", [["stats"], ["inspect"], ["inspect", "--html", "r.html"]], ids=" ".join)
def test_reading_commands_on_an_output_without_examples_exit_3(d: Path, command: list[str]) -> None:
    r = refused(d, 3, command[0], "none", *command[1:], says="no example written to none")
    assert "too_long" in r.stderr and "rejects.jsonl" in r.stderr


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda out: (out / "manifest.json").write_text("{not json"), "cannot be read"),
        (lambda out: (out / "manifest.json").write_text("[1, 2]"), "not an sftprep manifest"),
        (lambda out: (out / "data-00000.parquet").unlink(), "missing"),
        (lambda out: (out / "data-00000.parquet").write_bytes(b"garbage"), "data-00000.parquet"),
        (lambda out: (out / "manifest.json").unlink(), "no manifest.json"),
    ],
    ids=["bad-json", "not-a-manifest", "missing-shard", "corrupt-shard", "no-manifest"],
)
@pytest.mark.parametrize("command", [["stats"], ["inspect"], ["inspect", "--html", "r.html"]], ids=" ".join)
def test_reading_commands_on_a_damaged_output(d: Path, command: list[str], damage, says: str) -> None:  # type: ignore[no-untyped-def]
    damage(d / "out")
    refused(d, 2, command[0], "out", *command[1:], says=says)


@pytest.mark.parametrize(
    ("option", "says"),
    by_args(
        (["--index", "-1"], "--index -1: expected 0 or more"),
        (["--index", "99"], "--index 99: out has 2 examples; give --index 0 to 1"),
        (["--html", "."], "--html . is a directory"),
        (["--html", "/"], "--html / is a directory"),
        (["--html", "empty"], "--html empty is a directory; give a file name, e.g. --html empty/report.html"),
        (["--html", "in.jsonl"], "--html in.jsonl exists and is not a report sftprep wrote"),
        (["--html", "in.jsonl/r.html"], "in.jsonl is a file, not a directory"),
        (["--html", "r.html", "--sample", "0"], "--sample 0: expected a positive number"),
        (["--html", "r.html", "--sample", "1", "--index", "0"], "give --sample N or --index I..., not both"),
    ),
)
def test_inspect_bad_options(d: Path, option: list[str], says: str) -> None:
    refused(d, 2, "inspect", "out", *option, says=says)


@pytest.mark.parametrize(
    ("args", "says"),
    by_args(
        (["nowhere.jinja"], "--template 'nowhere.jinja': not a built-in"),
        (["."], ".: no chat template found"),
        (["/"], "/: no chat template found"),
        (["empty"], "empty: no chat template found"),
        (["in.jsonl"], "--template in.jsonl: expected a .jinja file"),
        (["chatml", "--tokenizer", "nowhere"], "--tokenizer nowhere: no such file or directory"),
        (["chatml", "--tokenizer", "in.jsonl"], "--tokenizer in.jsonl: cannot load"),
        (["chatml", "--template-var", "novalue"], "--template-var 'novalue': expected KEY=VALUE"),
    ),
)
def test_template_check_bad_arguments(d: Path, args: list[str], says: str) -> None:
    refused(d, 2, "template", "check", *args, says=says)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    by_args(
        (["nowhere.jsonl", "-o", "tok"], 2, "input 'nowhere.jsonl' does not exist"),
        (["empty", "-o", "tok"], 2, "input 'empty' is a directory"),
        (["data.zip", "-o", "tok"], 2, "input 'data.zip' is a zip archive"),
        (["in.jsonl", "-o", "."], 2, "output path '.' is the current directory"),
        (["in.jsonl", "-o", "/"], 2, "output path '/' is the filesystem root"),
        (["in.jsonl", "-o", "in.jsonl"], 2, "in.jsonl is a file that sftprep did not write"),
        (["in.jsonl", "-o", "in.jsonl/tok"], 2, "in.jsonl is a file, not a directory"),
        (
            ["in.jsonl", "-o", "mine"],
            2,
            "mine was not written by sftprep (no tokenizer_config.json in it); it holds notes.txt",
        ),
        # an sftprep prepare output is not a tokenizer directory
        (["in.jsonl", "-o", "out"], 2, "out was not written by sftprep (no tokenizer_config.json in it)"),
        (["in.jsonl", "-o", "tok", "--vocab-size", "0"], 2, "vocab size 0 is below 259"),
        (["in.jsonl", "-o", "tok", "--min-frequency", "0"], 2, "min frequency must be at least 1, not 0"),
        (["in.jsonl", "-o", "tok", "--template", "nosuch"], 2, "--template 'nosuch': expected a built-in (alpaca,"),
        (
            ["blank.jsonl", "-o", "tok", "--vocab-size", "300"],
            3,
            "nothing to train on: none of the 0 records in blank.jsonl",
        ),
    ),
)
def test_tokenizer_train_bad_arguments(d: Path, args: list[str], code: int, says: str) -> None:
    refused(d, code, "tokenizer", "train", *args, says=says)


def test_tokenizer_train_replaces_its_own_output_only(d: Path) -> None:
    for _ in range(2):  # the second run replaces the first one's directory
        r = run_main(d, "tokenizer", "train", "in.jsonl", "--vocab-size", "300", "-o", "tok")
        assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (d / "tok").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    cfg = json.loads((d / "tok" / "tokenizer_config.json").read_text())
    del cfg["sftprep_template"]  # now it looks like someone else's tokenizer
    (d / "tok" / "tokenizer_config.json").write_text(json.dumps(cfg))
    refused(d, 2, "tokenizer", "train", "in.jsonl", "--vocab-size", "300", "-o", "tok", says="did not write")
