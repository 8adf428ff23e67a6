"""Stage 5: token ids and loss labels from rendered text and its trainable spans.

The rule (documented in README "How masks are built"): the text is cut at every trainable-region
boundary and each piece is encoded on its own, so no token ever straddles a boundary:
  * the prompt of the first trained turn is encoded exactly as at inference;
  * each trained region (generation-prompt end through end-of-turn marker) is encoded on its own, so
    its tokens decode to exactly the template's rendering of the turn;
  * where one joint encoding would have merged across a cut that a later turn's prompt contains,
    `boundary_check` finds it and that conversation becomes one example per turn (counted).
Message text that spells an added token is encoded as plain text (counted).
Labels are aligned with input_ids (the model shifts): the id on trained tokens, -100 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np

from sftprep.tokenizer import BPETokenizer
from sftprep.types import IGNORE_INDEX, RenderedConversation, Span


@dataclass(frozen=True)
class Piece:
    start: int
    end: int
    trained: bool
    plain: bool = False


@dataclass
class Encoded:
    """One example's ids and labels (views into its batch's arrays), with the pieces they came from."""

    rendered: RenderedConversation
    pieces: list[Piece]
    input_ids: np.ndarray
    labels: np.ndarray
    piece_starts: np.ndarray  # token offset of each piece, plus the total: len(pieces) + 1 entries

    @property
    def num_trainable(self) -> int:
        return int(np.count_nonzero(self.labels != IGNORE_INDEX))

    @property
    def piece_ids(self) -> list[np.ndarray]:
        s = self.piece_starts
        return [self.input_ids[s[k] : s[k + 1]] for k in range(len(self.pieces))]


def trained_intervals(r: RenderedConversation, mask_all: bool) -> list[Span]:
    if mask_all:
        return [Span(0, len(r.text))]
    return [Span(t.start, t.end) for t in r.turns if t.trained and t.end > t.start]


def plan_pieces(r: RenderedConversation, mask_all: bool = False) -> list[Piece]:
    """Cut the text at trained-region and plain-text (special string in content) boundaries."""
    trained = trained_intervals(r, mask_all)
    plain = r.special_in_content
    cuts = {0, len(r.text)}
    for s in (*trained, *plain):
        cuts.add(s.start)
        cuts.add(s.end)
    bounds = sorted(cuts)
    pieces = []
    ti = pi = 0
    for a, b in zip(bounds, bounds[1:]):
        while ti < len(trained) and trained[ti].end <= a:
            ti += 1
        while pi < len(plain) and plain[pi].end <= a:
            pi += 1
        is_trained = ti < len(trained) and trained[ti].start <= a
        is_plain = pi < len(plain) and plain[pi].start <= a
        pieces.append(Piece(a, b, is_trained, is_plain))
    return pieces


def encode_alone(units: list[RenderedConversation], plans: list[list[Piece]], tok: BPETokenizer) -> list[list[int]]:
    """Each piece encoded on its own (byte-level BPE: a piece's tokens do not depend on what precedes it)."""
    normal: list[str] = []
    plain: list[str] = []
    for r, plan in zip(units, plans):
        for p in plan:
            (plain if p.plain else normal).append(r.text[p.start : p.end])
    enc_normal = iter(tok.encode_batch(normal))
    enc_plain = iter(tok.encode_plain_batch(plain))
    return [next(enc_plain if p.plain else enc_normal).ids for plan in plans for p in plan]


def encode_in_context(
    units: list[RenderedConversation], plans: list[list[Piece]], tok: BPETokenizer
) -> list[list[int]]:
    """Each piece encoded with its left context back to the previous added token, keeping the tokens from
    the piece's start: what a joint encoding has there (SentencePiece-style tokenizers prepend a space at
    the start of the input but not after a special token)."""
    texts: list[tuple[str, int, bool]] = []  # (text with context, where the piece starts in it, plain)
    for r, plan in zip(units, plans):
        specials = [a for a, _ in tok.find_added(r.text)]
        for p in plan:
            ctx = max((a for a in specials if a < p.start), default=p.start) if p.start > 0 else 0
            texts.append((r.text[ctx : p.end], p.start - ctx, p.plain))
    normal = [t for t, _, plain in texts if not plain]
    plain_texts = [t for t, _, plain in texts if plain]
    enc_normal = iter(tok.encode_batch_offsets(normal))
    enc_plain = iter(tok.plain_encode_batch_offsets(plain_texts))
    out = []
    for _, cut, plain in texts:
        enc = next(enc_plain if plain else enc_normal)
        out.append([i for i, (a, _) in zip(enc.ids, enc.offsets) if a >= cut] if cut else enc.ids)
    return out


def encode_and_label(units: list[RenderedConversation], tok: BPETokenizer, mask_all: bool = False) -> list[Encoded]:
    """Encode every piece of every unit (one Rust batch call for normal text, one for plain text) and
    build labels for the whole batch at once: ids on trained pieces, IGNORE_INDEX elsewhere."""
    plans = [plan_pieces(r, mask_all) for r in units]
    ids_lists = (encode_in_context if tok.start_sensitive else encode_alone)(units, plans, tok)
    lengths = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(ids_lists))
    total = int(lengths.sum())
    all_ids = np.fromiter(chain.from_iterable(ids_lists), dtype=np.int32, count=total)
    flags = np.fromiter((p.trained for plan in plans for p in plan), dtype=bool, count=len(ids_lists))
    labels = np.where(np.repeat(flags, lengths), all_ids, np.int32(IGNORE_INDEX)).astype(np.int32, copy=False)
    tok_offsets = np.zeros(len(ids_lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=tok_offsets[1:])
    out = []
    first = 0
    for r, plan in zip(units, plans):
        starts = tok_offsets[first : first + len(plan) + 1]
        a, b = int(starts[0]), int(starts[-1])
        out.append(Encoded(r, plan, all_ids[a:b], labels[a:b], starts - a))
        first += len(plan)
    return out
