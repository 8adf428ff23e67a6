"""Invariant 2 across turns: where an example trains several turns, the tokens in front of turn k must
equal the tokenizer's joint encoding of the text so far. Pieces are encoded separately, so each cut
before the last trained turn is checked against a joint encoding of a small window around it.

The window starts at the last added token before the cut (the tokenizer splits text at added tokens
and encodes the parts independently, so the left context is exact) and ends at the next added token
or WINDOW characters after the cut (then tokens within MARGIN of that edge are not compared).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import numpy as np

from sftprep.labels.build_loss_labels import Encoded
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import RenderedConversation, TurnSpan

WINDOW = 64
MARGIN = 24


@dataclass(frozen=True)
class _Window:
    unit: int
    piece: int  # the piece that starts at the cut
    left: int
    cut: int
    right: int
    right_exact: bool


def absorb_rstrip(r: RenderedConversation, rstrip_tokens: tuple[str, ...]) -> None:
    """A trained region ending in an added token that strips whitespace on its right (Phi-3's
    `<|end|>`) ends after that whitespace: the token swallows it, so the cut falls there."""
    if not rstrip_tokens:
        return
    text = r.text
    for k, t in enumerate(r.turns):
        if any(text.endswith(s, 0, t.end) for s in rstrip_tokens):
            end = t.end
            while end < len(text) and text[end].isspace():
                end += 1
            if end != t.end:
                r.turns[k] = TurnSpan(t.message_index, t.assistant_index, t.start, end, t.content, t.trained)


def cuts_needing_check(e: Encoded) -> list[int]:
    """Indices of pieces whose start is a cut inside the prompt of a later trained turn."""
    trained_starts = [t.start for t in e.rendered.turns if t.trained and t.end > t.start]
    if len(trained_starts) < 2:
        return []
    last = trained_starts[-1]
    return [j for j, p in enumerate(e.pieces) if 0 < p.start < last]


def find_windows(encoded: list[Encoded], tok: BPETokenizer) -> list[_Window]:
    windows = []
    independent = tok.splits_at_added  # text on either side of an added token is encoded independently
    fast = tok.fast
    for u, e in enumerate(encoded):
        js = cuts_needing_check(e)
        if not js:
            continue
        specials = [s for s in tok.find_added(e.rendered.text) if not _in_plain(s, e)]
        starts = [a for a, _ in specials]  # sorted, and so are the ends (added tokens do not overlap)
        ends = [b for _, b in specials]
        start_set, end_set = set(starts), set(ends)
        for j in js:
            prev, cur = e.pieces[j - 1], e.pieces[j]
            if prev.plain or cur.plain:
                continue  # plain-text special strings differ from a joint encoding by design
            c = cur.start
            if independent and (c in end_set or c in start_set):
                continue  # an added token on either side: the tokenizer encodes each side on its own
            if fast is not None and fast.splits_after_newline(e.rendered.text, c):
                continue  # a header's "\n" then content: a pre-token boundary either way (fast_bpe.py)
            k = bisect_right(ends, c)  # specials ending at or before the cut: the last one starts the window
            left = max(prev.start, starts[k - 1]) if k else prev.start
            limit = min(c + WINDOW, cur.end)
            n = bisect_left(starts, c)
            nxt = starts[n] if n < len(starts) and starts[n] <= limit else None
            right = nxt if nxt is not None else limit
            exact = nxt is not None or right == len(e.rendered.text)
            windows.append(_Window(u, j, left, c, right, exact))
    return windows


def _in_plain(span: tuple[int, int], e: Encoded) -> bool:
    return any(s.start <= span[0] < s.end for s in e.rendered.special_in_content)


def check_boundaries(encoded: list[Encoded], tok: BPETokenizer) -> tuple[list[bool], int]:
    """Per example: do all checked cuts agree with a joint encoding? Also the number of cuts that did not."""
    windows = find_windows(encoded, tok)
    ok = [True] * len(encoded)
    if not windows:
        return ok, 0
    bad = 0
    for w, (ids, offsets) in zip(windows, _joint_encodings(windows, encoded, tok)):
        if not _window_agrees(w, ids, offsets, encoded[w.unit]):
            ok[w.unit] = False
            bad += 1
    return ok, bad


Joint = tuple[np.ndarray | list[int], list[tuple[int, int]]]


def _joint_encodings(windows: list[_Window], encoded: list[Encoded], tok: BPETokenizer) -> list[Joint]:
    """Each window's ids and character offsets: by tiktoken where it gives HF's ids, else by HF (one batch)."""
    texts = [encoded[w.unit].rendered.text[w.left : w.right] for w in windows]
    fast = tok.fast
    out: list[Joint | None] = [*fast.encode_many_with_offsets(texts)] if fast is not None else [None] * len(texts)
    rest = [k for k, o in enumerate(out) if o is None]
    for k, enc in zip(rest, tok.encode_batch([texts[k] for k in rest])):
        out[k] = (enc.ids, enc.offsets)
    return [o for o in out if o is not None]


def _window_agrees(w: _Window, ids: list[int], offsets: list[tuple[int, int]], e: Encoded) -> bool:
    cut = w.cut - w.left
    n_left = 0
    for a, b in offsets:
        if a < cut < b:
            return False  # a token of the joint encoding straddles the cut
        if b <= cut and a < cut:
            n_left += 1
    piece_ids = e.piece_ids  # computed once per example
    left_ours = piece_ids[w.piece - 1]
    if w.left == e.pieces[w.piece - 1].start:
        if not np.array_equal(left_ours, ids[:n_left]):
            return False
    elif n_left > len(left_ours) or not np.array_equal(left_ours[len(left_ours) - n_left :], ids[:n_left]):
        return False
    if w.right_exact:
        right = ids[n_left:]
    else:  # the window ends mid-text: trust only tokens well before its edge
        edge = (w.right - w.left) - MARGIN
        right = [i for i, (a, b) in zip(ids[n_left:], offsets[n_left:]) if b <= edge]
    return np.array_equal(piece_ids[w.piece][: len(right)], right)
