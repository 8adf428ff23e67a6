"""Issue #18's cases on the real data in ../shared: content a template drops, history truncation of tool
conversations, an end-of-turn text the tokenizer does not have as a token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DIR

import sftprep
from sftprep.tokenize.tokenizer import BPETokenizer

pytestmark = [pytest.mark.shared, pytest.mark.skipif(not SHARED_DIR.is_dir(), reason=f"{SHARED_DIR} is absent")]
DATA = SHARED_DIR / "data"
TOK = SHARED_DIR / "tokenizers"
IGNORE = -100


def prepare(tmp_path: Path, data: Path, **opts: Any) -> tuple[dict[str, Any], list[dict], list[dict]]:
    out = tmp_path / "out"
    manifest = sftprep.prepare([str(data)], out_dir=str(out), **opts)
    rows = list(sftprep.load(out, as_dataset=False))
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text("utf-8").splitlines()]
    return manifest, rows, rejects


def trained_texts(row: dict[str, Any], tok: BPETokenizer) -> list[str]:
    runs, cur = [], []
    for i, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return [tok.decode(r) for r in [*runs, cur] if r]


def test_a_template_without_tool_calls_never_trains_only_the_end_marker(tmp_path: Path) -> None:
    # llama3's template has no tool-call branch: the drone set's calls render as an empty turn
    m, rows, rejects = prepare(tmp_path, DATA / "openai_cookbook/drone_training.jsonl", tokenizer=str(TOK / "llama3"))
    tok = BPETokenizer.load(TOK / "llama3")
    assert all(t.strip() != "<|eot_id|>" for r in rows for t in trained_texts(r, tok))
    assert m["examples_written"] == 0 and m["records_rejected"] == 103
    assert {r["reason"] for r in rejects} == {"nothing_to_train"}
    assert "only its end marker '<|eot_id|>'" in rejects[0]["message"]


def _first_user_or_system(row: dict[str, Any], tok: BPETokenizer) -> str:
    text = tok.decode(row["input_ids"])
    return text.split("<|im_start|>", 2)[1].split("\n", 1)[0] if "<|im_start|>" in text else text[:20]


def test_history_truncation_keeps_contexts_that_start_with_a_user_message(tmp_path: Path) -> None:
    data = DATA / "llama_factory/reason_tool_use_demo_50.jsonl"
    m, rows, _ = prepare(tmp_path, data, tokenizer=str(TOK / "minimind"), max_length=1200, truncation="history")
    tok = BPETokenizer.load(TOK / "minimind")
    assert m["truncated"] > 0 and rows
    for row in rows:
        assert len(row["input_ids"]) <= 1200
        text = tok.decode(row["input_ids"])
        # after the system message, the first message of the context is a user message
        after_system = text.split("<|im_end|>", 1)[1] if text.startswith("<|im_start|>system") else text
        assert after_system.lstrip("\n").startswith("<|im_start|>user"), after_system[:80]


def test_a_conversation_whose_last_exchange_fits_is_never_too_long(tmp_path: Path) -> None:
    records = json.loads((DATA / "llama_factory/glaive_toolcall_en_demo.json").read_text("utf-8"))[:1]
    data = tmp_path / "one.json"
    data.write_text(json.dumps(records), "utf-8")
    m, rows, rejects = prepare(tmp_path, data, tokenizer=str(TOK / "qwen2.5"), max_length=400, truncation="history")
    assert not rejects and rows and m["truncated"] >= 1
    assert all(len(r["input_ids"]) <= 400 for r in rows)


def test_an_end_of_turn_text_the_tokenizer_lacks_is_warned_about(tmp_path: Path) -> None:
    # chatml's <|im_end|> is no token of GPT-2's vocabulary: generation would never stop on it
    data = tmp_path / "c.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})
    )
    chatml = SHARED_DIR / "templates/axolotl/chatml.jinja"
    m, rows, _ = prepare(tmp_path, data, tokenizer=str(TOK / "gpt2-tiktoken"), template=str(chatml))
    assert rows and m["turns"]["stop_not_special"] == 1
    assert m["template"]["end_of_turn"] == "<|im_end|>" and m["template"]["end_of_turn_is_token"] is False
