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
    """One example's ids and labels, with the pieces they came from."""

    rendered: RenderedConversation
    pieces: list[Piece]
    piece_ids: list[np.ndarray]
    input_ids: np.ndarray
    labels: np.ndarray

    @property
    def num_trainable(self) -> int:
        return int(np.count_nonzero(self.labels != IGNORE_INDEX))

    def piece_token_starts(self) -> np.ndarray:
        lengths = np.fromiter((len(p) for p in self.piece_ids), dtype=np.int64, count=len(self.piece_ids))
        return np.concatenate(([0], np.cumsum(lengths)))


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


def encode_pieces(
    units: list[RenderedConversation], plans: list[list[Piece]], tok: BPETokenizer
) -> list[list[np.ndarray]]:
    """Encode every piece of every unit: one Rust batch call for normal text, one for plain text."""
    normal: list[str] = []
    plain: list[str] = []
    for r, plan in zip(units, plans):
        for p in plan:
            (plain if p.plain else normal).append(r.text[p.start : p.end])
    enc_normal = iter(tok.encode_batch(normal))
    enc_plain = iter(tok.encode_plain_batch(plain))
    out = []
    for plan in plans:
        out.append([np.asarray(next(enc_plain if p.plain else enc_normal).ids, dtype=np.int32) for p in plan])
    return out


def build_loss_labels(r: RenderedConversation, pieces: list[Piece], piece_ids: list[np.ndarray]) -> Encoded:
    """Concatenate piece ids; labels = ids on trained pieces, IGNORE_INDEX elsewhere (vectorised)."""
    if piece_ids:
        ids = np.concatenate(piece_ids)
        lengths = np.fromiter((len(x) for x in piece_ids), dtype=np.int64, count=len(piece_ids))
        flags = np.fromiter((p.trained for p in pieces), dtype=bool, count=len(pieces))
        trained = np.repeat(flags, lengths)
        labels = np.where(trained, ids, np.int32(IGNORE_INDEX)).astype(np.int32)
    else:
        ids = np.zeros(0, dtype=np.int32)
        labels = ids.copy()
    return Encoded(r, pieces, piece_ids, ids, labels)


def encode_and_label(units: list[RenderedConversation], tok: BPETokenizer, mask_all: bool = False) -> list[Encoded]:
    plans = [plan_pieces(r, mask_all) for r in units]
    all_ids = encode_pieces(units, plans, tok)
    return [build_loss_labels(r, plan, ids) for r, plan, ids in zip(units, plans, all_ids)]
