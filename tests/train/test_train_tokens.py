"""New special tokens: `sftprep tokenizer add-tokens`, the prepare hint that offers it, `train` resizing
the embeddings (new rows = the mean of the known ones), and refusing a model and data whose tokenizers
do not belong together."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dummy_tokenizer import write_dummy_tokenizer  # noqa: E402
from train_helpers import TINY, addition_records, prepare_records, tiny_config  # noqa: E402

from sftprep.errors import ConfigError  # noqa: E402
from sftprep.tokenize.add_tokens import TOKENS_FILE, add_tokens, missing_markers_hint  # noqa: E402
from sftprep.tokenize.tokenizer import BPETokenizer, default_tokenizer_dir  # noqa: E402
from sftprep.train.config import LoraConfig  # noqa: E402
from sftprep.train.loop import train  # noqa: E402
from sftprep.train.model import tiny_llama  # noqa: E402

ROLE_TOKENS = ["<|SYSTEM|>", "<|USER|>", "<|ASSISTANT|>"]  # the built-in "role-tokens" template (seed 002)


def run_cli(args: list[str]) -> str:
    import typer
    from typer.testing import CliRunner

    from sftprep.train.commands import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'pretrained' model saved with its tokenizer (the embedded one, 8,192 ids), as HF checkpoints are."""
    out = tmp_path_factory.mktemp("base")
    tok = BPETokenizer.load(None)
    tiny_llama(tok.vocab_size, TINY, tok.pad_id, tok.token_to_id("<|im_end|>"), seed=1).save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(default_tokenizer_dir() / name, out / name)
    return out


def test_prepare_hint_offers_add_tokens_and_applying_it_removes_the_hint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    hint = missing_markers_hint(BPETokenizer.load(None), "role-tokens", None)
    assert hint is not None and all(t in hint for t in ROLE_TOKENS)
    command = hint.split("to add them as special tokens: ")[1].split(", then")[0]
    args = shlex.split(command)
    assert args[:3] == ["sftprep", "tokenizer", "add-tokens"]
    output = run_cli(args[1:])  # the command, as the hint spells it
    out = tmp_path / args[args.index("-o") + 1]
    assert "added 3 special token(s)" in output and f"--tokenizer {out.name}" in hint
    assert missing_markers_hint(BPETokenizer.load(out), "role-tokens", str(out)) is None
    assert missing_markers_hint(BPETokenizer.load(None), "chatml", None) is None  # nothing missing: no hint


