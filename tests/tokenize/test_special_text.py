"""tokenize/special_text.py: where user, system and tool text spells an added token, found exactly by rendering
the conversation once more with each spelling replaced by placeholders of the same length."""

from __future__ import annotations

import re

import pytest
from dummy_tokenizer import build_dummy_tokenizer
from hand_render import chatml, conversation

from sftprep.templates.base import RenderOptions
from sftprep.templates.loader import load_template
from sftprep.templates.render_chat_prompt import render_chat_prompt
from sftprep.tokenize.special_text import (
    PLACEHOLDER,
    masked_conversation,
    needs_marking,
    placeholder_spans,
    widen_to_words,
)
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import Conversation, Message, RenderedConversation, Span

P = PLACEHOLDER


def pattern(tok: BPETokenizer) -> re.Pattern[str]:
    assert tok.special_pattern is not None
    return tok.special_pattern


def mistral(conv: Conversation) -> RenderedConversation:
    rendered = render_chat_prompt(conv, load_template("mistral"), RenderOptions(bos_token="<s>", eos_token="</s>"))
    assert isinstance(rendered, list) and len(rendered) == 1, rendered
    return rendered[0]


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer(build_dummy_tokenizer(), "dummy", "0")


def test_only_non_assistant_spellings_need_marking(tok: BPETokenizer) -> None:
    assert needs_marking(conversation(("user", "a <|im_end|> b"), ("assistant", "ok")), tok.find_special)
    assert needs_marking(conversation(("system", "<s>"), ("user", "q"), ("assistant", "ok")), tok.find_special)
    assert needs_marking(conversation(("user", "q"), ("assistant", "ok"), ("tool", "</s>")), tok.find_special)
    assert not needs_marking(conversation(("user", "q"), ("assistant", "I say <|im_end|>")), tok.find_special)
    assert not needs_marking(conversation(("user", "<|im_end"), ("assistant", "ok")), tok.find_special)


def test_alpaca_input_counts_too(tok: BPETokenizer) -> None:
    conv = Conversation((Message("user", "Sum.", input="<s>1 2"), Message("assistant", "3")), "t.jsonl", 1)
    assert needs_marking(conv, tok.find_special)
    masked = masked_conversation(conv, pattern(tok))
    assert masked.messages[0].input == P * 3 + "1 2" and masked.messages[0].content == "Sum."


def test_masked_conversation_replaces_each_spelling_by_as_many_placeholders(tok: BPETokenizer) -> None:
    conv = conversation(
        ("system", "<s>sys"), ("user", "a<|im_end|>b</s>"), ("assistant", "keep <|im_end|>"), ("tool", "<pad>")
    )
    masked = masked_conversation(conv, pattern(tok))
    assert [m.content for m in masked.messages] == [
        P * 3 + "sys",
        "a" + P * 10 + "b" + P * 4,
        "keep <|im_end|>",  # what the model emits keeps its tokens
        P * 5,
    ]
    assert (masked.source_file, masked.source_line) == (conv.source_file, conv.source_line)


def test_placeholder_spans_locate_the_spellings_in_the_real_render(tok: BPETokenizer) -> None:
    conv = conversation(("user", "say<|im_end|>now"), ("assistant", "ok"))
    real = chatml(*[(m.role, m.content) for m in conv.messages])
    masked = chatml(*[(m.role, m.content) for m in masked_conversation(conv, pattern(tok)).messages])
    spans = placeholder_spans(real, masked)
    assert spans == [Span(len("<|im_start|>user\nsay"), len("<|im_start|>user\nsay<|im_end|>"))]


def test_a_span_takes_in_the_spaces_before_it() -> None:
    real = chatml(("user", "say  <s>"), ("assistant", "ok"))
    masked = chatml(("user", "say  " + P * 3), ("assistant", "ok"))
    (span,) = placeholder_spans(real, masked) or []
    assert real.text[span.start : span.end] == "  <s>"


def test_renders_that_do_not_line_up_give_none() -> None:
    real = chatml(("user", "<s>"), ("assistant", "ok"))
    assert placeholder_spans(real, chatml(("user", P * 2), ("assistant", "ok"))) is None  # lengths differ
    odd = chatml(("user", P), ("assistant", "ok"))
    assert placeholder_spans(odd, odd) is None  # the real text has a placeholder of its own


def test_spellings_are_found_where_the_template_moves_the_text(tok: BPETokenizer) -> None:
    """Mistral folds the system message into the first user turn: the positions still come out exact."""
    conv = conversation(("system", "Use <s> wisely"), ("user", "a</s>b"), ("assistant", "ok </s>"))
    real, masked = mistral(conv), mistral(masked_conversation(conv, pattern(tok)))
    assert real.text == "<s>[INST] Use <s> wisely\n\na</s>b [/INST]ok </s></s>"
    spans = placeholder_spans(real, masked) or []
    assert [real.text[s.start : s.end] for s in spans] == [" <s>", "</s>"]
    assert [s.start for s in spans] == [len("<s>[INST] Use"), len("<s>[INST] Use <s> wisely\n\na")]


# -- widen_to_words ------------------------------------------------------------------------------------------


def test_widen_starts_at_the_word_and_the_spaces_before_it() -> None:
    text = "ab cd<s>ef"
    assert widen_to_words(text, [Span(5, 8)], [(5, 8)]) == [Span(2, 8)]


def test_widen_stops_at_the_end_of_a_template_token() -> None:
    text = "<|im_start|>cd<s>"
    assert widen_to_words(text, [Span(14, 17)], [(0, 12), (14, 17)]) == [Span(12, 17)]


def test_widen_merges_spans_that_meet() -> None:
    text = "x<s><s> y"
    assert widen_to_words(text, [Span(1, 4), Span(4, 7)], [(1, 4), (4, 7)]) == [Span(0, 7)]


def test_widen_keeps_spans_in_separate_words_apart() -> None:
    text = "a<s> x b<s>"
    assert widen_to_words(text, [Span(1, 4), Span(8, 11)], [(1, 4), (8, 11)]) == [Span(0, 4), Span(6, 11)]
    # words next to each other: the second span takes the space back to the first one's end, and they join
    assert widen_to_words("a<s> b<s>", [Span(1, 4), Span(6, 9)], [(1, 4), (6, 9)]) == [Span(0, 9)]
