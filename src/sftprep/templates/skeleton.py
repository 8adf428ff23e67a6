"""Render a conversation's shape once, then fill in each record's text: one Jinja render per record.

A skeleton is the render of a conversation with the same roles whose contents are unique sentinels,
with every trainable span derived there by the exact (multi-render) method. Filling a skeleton with a
record's contents gives its text and spans. It is made only where instrumented renders show that none of
the derivation's renders looks inside contents (opacity.py), or only through `| trim` of whole contents (the
slot is then filled with `content.strip()`), and that none reads a sealed value (tools, tool calls,
reasoning, names: their presence is part of the shape, their values are not); any other record goes through
the exact method (startswith, '<think>' in...).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from sftprep.templates.assemble import text_counts
from sftprep.types import Conversation, RenderedConversation, Span, TurnSpan

_OPEN, _CLOSE = "\ue000", "\ue001"
_SENTINEL = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

Position = tuple[int, int]  # (literal index, offset inside it)


@dataclass(frozen=True)
class SkeletonTurn:
    message_index: int
    start: Position
    end: Position
    slot: int  # the slot holding the message's content, -1 when it has none
    text_end: Position  # the end of what the model generates (the stop kept out of `end` too)
    assistant_index: int = -1  # which assistant message of the conversation it is
    content_inside: bool = False  # its content's slot lies in what it generates (so its content is rendered)


@dataclass(frozen=True)
class Skeleton:
    literals: tuple[str, ...]
    slots: tuple[int, ...]  # message index filling each slot (one fewer than literals)
    turns: tuple[SkeletonTurn, ...]
    tag_disagreements: int = 0
    trimmed: tuple[bool, ...] = ()  # per slot: the template writes `content | trim` there
    appended: str = ""  # text after the full render: the last turn's stop the render lacks (next header, eos)
    template_vars: tuple[tuple[str, object], ...] = ()
    counts: tuple[tuple[str, int], ...] = ()  # the shape's (TEXT_COUNTS are the record's)
    # turns left out for the shape (nothing to train): reason, the message after its "file:line", the turn
    dropped: tuple[tuple[str, str, int | None], ...] = ()
    rejected: tuple[str, str] | None = None  # the whole record is left out: reason, message after "file:line"


def shape_key(conv: Conversation) -> tuple[object, ...] | None:
    """Whether there are tools; per message its role, its content (null, empty or not) and which other keys a
    template is given (tool calls, reasoning, name, tool_call_id: sealed, their values never part of the
    shape); None for what the fast path does not cover."""
    if conv.raw_prompt is not None:
        return None
    key: list[object] = [bool(conv.tools)]
    for m in conv.messages:
        if _OPEN in m.full_content:
            return None
        if m.full_content and m.full_content.isspace():
            return None  # whitespace only: the exact path decides what such a turn trains
        content = "null" if m.content_null else bool(m.full_content)
        if m.tool_calls or m.reasoning is not None or m.name is not None or m.tool_call_id is not None:
            sealed = (bool(m.tool_calls), m.reasoning is not None, m.reasoning_field, m.name is not None)
            key.append((m.role, content, *sealed, m.tool_call_id is not None))
        else:
            key.append((m.role, content))
    return tuple(key)


def sentinels_only_in_contents(conv: Conversation) -> bool:
    """No sealed value spells a sentinel character: the shape's derivation keeps the first record's sealed
    values, and its checks (is another message's text inside this turn's tool calls or reasoning?) must not
    find a sentinel there."""
    values = [conv.tools, [[[c.name, c.arguments, c.id] for c in m.tool_calls] for m in conv.messages]]
    values += [[m.reasoning, m.name, m.tool_call_id] for m in conv.messages]
    text = json.dumps(values, ensure_ascii=False, default=str)
    return _OPEN not in text and _CLOSE not in text


def sentinel_conversation(conv: Conversation) -> Conversation:
    """The record with every non-empty content a unique sentinel; tools, tool calls, reasoning and names kept
    (they are sealed: a skeleton with them is used only where the template is shown never to read them)."""
    msgs = tuple(
        replace(m, content=f"{_OPEN}{i}{_CLOSE}" if m.full_content else "", input=None)
        for i, m in enumerate(conv.messages)
    )
    return replace(conv, messages=msgs)


def build_skeleton(rendered: RenderedConversation, text_ends: list[int]) -> Skeleton | None:
    """A skeleton from the exact render of a sentinel conversation (`text_ends`: where each turn's generated
    text ends); None if a span cuts a sentinel."""
    text = rendered.text
    literals, slots, bounds = [], [], []
    pos = 0
    for m in _SENTINEL.finditer(text):
        literals.append(text[pos : m.start()])
        slots.append(int(m.group(1)))
        bounds.append((m.start(), m.end()))
        pos = m.end()
    literals.append(text[pos:])
    turns = []
    for t, text_end in zip(rendered.turns, text_ends, strict=True):
        start, end, gen_end = _position(t.start, bounds), _position(t.end, bounds), _position(text_end, bounds)
        if start is None or end is None or gen_end is None:
            return None
        slot = slots.index(t.message_index) if t.message_index in slots else -1
        inside = slot >= 0 and start <= (slot, len(literals[slot])) and (slot + 1, 0) <= gen_end
        turns.append(SkeletonTurn(t.message_index, start, end, slot, gen_end, t.assistant_index, inside))
    return Skeleton(tuple(literals), tuple(slots), tuple(turns), rendered.tag_disagreements)


def _position(x: int, bounds: list[tuple[int, int]]) -> Position | None:
    literal_start = 0
    for k, (a, b) in enumerate(bounds):
        if x <= a:
            return (k, x - literal_start)
        if x < b:
            return None  # inside a sentinel
        literal_start = b
    return (len(bounds), x - literal_start)


def fill(skel: Skeleton, conv: Conversation) -> tuple[str, list[int], list[str]] | None:
    """The record's text, the start of each literal in it, and the content of each slot; None when a trimmed
    slot's content is whitespace only (its emptiness after `| trim` is not the shape's)."""
    contents = [conv.messages[i].full_content for i in skel.slots]
    if skel.trimmed:
        contents = [c.strip() if t else c for c, t in zip(contents, skel.trimmed)]
        if not all(contents):
            return None
    parts: list[str] = []
    starts: list[int] = []
    pos = 0
    for k, lit in enumerate(skel.literals):
        starts.append(pos)
        parts.append(lit)
        pos += len(lit)
        if k < len(contents):
            parts.append(contents[k])
            pos += len(contents[k])
    return "".join(parts), starts, contents


def rendered_from_skeleton(
    skel: Skeleton, conv: Conversation, text: str, starts: list[int], contents: list[str], trained: list[bool]
) -> RenderedConversation:
    spans: list[Span | None] = [None] * len(conv.messages)
    for k, i in enumerate(skel.slots):
        a = starts[k] + len(skel.literals[k])
        spans[i] = Span(a, a + len(contents[k]))
    turns = []
    for n, t in enumerate(skel.turns):
        start = starts[t.start[0]] + t.start[1]
        end = starts[t.end[0]] + t.end[1]
        content = spans[t.message_index] or Span(start, start)
        turns.append(TurnSpan(t.message_index, t.assistant_index, start, end, content, trained[n]))
    r = RenderedConversation(text=text, message_spans=spans, turns=turns, conversation=conv)
    r.tag_disagreements = skel.tag_disagreements
    return r


def generated_text(t: SkeletonTurn, text: str, starts: list[int]) -> str:
    """A turn's generated text (through its stop) in a filled skeleton."""
    return text[starts[t.start[0]] + t.start[1] : starts[t.text_end[0]] + t.text_end[1]]


def record_counts(skel: Skeleton, conv: Conversation, text: str, starts: list[int]) -> dict[str, int]:
    """The shape's counts and the record's TEXT_COUNTS (nothing to look for where a turn holds its own
    content's slot and has no tool calls)."""
    counts = dict(skel.counts)
    added = False
    for t in skel.turns:
        msg = conv.messages[t.message_index]
        if (t.content_inside or t.slot < 0) and not msg.tool_calls:
            continue
        for k, v in text_counts(msg, generated_text(t, text, starts)).items():
            if v:
                counts[k] = counts.get(k, 0) + v
                added = True
    return dict(sorted(counts.items())) if added else counts
