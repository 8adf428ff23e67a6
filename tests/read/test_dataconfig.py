"""Data configs (issue #13): one YAML or TOML file with the options of `prepare`, the sources of a mixture and
an eval split; typed and validated, every error naming its key path; paths relative to the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import GOOD, run_main, write_jsonl

from sftprep.errors import ConfigError
from sftprep.preparation.options import PrepareOptions, options_from_mapping, resolve_options
from sftprep.read.dataconfig import load_data_config

YAML = """
max_length: 512
max-chars: 100000
template_vars: {enable_thinking: false}
seed: 3
sources:
  - name: chat
    paths: data/chat.jsonl
    weight: 3
    system_prompt: "@prompt.txt"
  - name: qa
    paths: [data/qa.csv]
    columns: {instruction: question, output: answer}
    mask: last-turn
    examples: 10
eval:
  fraction: 0.1
"""

TOML = """
max_length = 512
max-chars = 100000
seed = 3
template_vars = {enable_thinking = false}

[[sources]]
name = "chat"
paths = "data/chat.jsonl"
weight = 3
system_prompt = "@prompt.txt"

[[sources]]
name = "qa"
paths = ["data/qa.csv"]
columns = {instruction = "question", output = "answer"}
mask = "last-turn"
examples = 10

[eval]
fraction = 0.1
"""


@pytest.mark.parametrize(("name", "text"), [("data.yaml", YAML), ("data.toml", TOML)])
def test_yaml_and_toml_give_the_same_options(tmp_path: Path, name: str, text: str) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / name).write_text(text)
    (conf / "prompt.txt").write_text("Be brief.\n")
    cfg = load_data_config(conf / name)
    opts = PrepareOptions(**options_from_mapping(cfg.options), sources=cfg.sources)
    assert (opts.max_length, opts.max_chars, opts.seed, opts.eval_fraction) == (512, 100_000, 3, 0.1)
    assert opts.template_vars == {"enable_thinking": False}
    chat, qa = opts.sources
    assert chat.paths == [str(conf / "data" / "chat.jsonl")]  # relative to the config file
    assert (chat.weight, chat.system_prompt) == (3, "Be brief.")
    assert qa.columns == {"instruction": "question", "output": "answer"} and qa.examples == 10
    assert opts.for_source(qa).mask == "last-turn" and opts.for_source(chat).mask == "assistant"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("max_length: ten\n", "max_length: expected a whole number, got str 'ten'"),
        ("mask: everything\n", "mask: 'everything': expected one of assistant"),
        ("maxlength: 3\n", "maxlength: unknown key; expected one of"),
        ("sources: [{name: a}]\n", "sources[0]: no paths"),
        ("sources: [{name: a, paths: x.jsonl, weight: -1}]\n", "sources[0].weight: expected a positive number"),
        ("sources: [{name: a, paths: x.jsonl, weight: 1, epochs: 2}]\n", "sources[0]: weight and epochs given"),
        ("sources: [{name: a, paths: x.jsonl, colums: {}}]\n", "sources[0].colums: unknown key"),
        ("sources: [{name: a, paths: x.jsonl, columns: {dialogue: d}}]\n", "sources[0].columns 'dialogue'"),
        ("sources: [{name: a, paths: x.jsonl, mask: nope}]\n", "sources[0].mask: 'nope'"),
        ("sources: [{name: 'a b', paths: x.jsonl}]\n", "sources[0].name: expected a name"),
        ("eval: {fraction: 0.1, sources: [a]}\n", "eval: expected exactly one of fraction"),
        ("eval: {part: 0.1}\n", "eval.part: unknown key"),
        ("[1, 2]\n", "expected a table of options at the top"),
        ("a: [\n", "is not valid YAML"),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        cfg = load_data_config(tmp_path / "c.yaml")
        PrepareOptions(**options_from_mapping(cfg.options), sources=cfg.sources).validate()
    assert says in str(e.value)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"eval_fraction": 1.5}, "--eval-fraction 1.5: expected a fraction"),
        ({"eval_sources": ["nope"], "sources": [{"name": "a", "paths": ["x"]}]}, "eval.sources: 'nope' is not"),
        ({"sources": [{"name": "a", "paths": ["x"]}, {"name": "a", "paths": ["y"]}]}, "names are unique"),
        ({"min_trainable_tokens": 5, "max_trainable_tokens": 2}, "is above --max-trainable-tokens 2"),
        ({"mixture_examples": 10}, "no source has a weight"),
        ({"sources": [{"name": "a", "paths": ["x"], "weight": 1}], "eval_sources": ["a"]}, "taken whole"),
    ],
)
def test_options_are_validated_once(values: dict[str, object], says: str) -> None:
    opts = PrepareOptions(**{"inputs": [] if "sources" in values else ["x.jsonl"], **values})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(".", r"\.")):
        opts.validate()


def test_flags_given_win_over_the_config(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("max_length: 100\nseed: 5\ninputs: [a.jsonl]\nengine: local\n")
    flags = {"max_length": 7, "seed": 0, "workers": 0, "inputs": []}
    opts, cli_only = resolve_options(flags, {"max_length"}, str(tmp_path / "c.yaml"))
    assert (opts.max_length, opts.seed, opts.workers) == (7, 5, 0)  # given < config < default
    assert opts.inputs == [str(tmp_path / "a.jsonl")] and cli_only == {"engine": "local"}


def test_prepare_config_on_the_command_line(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", GOOD)
    (tmp_path / "c.yaml").write_text("inputs: [a.jsonl]\nout_dir: built\nworkers: 1\n")
    r = run_main(tmp_path, "prepare", "--config", "c.yaml", "--max-length", "64", "-q")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "built" / "manifest.json").read_text())
    assert manifest["options"]["max_length"] == 64 and manifest["examples_written"] == 2
    r = run_main(tmp_path, "prepare", "--config", "c.yaml", "--max-length", "64")
    assert r.returncode == 0 and "is up to date" in r.stdout


def test_the_readme_config_example_is_valid(tmp_path: Path) -> None:
    from conftest import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text("utf-8").split("## Your data", 1)[1]
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "data.yaml").write_text(example)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "tools.txt").write_text("You call tools.\n")
    cfg = load_data_config(tmp_path / "data.yaml")
    opts = PrepareOptions(**options_from_mapping(cfg.options), sources=cfg.sources)
    opts.validate()
    assert [s.name for s in opts.sources] == ["chat", "tools", "math"] and opts.eval_fraction == 0.02
    assert opts.sources[1].system_prompt == "You call tools." and opts.dedup


def test_python_api_with_a_config(tmp_path: Path) -> None:
    import sftprep

    write_jsonl(tmp_path / "a.jsonl", GOOD)
    (tmp_path / "c.toml").write_text('inputs = ["a.jsonl"]\nout_dir = "from_config"\nworkers = 1\nmax_length = 100\n')
    m = sftprep.prepare(config=tmp_path / "c.toml", max_length=50)
    assert (tmp_path / "from_config" / "manifest.json").is_file() and m["options"]["max_length"] == 50
