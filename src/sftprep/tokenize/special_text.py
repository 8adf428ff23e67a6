"""Where user, system and tool text spells an added token (`<|im_end|>` typed by a user): those places
are encoded as plain text, never as the special token.

They are found exactly, whatever the template does with the text: the conversation is rendered once more
with each such spelling replaced by as many placeholder characters, and the placeholders' positions in that
render are the spellings' positions in the real one.
"""

from __future__ import annotations

import re
from dataclasses import replace

from sftprep.types import Conversation, Message, RenderedConversation, Span

PLACEHOLDER = "\ue010"
_RUNS = re.compile(f"{PLACEHOLDER}+")


def needs_marking(conv: Conversation, find_special: object) -> bool:
    return any(m.role != "assistant" and find_special(m.full_content) for m in conv.messages)  # type: ignore[operator]


def masked_conversation(conv: Conversation, pattern: re.Pattern[str]) -> Conversation:
    """The conversation with every non-assistant spelling of an added token replaced by placeholders."""

    def mask(text: str | None) -> str | None:
        return None if text is None else pattern.sub(lambda m: PLACEHOLDER * len(m.group(0)), text)

    msgs = tuple(m if m.role == "assistant" else _masked(m, mask) for m in conv.messages)
    return replace(conv, messages=msgs)


def _masked(m: Message, mask: object) -> Message:
    return replace(m, content=mask(m.content), input=mask(m.input))  # type: ignore[operator]


def placeholder_spans(real: RenderedConversation, masked: RenderedConversation) -> list[Span] | None:
    """Spans of the spellings in `real`, from the placeholder runs in `masked`; None if the renders
    do not line up (then the record is rejected rather than encoded wrongly)."""
    if len(real.text) != len(masked.text) or PLACEHOLDER in real.text:
        return None
    spans = []
    for m in _RUNS.finditer(masked.text):
        spans.append(Span(*_absorb_spaces(real.text, m.start(), m.end())))
    return spans


def _absorb_spaces(text: str, start: int, end: int) -> tuple[int, int]:
    """A plain span takes in the spaces before it, so no token of the text before straddles it."""
    while start > 0 and text[start - 1] == " ":
        start -= 1
    return start, end


def widen_to_words(text: str, spans: list[Span], added: list[tuple[int, int]]) -> list[Span]:
    """Start each plain span at the beginning of its word (and the spaces before it), for tokenizers that
    encode a piece in its left context (SentencePiece-style): there a token of the plain text could
    otherwise straddle the span's start ("x.<s>": ".<") and lose a character. Never across a template's
    added token (its end is a stop), and overlapping spans are merged. The text joined to the span
    contains no added token, so the plain and the normal encoding of it are the same."""
    inside = [(s.start, s.end) for s in spans]
    stops = {b for a, b in added if not any(s <= a < e for s, e in inside)}
    out: list[Span] = []
    for s in spans:
        start = s.start
        while start > 0 and start not in stops and not text[start - 1].isspace():
            start -= 1
        if start not in stops:
            start, _ = _absorb_spaces(text, start, s.end)
        if out and start <= out[-1].end:
            out[-1] = Span(out[-1].start, s.end)
        else:
            out.append(Span(start, s.end))
    return out
