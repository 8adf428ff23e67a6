"""A record's derived turns as examples: one for the conversation where every turn's prompt and completion is
a prefix of its full render, else one per turn; with the counts the manifest reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from sftprep.templates.derive import Derivation, TurnResult
from sftprep.templates.modes import DEFAULT, Setting
from sftprep.types import Message, Reject, RenderedConversation, Span, TurnSpan


def to_rendered(d: Derivation, results: list[TurnResult | Reject]) -> list[RenderedConversation] | Reject:
    ok = [r for r in results if isinstance(r, TurnResult)]
    dropped = [r for r in results if isinstance(r, Reject)]
    if not ok:
        if dropped:
            first = dropped[0]
            more = f" (and {len(dropped) - 1} more turns)" if len(dropped) > 1 else ""
            return replace(first, message=first.message + more, turn=None)
        return [_rendered(d, d.full(), [], {})]
    counts = _counts(d, ok)
    merged = _merged(d, ok)
    if merged is not None:
        merged.dropped_turns = dropped
        merged.counts = counts
        return [merged]
    out = []
    for r in ok:
        u = _rendered(d, r.prompt + r.text, [r], _vars(d, r.setting))
        u.turn = d.assistant_index(r.index)
        u.counts = _counts(d, [r])
        out.append(u)
    out[0].dropped_turns = dropped
    return out


def _merged(d: Derivation, ok: list[TurnResult]) -> RenderedConversation | None:
    s = ok[0].setting
    if any(r.setting != s or r.edit or r.aligned for r in ok):
        return None
    full = d.full(s)
    text = full
    last = len(d.msgs) - 1
    for r in ok:
        if text.startswith(r.prompt + r.text):
            continue
        tail = full[len(r.prompt) :]
        if r is ok[-1] and r.index == last and full.startswith(r.prompt) and r.text.startswith(tail):
            text = r.prompt + r.text  # the last turn ends with a stop its render lacks (a next header, eos)
            continue
        return None
    rendered = _rendered(d, text, ok, _vars(d, s))
    if d.t.has_generation_tags and s == DEFAULT:
        ranges = d.t.generation_ranges(d.msgs, d.conv, d.opts)
        rendered.tag_disagreements = apply_generation_ranges(rendered, ranges)
    return rendered


def _vars(d: Derivation, s: Setting) -> dict[str, Any]:
    return {**d.opts.template_vars, **s.vars}


def _rendered(d: Derivation, text: str, turns: list[TurnResult], template_vars: dict[str, Any]) -> RenderedConversation:
    spans = []
    for r in turns:
        start = len(r.prompt)
        content = Span(start + r.content.start, start + r.content.end)
        spans.append(TurnSpan(r.index, d.assistant_index(r.index), start, start + r.trained_len, content, True))
    return RenderedConversation(
        text=text,
        message_spans=_find_message_spans(text, d.conv.messages),
        turns=spans,
        conversation=d.conv,
        template_vars=template_vars,
    )


def _counts(d: Derivation, ok: list[TurnResult]) -> dict[str, int]:
    c: Counter[str] = Counter()
    for r in ok:
        msg = d.conv.messages[r.index]
        c["mode:" + ("aligned" if r.aligned else "default" if r.setting == DEFAULT else "switch")] += 1
        c["stop:" + r.stop.how] += 1
        c["stop_not_special"] += not r.stop.known
        c["reasoning_dropped"] += r.edit == "drop" or (
            d.opts.reasoning_mode == "non-thinking" and msg.reasoning is not None
        )
        c.update(text_counts(msg, r.text))
    return {k: v for k, v in sorted(c.items()) if v}


TEXT_COUNTS = ("content_not_rendered", "tool_calls_not_rendered")  # read in a turn's text: not the shape's


def text_counts(msg: Message, text: str) -> dict[str, int]:
    """A turn's counts that depend on its text (`text`: what the model generates for it)."""
    content = msg.full_content.strip()
    return {
        "content_not_rendered": int(bool(content) and content not in text),
        "tool_calls_not_rendered": sum(1 for call in msg.tool_calls if call.name not in text),
    }


def apply_generation_ranges(r: RenderedConversation, ranges: list[tuple[int, int]]) -> int:
    """Cross-check derived turn spans against `{% generation %}` ranges; the number that disagree."""
    if not ranges:
        return 0
    disagreements = 0
    for t in r.turns:
        hits = [(a, b) for a, b in ranges if a < t.end and b > t.start]
        if not hits or (min(a for a, _ in hits), max(b for _, b in hits)) != (t.start, t.end):
            disagreements += 1
    return disagreements


def _find_message_spans(text: str, messages: tuple[Message, ...]) -> list[Span | None]:
    """Best-effort character span of each message's content, searched in order."""
    spans: list[Span | None] = []
    cursor = 0
    for m in messages:
        content = m.full_content.strip()
        at = text.find(content, cursor) if content else -1
        if at < 0:
            spans.append(None)
            continue
        spans.append(Span(at, at + len(content)))
        cursor = at + len(content)
    return spans
