"""Template text between added tokens, encoded once per run instead of once per record.

A tokenizer splits its input at added tokens and encodes the text between them independently (when no
added token strips whitespace, none is matched on normalized text, and the pre-tokenizer does not treat
the start of the input specially: `BPETokenizer.splits_at_added`). So inside a piece, a stretch of text
that lies between two added tokens (or a piece edge) has the same ids on its own as inside the piece.
When such a stretch is template text, not message content (Qwen2.5's default system prompt, a header
between two special tokens), its ids are looked up in a cache filled the first time it is encoded.

Only what the template writes is cached, never message content: a corpus with repeated records gets no
speed from this. The ids are exact either way (the cache key is the text itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sftprep.types import RenderedConversation

MIN_LITERAL = 16  # shorter stretches cost less to encode than to find and look up
MAX_CACHED = 1 << 16

ENCODE, LITERAL = 0, 1
Part = tuple[int, int, int]  # (start, end, ENCODE | LITERAL)


@dataclass
class LiteralCache:
    pattern: re.Pattern[str]
    ids: dict[str, list[int]] = field(default_factory=dict)

    def store(self, text: str, ids: list[int]) -> None:
        if len(self.ids) < MAX_CACHED:
            self.ids[text] = ids


def content_ranges(r: RenderedConversation) -> list[tuple[int, int]]:
    """Where message contents are in the text (anything else is template text)."""
    spans = [(s.start, s.end) for s in r.message_spans if s is not None and s.end > s.start]
    spans.extend((t.content.start, t.content.end) for t in r.turns if t.content.end > t.content.start)
    return sorted(spans)


def split_piece(text: str, a: int, b: int, contents: list[tuple[int, int]], pattern: re.Pattern[str]) -> list[Part]:
    """Piece [a, b) as parts to encode and template stretches bounded by added tokens or the piece edges;
    a single ENCODE part when there is nothing worth caching. Added tokens are found by scanning the
    whole piece from its start, leftmost-longest, as the tokenizer splits it."""
    if not _has_long_template_run(a, b, contents):
        return [(a, b, ENCODE)]
    prev = a
    literals = []
    for m in pattern.finditer(text, a, b):
        s, e = m.span()
        if s - prev >= MIN_LITERAL and _is_template(prev, s, contents):
            literals.append((prev, s))
        prev = e
    if b - prev >= MIN_LITERAL and _is_template(prev, b, contents):
        literals.append((prev, b))
    if not literals:
        return [(a, b, ENCODE)]
    parts: list[Part] = []
    pos = a
    for s, e in literals:
        if pos < s:
            parts.append((pos, s, ENCODE))
        parts.append((s, e, LITERAL))
        pos = e
    if pos < b:
        parts.append((pos, b, ENCODE))
    return parts


def _has_long_template_run(a: int, b: int, contents: list[tuple[int, int]]) -> bool:
    """Whether [a, b) has MIN_LITERAL consecutive characters outside every content (contents sorted)."""
    pos = a
    for cs, ce in contents:
        if ce <= pos:
            continue
        if cs >= b:
            break
        if cs - pos >= MIN_LITERAL:
            return True
        pos = max(pos, ce)
    return b - pos >= MIN_LITERAL


def _is_template(start: int, end: int, contents: list[tuple[int, int]]) -> bool:
    for cs, ce in contents:  # noqa: SIM110 (a loop is faster than all() over a generator here)
        if cs < end and ce > start:
            return False
    return True
