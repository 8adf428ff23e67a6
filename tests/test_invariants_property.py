"""Property tests: invariants 1-3 on generated conversations, for every real tokenizer with its own template
(and the built-in chatml), checked by the independent oracle (tests/oracle.py).

Conversations mix unicode (CJK, emoji, combining marks, control characters), whitespace-only and empty strings,
leading/trailing spaces and newlines, text that spells special tokens (plain text when a user/system types it),
optional reasoning, and assistant turns with weight 0. Every record must end up either as examples the oracle
accepts, or in rejects.jsonl with a reason. Runs are derandomized, so CI sees the same examples every time.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DIR, requires_shared
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import check_reconciliation, iter_output, make_oracle, read_rejects

import sftprep
from sftprep.tokenizer import BPETokenizer

pytestmark = requires_shared

TOKENIZERS_DIR = SHARED_DIR / "tokenizers"
# (tokenizer, template, examples): each example prepares one small JSONL file of 1-4 conversations.
CONFIGS: list[tuple[str, str | None, int]] = [
    ("qwen2.5", None, 30),
    ("llama3", None, 30),
    ("phi-3-mini", None, 30),
    ("minimind", None, 40),
    ("qwen2.5", "chatml", 30),
]

SPECIAL_TEXT = [
    *("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
    *("<|begin_of_text|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<s>", "</s>"),
    *("<think>", "</think>", "<tool_call>", "<|im_end", "|>"),
]
FRAGMENTS = [
    *(" ", "  ", "\n", "\n\n", "\t", " \n ", "\r\n", "\u200b", "\u00a0", "\u2028", "\x1f"),
    *("日本語", "你好，世界", "😀", "👩\u200d👩\u200d👧", "e\u0301", "A\u0300"),
    *("### Response:", "assistant", "user\n", "Hello", " world", "x"),
]
text_piece = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=8), st.sampled_from(FRAGMENTS))


def contents(excluded: frozenset[str] = frozenset()) -> st.SearchStrategy[str]:
    specials = [s for s in SPECIAL_TEXT if s not in excluded]
    pieces = st.one_of(text_piece, st.sampled_from(specials)) if specials else text_piece
    return st.lists(pieces, max_size=5).map("".join)


@st.composite
def conversations(draw: st.DrawFn, excluded: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A chat record; system/user text never spells the `excluded` special tokens (assistant text may)."""
    typed, reply_text = contents(excluded), contents()
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(typed)})
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(typed)})
        reply: dict[str, Any] = {"role": "assistant", "content": draw(reply_text)}
        weight = draw(st.sampled_from([None, None, None, 1, 0]))
        if weight is not None:
            reply["weight"] = weight
        if draw(st.integers(0, 5)) == 0:
            reply["reasoning_content"] = draw(reply_text)
        messages.append(reply)
    return {"messages": messages}


def _m(role: str, content: str, **extra: str) -> dict[str, str]:
    return {"role": role, "content": content, **extra}


def acceptable_reject(record: dict[str, Any], reject: dict[str, Any], specials: frozenset[str]) -> bool:
    """A record may be rejected only when it has nothing to train, spells a special token, or has reasoning that
    the template cannot place after its generation prompt (minimind pre-fills an empty think block)."""
    msgs = record["messages"]
    if not any(m.get("weight") != 0 for m in msgs if m["role"] == "assistant"):
        return True
    if any(s in m["content"] for m in msgs for s in specials):
        return True
    return reject["reason"] == "generation_prompt_mismatch" and any("reasoning_content" in m for m in msgs)


def check_batch(records: list[dict[str, Any]], tokenizer: str, template: str | None) -> None:
    path = str(TOKENIZERS_DIR / tokenizer)
    oracle = make_oracle(path, template)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
        out = Path(tmp) / "out"
        sftprep.prepare([str(data)], out_dir=str(out), tokenizer=path, template=template)
        problems = check_reconciliation(out, [data])
        assert not problems, "\n".join(problems)
        report = oracle.check_dir(out)
        shown = "\n".join(json.dumps(r, ensure_ascii=False) for r in records)
        assert report.ok, f"{report.format()}\nrecords:\n{shown}"
        written = {e["source_line"] for e in iter_output(out)}
        rejected = {r["source_line"]: r for r in read_rejects(out) if "turn" not in r}
        specials = frozenset(t.content for t in oracle.tok.added_tokens_decoder.values())
        for line, record in enumerate(records, 1):
            assert line in written or line in rejected
            if line in rejected:
                reject = rejected[line]
                assert acceptable_reject(record, reject, specials), f"{reject['reason']}: {reject['message']}"