def test_add_tokens_writes_a_tokenizer_both_loaders_read(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    out = tmp_path / "tok"
    result = add_tokens("default", out, [], template="role-tokens", pad_token="<|PAD|>")
    assert result.added == {"<|SYSTEM|>": 8192, "<|USER|>": 8193, "<|ASSISTANT|>": 8194, "<|PAD|>": 8195}
    ours = BPETokenizer.load(out)
    hf = AutoTokenizer.from_pretrained(str(out))
    text = "<|USER|> What is 2 + 3?\n<|ASSISTANT|> 5<|PAD|>"
    assert ours.encode(text) == hf(text, add_special_tokens=False).input_ids
    assert [i for i in ours.encode(text) if i >= 8192] == [8193, 8194, 8195]
    assert hf.pad_token == "<|PAD|>" and ours.pad_id == 8195
    assert ours.encode("Hello world") == BPETokenizer.load(None).encode("Hello world")  # the rest unchanged
    record = json.loads((out / TOKENS_FILE).read_text())
    assert record["added"] == result.added and record["source_sha256"] == BPETokenizer.load(None).sha256
    # again on its own output: nothing to add; never over its source; --overwrite only for its own output
    with pytest.raises(ConfigError, match="source tokenizer's directory"):
        add_tokens(str(out), out, ["<|USER|>"], overwrite=True)
    again = add_tokens(str(out), tmp_path / "tok2", ["<|USER|>"])
    assert again.added == {} and again.present == ["<|USER|>"]
    with pytest.raises(ConfigError, match="--overwrite"):
        add_tokens("default", tmp_path / "tok2", ["<|X|>"])
    assert add_tokens("default", tmp_path / "tok2", ["<|X|>"], overwrite=True).added == {"<|X|>": 8192}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not written by sftprep"):
        add_tokens("default", tmp_path / "mine", ["<|X|>"], overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(ConfigError, match="nothing to add"):
        add_tokens("default", tmp_path / "none", [])


@pytest.fixture(scope="module")
def role_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("role")
    tok = add_tokens("default", tmp / "tok", [], template="role-tokens", pad_token="<|PAD|>").out_dir
    return prepare_records(tmp, addition_records(24), template="role-tokens", tokenizer=str(tok))


def test_train_resizes_embeddings_for_new_tokens_from_the_mean(base: Path, role_data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from sftprep.train.commands import generate_command

    out = tmp_path / "out"
    train(tiny_config(role_data, out, model=str(base), max_steps=3, lr=1e-9))  # lr ~0: rows stay where set
    saved = AutoModelForCausalLM.from_pretrained(str(out))
    before = AutoModelForCausalLM.from_pretrained(str(base)).get_input_embeddings().weight
    after = saved.get_input_embeddings().weight
    assert saved.config.vocab_size == after.shape[0] == 8196
    assert torch.allclose(after[:8192], before, atol=1e-6)
    for row in after[8192:]:
        assert torch.allclose(row, before.mean(0), atol=1e-6)
    record = json.loads((out / "sftprep_model.json").read_text())["training"]["embeddings"]
    assert record["rows_before"] == 8192 and record["rows_after"] == 8196
    assert record["new_tokens"] == {"<|SYSTEM|>": 8192, "<|USER|>": 8193, "<|ASSISTANT|>": 8194, "<|PAD|>": 8195}
    assert (out / TOKENS_FILE).is_file()  # the tokenizer's record travels with the model
    assert isinstance(generate_command(out, prompt="What is 1 + 2?", max_new_tokens=2), str)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside peft
def test_lora_trains_the_new_token_rows_too(base: Path, role_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="peft is not installed (pip install 'sftprep[train]')")
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    train(tiny_config(role_data, out, model=str(base), lora=LoraConfig(r=4, alpha=8), max_steps=3, lr=1e-2))
    before = AutoModelForCausalLM.from_pretrained(str(base)).get_input_embeddings().weight
    after = AutoModelForCausalLM.from_pretrained(str(out)).get_input_embeddings().weight
    assert torch.equal(after[:8192], before)  # frozen base rows
    assert all(not torch.allclose(row, before.mean(0), atol=1e-4) for row in after[8192:8195])  # trained


def test_model_and_data_from_other_tokenizers_are_refused(base: Path, tmp_path: Path) -> None:
    dummy = write_dummy_tokenizer(tmp_path / "dummy")
    data = prepare_records(tmp_path, addition_records(8), tokenizer=str(dummy))
    # the model directory holds the tokenizer it was saved with: compared token by token
    with pytest.raises(ConfigError) as saved:
        train(tiny_config(data, tmp_path / "x", model=str(base)))
    message = str(saved.value)
    assert f"--model {base} does not belong with the data's tokenizer" in message
    assert f"{base}/tokenizer.json (8,192 tokens)" in message and str(dummy) in message
    # no tokenizer saved: its config's eos id is an ordinary token (a character) of the data's tokenizer
    bare = tmp_path / "bare"
    shutil.copytree(base, bare, ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(ConfigError, match=r"eos_token_id 1, which is '\\x01', an ordinary token"):
        train(tiny_config(data, tmp_path / "y", model=str(bare)))
    # the fix the message gives: prepare the data with the model's tokenizer
    fix = message.split("sftprep prepare INPUTS -o DIR ")[1]
    assert fix == f"--tokenizer {base}"
    fixed = prepare_records(tmp_path, addition_records(8), name="fixed", tokenizer=str(base))
    assert train(tiny_config(fixed, tmp_path / "z", model=str(base), max_steps=1)).steps == 1
