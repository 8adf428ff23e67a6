"""tokenize/literal_segments.py: template text between added tokens is cut out of a piece and encoded once per
run (cached by its text); message content never is."""

from __future__ import annotations

import re

import numpy as np
import pytest
from dummy_tokenizer import MARKERS, build_dummy_tokenizer, hand_ids
from hand_render import chatml

from sftprep.labels.build_loss_labels import encode_and_label
from sftprep.tokenize import literal_segments
from sftprep.tokenize.literal_segments import (
    ENCODE,
    LITERAL,
    MIN_LITERAL,
    LiteralCache,
    content_ranges,
    is_template,
    split_piece,
)
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import RenderedConversation

PATTERN = re.compile("|".join(re.escape(m) for m in sorted(MARKERS, key=len, reverse=True)))
DEFAULT_SYSTEM = "You are a helpful assistant."  # 28 characters: longer than MIN_LITERAL


def with_default_system(*messages: tuple[str, str]) -> RenderedConversation:
    """A render whose system prompt is written by the template (not a message of the record): template text."""
    r = chatml(("system", DEFAULT_SYSTEM), *messages)
    r.message_spans[0] = None
    return r


def parts_text(text: str, parts: list[tuple[int, int, int]]) -> list[tuple[str, str]]:
    return [(text[a:b], "literal" if kind == LITERAL else "encode") for a, b, kind in parts]


def test_content_ranges_are_the_messages_contents() -> None:
    r = chatml(("system", "S"), ("user", "Hi"), ("assistant", "Yo"), ("user", ""))
    ranges = content_ranges(r)
    assert ranges == sorted(ranges)
    assert sorted({r.text[a:b] for a, b in ranges}) == ["Hi", "S", "Yo"]  # the empty message has no range


def test_is_template_means_no_content_overlaps() -> None:
    contents = [(5, 8)]
    assert is_template(0, 5, contents) and is_template(8, 12, contents)
    assert not is_template(4, 6, contents) and not is_template(7, 9, contents) and not is_template(0, 20, contents)


def test_a_piece_without_content_is_one_literal() -> None:
    r = chatml(("user", "Hi"), ("assistant", "Yo"))
    a = r.text.index("<|im_end|>")  # "<|im_end|>\n<|im_start|>assistant\n": between two contents
    b = r.turns[0].start
    assert split_piece(r.text, a, b, content_ranges(r), PATTERN) == [(a, b, LITERAL)]


def test_a_piece_with_only_short_template_runs_is_encoded_whole() -> None:
    r = chatml(("user", "Hi"), ("assistant", "Yo"))
    b = r.turns[0].start
    assert split_piece(r.text, 0, b, content_ranges(r), PATTERN) == [(0, b, ENCODE)]


def test_a_long_template_stretch_between_markers_is_cut_out() -> None:
    r = with_default_system(("user", "Hi"), ("assistant", "Yo"))
    b = r.turns[0].start
    parts = split_piece(r.text, 0, b, content_ranges(r), PATTERN)
    assert parts_text(r.text, parts) == [
        ("<|im_start|>", "literal"),
        ("system\n" + DEFAULT_SYSTEM, "literal"),
        ("<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "encode"),
    ]
    assert [(a, b) for a, b, _ in parts] == sorted((a, b) for a, b, _ in parts)
    assert parts[0][0] == 0 and parts[-1][1] == b and all(x[1] == y[0] for x, y in zip(parts, parts[1:]))


def test_a_stretch_just_under_the_minimum_is_not_cut_out() -> None:
    short = "x" * (MIN_LITERAL - len("system\n") - 1)
    r = chatml(("system", short), ("user", "Hi"), ("assistant", "Yo"))
    r.message_spans[0] = None
    b = r.turns[0].start
    assert split_piece(r.text, 0, b, content_ranges(r), PATTERN) == [(0, b, ENCODE)]


def test_content_is_never_cached_and_template_text_is() -> None:
    tok = BPETokenizer(build_dummy_tokenizer(), "dummy", "0")
    cache = tok.literal_cache
    assert cache is not None and cache.ids == {}
    long_user = "a question that is much longer than sixteen characters"
    r = with_default_system(("user", long_user), ("assistant", "Yo"))
    (first,) = encode_and_label([r], tok)
    # the template's stretches: the first marker and the default system prompt (cut out of the first piece),
    # the "\n" after the last turn (a piece with no content); the user's long text is not among them
    assert set(cache.ids) == {"<|im_start|>", "system\n" + DEFAULT_SYSTEM, "\n"}
    assert cache.ids["system\n" + DEFAULT_SYSTEM].tolist() == hand_ids("system\n" + DEFAULT_SYSTEM)
    assert first.input_ids.tolist() == hand_ids(r.text)
    # a second record with the same template text: the cached ids are used, and they are the right ones
    r2 = with_default_system(("user", "other"), ("assistant", "Z"))
    (second,) = encode_and_label([r2], tok)
    assert second.input_ids.tolist() == hand_ids(r2.text)
    assert set(cache.ids) == {"<|im_start|>", "system\n" + DEFAULT_SYSTEM, "\n"}


def test_the_cache_stops_growing_at_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(literal_segments, "MAX_CACHED", 2)
    cache = LiteralCache(PATTERN)
    for k in range(4):
        cache.store(f"text {k}", np.array(hand_ids(f"text {k}"), dtype=np.int32))
    assert list(cache.ids) == ["text 0", "text 1"]


def test_a_cached_stretch_is_looked_up_not_encoded_again() -> None:
    tok = BPETokenizer(build_dummy_tokenizer(), "dummy", "0")
    cache = tok.literal_cache
    assert cache is not None
    encode_and_label([with_default_system(("user", "Hi"), ("assistant", "Yo"))], tok)
    cache.ids["system\n" + DEFAULT_SYSTEM] = np.array([7, 7], dtype=np.int32)  # a marked entry
    r = with_default_system(("user", "Other"), ("assistant", "Z"))
    (e,) = encode_and_label([r], tok)
    rest = r.text[len("<|im_start|>system\n" + DEFAULT_SYSTEM) :]
    assert e.input_ids.tolist() == [1000, 7, 7, *hand_ids(rest)]
