"""templates/render_chat_prompt.py: a conversation rendered once, then its trained turns chosen by --mask
(assistant, last-turn, split-turns, none); a template's Reject passes through."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hand_render import chatml, conversation

from sftprep.templates.base import RenderOptions
from sftprep.templates.loader import load_template
from sftprep.templates.render_chat_prompt import render_chat_prompt, split_turns
from sftprep.types import Conversation, MaskMode, Reject, RenderedConversation, Span

OPTS = RenderOptions(bos_token="<s>", eos_token="</s>")
CONV = conversation(("user", "Hi"), ("assistant", "Yo"), ("user", "Q"), ("assistant", "A"))
TEXT = (
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"
    "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
)
TURN0_TEXT = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>"


def render(conv: Conversation, mask: MaskMode = "assistant") -> list[RenderedConversation]:
    units = render_chat_prompt(conv, load_template("chatml"), OPTS, mask)
    assert isinstance(units, list), units
    return units


def turns(u: RenderedConversation) -> list[tuple[str, bool, int]]:
    return [(u.text[t.start : t.end], t.trained, t.assistant_index) for t in u.turns]


@pytest.mark.parametrize("mask", ["assistant", "none"])
def test_assistant_and_none_train_every_assistant_turn(mask: MaskMode) -> None:
    """--mask none trains every token; that is the labels stage's work, the render is the same."""
    (u,) = render(CONV, mask)
    assert u.text == TEXT and u.turn == -1
    assert turns(u) == [("Yo<|im_end|>", True, 0), ("A<|im_end|>", True, 1)]


def test_last_turn_trains_only_the_last_assistant_turn() -> None:
    (u,) = render(CONV, "last-turn")
    assert u.text == TEXT
    assert turns(u) == [("Yo<|im_end|>", False, 0), ("A<|im_end|>", True, 1)]


def test_last_turn_never_trains_an_earlier_turn_instead() -> None:
    """The last assistant message has weight 0: nothing is trained (the record then has no example)."""
    messages = (*CONV.messages[:3], replace(CONV.messages[3], weight=0))
    assert render(replace(CONV, messages=messages), "last-turn") == []


def test_split_turns_gives_one_example_per_turn() -> None:
    first, second = render(CONV, "split-turns")
    assert (first.text, first.turn) == (TURN0_TEXT, 0)
    assert turns(first) == [("Yo<|im_end|>", True, 0)]
    assert (second.text, second.turn) == (TEXT.rstrip("\n"), 1)
    assert turns(second) == [("Yo<|im_end|>", False, 0), ("A<|im_end|>", True, 1)]


def test_split_turns_skips_untrained_turns() -> None:
    messages = (*CONV.messages[:1], replace(CONV.messages[1], weight=0), *CONV.messages[2:])
    (only,) = render(replace(CONV, messages=messages), "split-turns")
    assert only.turn == 1 and turns(only) == [("Yo<|im_end|>", False, 0), ("A<|im_end|>", True, 1)]


def test_a_template_reject_passes_through() -> None:
    conv = conversation(("user", "q"), ("assistant", "a"), ("tool", "r"), ("assistant", "b"))
    result = render_chat_prompt(conv, load_template("alpaca"), OPTS, "split-turns")
    assert isinstance(result, Reject)
    assert result.reason == "template_unsupported" and "tool messages" in result.message
    assert result.message.startswith("t.jsonl:1: ")


# -- split_turns on its own ----------------------------------------------------------------------------------


def test_split_turns_keeps_counts_and_dropped_turns_once_and_plain_spans_in_range() -> None:
    r = chatml(("user", "a <s>"), ("assistant", "b"), ("user", "c <s>"), ("assistant", "d"), specials=["<s>"])
    dropped = Reject("t.jsonl", 1, "some_reason", "why", turn=5)
    r = replace(r, counts={"mode:default": 2}, dropped_turns=[dropped])
    first, second = split_turns(r)
    assert (first.counts, first.dropped_turns) == ({"mode:default": 2}, [dropped])
    assert (second.counts, second.dropped_turns) == ({}, [])
    assert [first.text[s.start : s.end] for s in first.special_in_content] == ["<s>"]
    assert [second.text[s.start : s.end] for s in second.special_in_content] == ["<s>", "<s>"]
    assert all(s.end <= len(first.text) for s in first.special_in_content)


def test_an_example_of_one_turn_is_not_split_again() -> None:
    (first, _) = split_turns(chatml(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")))
    assert split_turns(first) == [first]


def test_split_turns_cuts_the_text_at_each_turns_end() -> None:
    r = chatml(("user", "a"), ("assistant", "bb"), ("user", "c"), ("assistant", "dd"), ("user", "tail"))
    units = split_turns(r)
    assert [u.text for u in units] == [r.text[: t.end] for t in r.turns]
    assert [u.turns[-1].content for u in units] == [t.content for t in r.turns]
    assert all(isinstance(t.content, Span) for u in units for t in u.turns)
