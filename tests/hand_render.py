"""Hand-built renders for the unit tests of the labels and tokenize stages: chatml-shaped text whose message
and turn spans are computed here by string arithmetic, not by a template, so each test can be checked by eye.

Each message renders as `<|im_start|>ROLE\\nCONTENT<|im_end|>\\n`; an assistant turn's span runs from the start
of its content through its `<|im_end|>` (what the model generates after the generation prompt).
"""

from __future__ import annotations

from collections.abc import Sequence

from sftprep.types import Conversation, Message, RenderedConversation, Span, TurnSpan

START, END = "<|im_start|>", "<|im_end|>"


def conversation(*messages: tuple[str, str]) -> Conversation:
    return Conversation(tuple(Message(role, content) for role, content in messages), "t.jsonl", 1)  # type: ignore[arg-type]


def chatml(
    *messages: tuple[str, str], trained: Sequence[bool] | None = None, specials: Sequence[str] = ()
) -> RenderedConversation:
    """The chatml render of `messages`; `trained[k]` says whether assistant turn k is trained (default: all);
    every spelling of a string in `specials` inside a non-assistant message becomes a plain span."""
    text = ""
    spans: list[Span | None] = []
    turns: list[TurnSpan] = []
    plain: list[Span] = []
    for i, (role, content) in enumerate(messages):
        text += f"{START}{role}\n"
        a = len(text)
        text += content
        spans.append(Span(a, len(text)))
        if role == "assistant":
            k = len(turns)
            on = True if trained is None else trained[k]
            turns.append(TurnSpan(i, k, a, len(text) + len(END), Span(a, len(text)), on))
        else:
            plain += [Span(a + at, a + at + len(s)) for s in specials for at in _all(content, s)]
        text += f"{END}\n"
    return RenderedConversation(text, spans, turns, conversation(*messages), special_in_content=sorted(plain, key=_key))


def _all(text: str, sub: str) -> list[int]:
    out, at = [], text.find(sub)
    while at >= 0:
        out.append(at)
        at = text.find(sub, at + len(sub))
    return out


def _key(s: Span) -> int:
    return s.start


def plain_text(text: str, turns: Sequence[tuple[int, int]] = ()) -> RenderedConversation:
    """Text without a template: `turns` are the (start, end) of its trained regions (content = the region)."""
    spans = [TurnSpan(k, k, a, b, Span(a, b)) for k, (a, b) in enumerate(turns)]
    return RenderedConversation(text, [], spans, conversation(("user", text)))