@pytest.fixture(scope="module", autouse=True)
def load_each_tokenizer_once() -> Iterator[None]:
    """sftprep loads its tokenizer per prepare() (1-2 s for qwen2.5/llama3): memoize it for these tests, so that
    hypothesis can afford its examples and shrinking. The pipeline itself runs unchanged."""
    load = BPETokenizer.load
    cached = lru_cache(maxsize=8)(lambda path: load(path))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BPETokenizer, "load", staticmethod(lambda path=None: cached(None if path is None else str(path))))
        yield


# Known sftprep bugs (reported to the lead). Bug A, every own (Jinja) template: where a message is not found
# verbatim (an empty or trimmed message, reasoning, tools), the content search finds a system/user spelling of a
# template marker in the template's own markup first: that markup becomes plain text, the user's text the token.
# Bug B, phi-3: a plain-text special spelling after a space loses characters ('a <|end|>' -> 'a |end|>').
# The main property leaves those spellings out of system/user text; the strict xfails below keep them in sight.
MARKERS = frozenset({"<|im_start|>", "<|im_end|>"})
TYPED_SPECIALS_LEFT_OUT: dict[str, frozenset[str]] = {
    "qwen2.5": MARKERS,
    "minimind": MARKERS,
    "llama3": frozenset({"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}),
    "phi-3-mini": frozenset(SPECIAL_TEXT),
}
BUG_A = "a system/user spelling of a template marker is matched in the template's markup (reported)"
BUG_B = "phi-3: a plain-text special spelling after a space loses characters (reported)"


def _run(tokenizer: str, template: str | None, examples: int, excluded: frozenset[str]) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(conversations(excluded), min_size=1, max_size=4))
    def run(records: list[dict[str, Any]]) -> None:
        check_batch(records, tokenizer, template)

    run()


@pytest.mark.parametrize(
    ("tokenizer", "template", "examples"), CONFIGS, ids=[f"{t}+{tpl or 'own'}" for t, tpl, _ in CONFIGS]
)
def test_generated_conversations_hold_the_invariants(tokenizer: str, template: str | None, examples: int) -> None:
    left_out = TYPED_SPECIALS_LEFT_OUT.get(tokenizer, frozenset()) if template is None else frozenset()
    _run(tokenizer, template, examples, left_out)


@pytest.mark.xfail(strict=True, reason=f"{BUG_A}; {BUG_B}")
@pytest.mark.parametrize("tokenizer", ["llama3", "phi-3-mini"])
def test_user_text_spelling_special_tokens(tokenizer: str) -> None:
    _run(tokenizer, None, 30, frozenset())


# Minimal reproductions of the known bugs: (tokenizer, messages).
KNOWN_BUG_RECORDS: dict[str, tuple[str, list[dict[str, str]]]] = {
    "A-llama3-empty-system": ("llama3", [_m("system", ""), _m("user", "<|eot_id|>"), _m("assistant", " ")]),
    "A-llama3-trimmed-user": (
        "llama3",
        [_m("user", "hi "), _m("assistant", "x"), _m("user", "<|start_header_id|>"), _m("assistant", "y")],
    ),
    "A-qwen2.5-reasoning": ("qwen2.5", [_m("user", "<|im_start|>"), _m("assistant", "ok", reasoning_content="r")]),
    "A-minimind-lstripped-reply": ("minimind", [_m("user", "<|im_start|>"), _m("assistant", "\nok")]),
    "A-phi3-reasoning": ("phi-3-mini", [_m("user", "<|user|>"), _m("assistant", "ok", reasoning_content="")]),
    "B-phi3-space-before-special": ("phi-3-mini", [_m("user", "a <|end|>"), _m("assistant", "ok")]),
}


@pytest.mark.xfail(strict=True, reason="known sftprep bugs A and B (reported)")
@pytest.mark.parametrize("case", list(KNOWN_BUG_RECORDS))
def test_known_bug_reproductions(case: str) -> None:
    tokenizer, messages = KNOWN_BUG_RECORDS[case]
    check_batch([{"messages": messages}], tokenizer, None)
