"""Stage 3: render a conversation to text plus the spans of every message and trainable region."""

from __future__ import annotations

from dataclasses import replace

from sftprep.templates.base import ChatTemplate, RenderOptions
from sftprep.types import Conversation, MaskMode, Reject, RenderedConversation, TurnSpan


def render_chat_prompt(
    conv: Conversation, template: ChatTemplate, opts: RenderOptions, mask: MaskMode = "assistant"
) -> list[RenderedConversation] | Reject:
    """Render `conv` and choose its trained turns by `mask`.

    Returns one RenderedConversation per example: the whole conversation, or one per assistant turn
    (`--mask split-turns`, or automatically where the template does not preserve prefixes).
    """
    rendered = template.render(conv, opts)
    if isinstance(rendered, Reject):
        return rendered
    if mask == "last-turn":
        rendered = _only_last_turn(rendered)
    elif mask == "split-turns":
        rendered = [u for r in rendered for u in split_turns(r)]
    return rendered


def split_turns(r: RenderedConversation) -> list[RenderedConversation]:
    """One example per trained turn: the text up to the end of that turn, only that turn trained.

    The text of a prefix-preserving render up to turn k's end is exactly history + generation prompt
    + turn k, so no re-render is needed.
    """
    if r.turn >= 0:
        return [r]
    out = []
    for k, t in enumerate(r.trained_turns):
        turns = [_with_trained(u, u is t) for u in r.turns if u.end <= t.end]
        out.append(
            replace(
                r,
                text=r.text[: t.end],
                turns=turns,
                turn=t.assistant_index,
                special_in_content=[s for s in r.special_in_content if s.end <= t.end],
                counts=r.counts if k == 0 else {},  # the record's counts and dropped turns, once
                dropped_turns=r.dropped_turns if k == 0 else [],
            )
        )
    return out


def _only_last_turn(units: list[RenderedConversation]) -> list[RenderedConversation]:
    """Train only the conversation's last assistant turn."""
    last = max((t.assistant_index for u in units for t in u.turns), default=-1)
    out = []
    for u in units:
        turns = [_with_trained(t, t.trained and t.assistant_index == last) for t in u.turns]
        if any(t.trained for t in turns):
            out.append(replace(u, turns=turns))
    return out


def _with_trained(t: TurnSpan, trained: bool) -> TurnSpan:
    return t if t.trained == trained else replace(t, trained=trained)
