"""Render a conversation's shape once, then fill in each record's text: one Jinja render per record.

A skeleton is the render of a conversation with the same roles whose contents are unique sentinels,
with every trainable span derived there by the exact (multi-render) method. Filling a skeleton with a
record's contents gives its text and spans. Where one instrumented render of the shape shows that the
template never looks inside contents (opacity.py), or only through `| trim` of whole contents (then the slot
is filled with `content.strip()`), that is the record's render; otherwise the record's own render must equal
it, or the record goes through the exact method (startswith, '<think>' in...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sftprep.types import Conversation, Message, RenderedConversation, Span, TurnSpan

_OPEN, _CLOSE = "\ue000", "\ue001"
_SENTINEL = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

Position = tuple[int, int]  # (literal index, offset inside it)


@dataclass(frozen=True)
class SkeletonTurn:
    message_index: int
    start: Position
    end: Position
    slot: int  # the slot holding the message's content, -1 when it has none
    assistant_index: int = -1  # which assistant message of the conversation it is


@dataclass(frozen=True)
class Skeleton:
    literals: tuple[str, ...]
    slots: tuple[int, ...]  # message index filling each slot (one fewer than literals)
    turns: tuple[SkeletonTurn, ...]
    tag_disagreements: int = 0
    opaque: bool = False  # the template never looks inside contents (opacity.py): no per-record check
    trimmed: tuple[bool, ...] = ()  # per slot, opaque only: the template writes `content | trim` there
    appended: str = ""  # text after the full render: the last turn's stop the render lacks (next header, eos)
    template_vars: tuple[tuple[str, object], ...] = ()
    counts: tuple[tuple[str, int], ...] = ()


def shape_key(conv: Conversation) -> tuple[object, ...] | None:
    """Roles and empty/non-empty contents; None for what the fast path does not cover."""
    if conv.tools or conv.raw_prompt is not None:
        return None
    key = []
    for m in conv.messages:
        if m.tool_calls or m.reasoning is not None or m.name or m.tool_call_id or _OPEN in m.full_content:
            return None
        if m.content_null or (m.full_content and m.full_content.isspace()):
            return None  # whitespace only: the exact path decides what such a turn trains
        key.append((m.role, bool(m.full_content)))
    return tuple(key)


def sentinel_conversation(conv: Conversation) -> Conversation:
    msgs = tuple(
        Message(m.role, f"{_OPEN}{i}{_CLOSE}" if m.full_content else "", weight=m.weight)
        for i, m in enumerate(conv.messages)
    )
    return replace(conv, messages=msgs)


def build_skeleton(rendered: RenderedConversation) -> Skeleton | None:
    """A skeleton from the exact render of a sentinel conversation; None if a span cuts a sentinel."""
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
    for t in rendered.turns:
        start, end = _position(t.start, bounds), _position(t.end, bounds)
        if start is None or end is None:
            return None
        slot = slots.index(t.message_index) if t.message_index in slots else -1
        turns.append(SkeletonTurn(t.message_index, start, end, slot, t.assistant_index))
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
