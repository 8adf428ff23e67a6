"""sftprep renders exactly as transformers does: every template in ../shared (and the tokenizers' own) on every
conversation of the agentic corpus, with and without the generation prompt, text for text.

Two parts: (1) the messages sftprep hands a template (its normalization: no content key for a null content,
reasoning aliases, tool-call arguments as objects) equal what an independent converter (agentic_convert) gives
transformers, message for message; (2) given the same messages, sftprep's Jinja environment and variables render
the same text as `tokenizer.apply_chat_template(..., tools=...)`, or both raise.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")

from agentic_convert import NotConvertible, to_hf  # noqa: E402
from agentic_corpus import build_corpus  # noqa: E402
from agentic_reference import SHARED, fitted_tokenizer, load_tokenizer  # noqa: E402
from agentic_run import Case, cases  # noqa: E402

from sftprep.read.normalize_conversations import normalize_conversations  # noqa: E402
from sftprep.templates.base import RenderOptions  # noqa: E402
from sftprep.templates.hf_messages import message_to_hf  # noqa: E402
from sftprep.templates.jinja_template import JinjaTemplate  # noqa: E402
from sftprep.tokenize.tokenizer import BPETokenizer  # noqa: E402
from sftprep.types import Conversation, RawRecord  # noqa: E402

pytestmark = [pytest.mark.shared, pytest.mark.skipif(not (SHARED / "templates").is_dir(), reason="no ../shared")]
CASES = cases()


@lru_cache(maxsize=1)
def corpus() -> tuple[dict[str, Any], ...]:
    return tuple(build_corpus(3, seed=7))


def normalized(record: dict[str, Any]) -> Conversation | None:
    conv = normalize_conversations(RawRecord("corpus", 1, data=record))
    return conv if isinstance(conv, Conversation) else None


def test_messages_are_normalized_as_transformers_receives_them() -> None:
    checked = 0
    for record in corpus():
        conv = normalized(record)
        try:
            hf = to_hf(record)
        except NotConvertible:
            assert conv is None
            continue
        assert conv is not None, record
        ours = [message_to_hf(m) for m in conv.messages]
        theirs = transformers.utils.chat_template_utils._alias_reasoning_fields(
            transformers.utils.chat_template_utils._normalize_chat_messages(hf.messages)
        )
        for a, b in zip(ours, theirs, strict=True):
            # the converter reads a record's `reasoning` field as reasoning_content; sftprep also passes the
            # record's own name, as transformers does when given the record's messages
            if a.get("reasoning") == a.get("reasoning_content") and "reasoning" not in b:
                a = {k: v for k, v in a.items() if k != "reasoning"}
            if "tool_calls" in b:  # tool-call ids only where the record has one
                b = {**b, "tool_calls": [{k: v for k, v in c.items() if v is not None} for c in b["tool_calls"]]}
            assert a == b, f"{json.dumps(record)[:300]}\nours:   {a}\ntheirs: {b}"
        checked += 1
    assert checked > 30


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_render_parity(case: Case, tmp_path: Path) -> None:
    tok_dir = case.tokenizer or fitted_tokenizer(case.template, tmp_path)  # type: ignore[arg-type]
    hf_tok = load_tokenizer(str(tok_dir))
    ours = BPETokenizer.load(tok_dir)
    source = case.template.read_text("utf-8") if case.template else str(hf_tok.chat_template)
    template = JinjaTemplate(source, special_tokens=ours.added_tokens)
    opts = RenderOptions(
        bos_token=ours.bos_token or "", eos_token=ours.eos_token or "", special_tokens_map=ours.special_tokens_map
    )
    compared = 0
    for record in corpus():
        conv = normalized(record)
        if conv is None:
            continue
        msgs = [message_to_hf(m) for m in conv.messages]
        tools = list(conv.tools) if conv.tools else None
        for upto, gen in ((len(msgs), False), (len(msgs) - 1, True)):
            if upto == 0:
                continue
            try:
                want: str | None = hf_tok.apply_chat_template(
                    msgs[:upto], tools=tools, add_generation_prompt=gen, tokenize=False, chat_template=source
                )
            except Exception:
                want = None
            try:
                got: str | None = template.render_messages(msgs[:upto], conv, gen, opts)
            except Exception:
                got = None
            assert got == want, f"{case.name} gen={gen}\nrecord: {json.dumps(record)[:300]}\n{got!r}\n!=\n{want!r}"
            compared += want is not None
    assert compared or case.name.startswith(("trl/llava", "axolotl/llava")), "nothing rendered"
