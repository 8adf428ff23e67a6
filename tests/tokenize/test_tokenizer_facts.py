"""The tokenizer's facts come from a cache keyed by its files, so a run whose texts all take the tiktoken fast
path never parses tokenizer.json (issue #15, start-up); what it gives is what the parsed tokenizer gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SHARED_DIR

from sftprep.errors import ConfigError
from sftprep.preparation.options import PrepareOptions
from sftprep.preparation.pipeline import Preparer, load_components
from sftprep.read.records import read_records
from sftprep.tokenize.facts import TokenizerFacts
from sftprep.tokenize.tokenizer import BPETokenizer, default_tokenizer_dir

QWEN = SHARED_DIR / "tokenizers" / "qwen2.5"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTPREP_CACHE_DIR", str(tmp_path / "cache"))


def copy_default(tmp_path: Path) -> Path:
    return Path(shutil.copytree(default_tokenizer_dir(), tmp_path / "tok"))


def parsed_view(tok: BPETokenizer) -> tuple[object, ...]:
    return (tok.added_tokens, tok.special_ids, tok.vocab_size, tok.start_sensitive, tok.splits_at_added,
            [tok.token_to_id(t) for t in tok.added_tokens])  # fmt: skip


def test_a_second_load_answers_from_the_cache_as_the_parsed_tokenizer(tmp_path: Path) -> None:
    d = copy_default(tmp_path)
    first = BPETokenizer.load(d)
    assert first.backend is not None  # never seen: parsed, and its facts stored
    second = BPETokenizer.load(d)
    assert second.backend is None
    assert second.facts == TokenizerFacts.read(first.tokenizer)
    assert parsed_view(second) == parsed_view(first)
    assert second.backend is None  # none of that needed the tokenizer
    assert second.encode("Hello world") == first.encode("Hello world")  # parsed on demand
    assert second.backend is not None


def test_a_changed_file_is_parsed_again(tmp_path: Path) -> None:
    d = copy_default(tmp_path)
    before = BPETokenizer.load(d)
    cfg = json.loads((d / "tokenizer.json").read_text("utf-8"))
    new_id = before.vocab_size
    cfg["added_tokens"].append({"id": new_id, "content": "<|new|>", "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": True})  # fmt: skip
    (d / "tokenizer.json").write_text(json.dumps(cfg), "utf-8")
    after = BPETokenizer.load(d)
    assert after.backend is not None and "<|new|>" in after.added_tokens
    assert after.token_to_id("<|new|>") == new_id and after.vocab_size == new_id + 1


def test_a_broken_file_fails_at_load_with_its_path(tmp_path: Path) -> None:
    d = copy_default(tmp_path)
    (d / "tokenizer.json").write_text("{not json", "utf-8")
    with pytest.raises(ConfigError, match="cannot load"):
        BPETokenizer.load(d)


@pytest.mark.parametrize("where", ["default", "qwen2.5"])
def test_preparing_fast_path_text_never_parses_the_tokenizer(tmp_path: Path, where: str) -> None:
    if where == "qwen2.5" and not QWEN.is_dir():
        pytest.skip(f"{QWEN} is absent")
    d = copy_default(tmp_path) if where == "default" else QWEN
    records = tmp_path / "r.jsonl"
    said = ["What is 2+2?", "It is 4.", "And 3+3?", "6, with\n\n  spaces"]
    conv = [{"role": ("user", "assistant")[k % 2], "content": text} for k, text in enumerate(said)]
    records.write_text(json.dumps({"messages": conv}) + "\n", "utf-8")
    opts = PrepareOptions(inputs=[str(records)], tokenizer=str(d), template="chatml" if where == "default" else None)
    assert BPETokenizer.load(d).fast is not None  # the first load of these files: parsed, analysed, cached
    tok, template = load_components(opts)
    assert tok.fast is not None
    preparer = Preparer(opts, tok, template)
    (prepared,) = preparer.process(list(read_records(records)))
    assert tok.backend is None  # the cuts between the two trained turns were checked by tiktoken
    assert preparer.stats.boundary_merges == 0 and preparer.stats.split_for_tokenization == 0
    (example,) = prepared.encoded
    assert example.input_ids.tolist() == tok.tokenizer.encode(example.rendered.text, add_special_tokens=False).ids
