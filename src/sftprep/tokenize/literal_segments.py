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

import numpy as np

from sftprep.types import RenderedConversation

MIN_LITERAL = 16  # a piece is scanned for added tokens only when it has this much template text in a row
MAX_CACHED = 1 << 16

ENCODE, LITERAL = 0, 1
Part = tuple[int, int, int]  # (start, end, ENCODE | LITERAL)


@dataclass
class LiteralCache:
    pattern: re.Pattern[str]
    ids: dict[str, np.ndarray] = field(default_factory=dict)  # int32, never modified

    def store(self, text: str, ids: np.ndarray) -> None:
        if len(self.ids) < MAX_CACHED:
            self.ids[text] = ids


def content_ranges(r: RenderedConversation) -> list[tuple[int, int]]:
    """Where message contents are in the text (anything else is template text)."""
    spans = [(s.start, s.end) for s in r.message_spans if s is not None and s.end > s.start]
    spans.extend((t.content.start, t.content.end) for t in r.turns if t.content.end > t.content.start)
    return sorted(spans)


def split_piece(text: str, a: int, b: int, contents: list[tuple[int, int]], pattern: re.Pattern[str]) -> list[Part]:
    """Piece [a, b) as parts to encode and template text (LITERAL: no content in it) bounded by added tokens
    or the piece edges. Added tokens are found by scanning the whole piece from its start, leftmost-longest,
    as the tokenizer splits it; a piece with less than MIN_LITERAL template characters in a row is not
    scanned."""
    longest, overlaps = _template_runs(a, b, contents)
    if not overlaps:
        return [(a, b, LITERAL)]
    if longest < MIN_LITERAL:
        return [(a, b, ENCODE)]
    cuts = [a]
    for m in pattern.finditer(text, a, b):
        cuts.extend(m.span())
    cuts.append(b)
    parts: list[Part] = []
    pos = a
    for k in range(0, len(cuts), 2):  # [cuts[k], cuts[k+1]) lies between two added tokens (or an edge)
        s, e = cuts[k], cuts[k + 1]
        if e - s >= MIN_LITERAL and is_template(s, e, contents):
            if pos < s:
                parts.append(_part(pos, s, contents))
            parts.append((s, e, LITERAL))
            pos = e
    if pos < b:
        parts.append(_part(pos, b, contents))
    return parts


def _part(start: int, end: int, contents: list[tuple[int, int]]) -> Part:
    """Between template stretches: LITERAL when no content is in it either (a lone `<|im_start|>`)."""
    return (start, end, LITERAL if is_template(start, end, contents) else ENCODE)


def _template_runs(a: int, b: int, contents: list[tuple[int, int]]) -> tuple[int, bool]:
    """The longest run of template characters in [a, b), and whether any content overlaps it (sorted)."""
    pos, longest, overlaps = a, 0, False
    for cs, ce in contents:
        if ce <= pos:
            continue
        if cs >= b:
            break
        overlaps = True
        longest = max(longest, cs - pos)
        pos = max(pos, ce)
    return max(longest, b - pos), overlaps


def is_template(start: int, end: int, contents: list[tuple[int, int]]) -> bool:
    for cs, ce in contents:  # noqa: SIM110 (a loop is faster than all() over a generator here)
        if cs < end and ce > start:
            return False
    return True
