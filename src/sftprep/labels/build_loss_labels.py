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

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from tokenizers import Encoding

from sftprep.tokenize.literal_segments import ENCODE, LITERAL, LiteralCache, content_ranges, split_piece
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import IGNORE_INDEX, RenderedConversation, Span


class Piece(NamedTuple):  # a NamedTuple: several per record, built 3x faster than a frozen dataclass
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
    trainable: int = -1  # the number of trained tokens when known (-1: count them)

    @property
    def num_trainable(self) -> int:
        if self.trainable < 0:
            self.trainable = int(np.count_nonzero(self.labels != IGNORE_INDEX))
        return self.trainable

    @cached_property
    def piece_ids(self) -> list[np.ndarray]:
        s = self.piece_starts
        return [self.input_ids[s[k] : s[k + 1]] for k in range(len(self.pieces))]


def trained_intervals(r: RenderedConversation, mask_all: bool) -> list[Span]:
    if mask_all:
        return [Span(0, len(r.text))]
    return [Span(t.start, t.end) for t in r.turns if t.trained and t.end > t.start]


def plan_pieces(r: RenderedConversation, mask_all: bool = False) -> list[Piece]:
    """Cut the text at trained-region and plain-text (special string in content) boundaries."""
    if not r.special_in_content:
        fast = _plan_trained_only(r, mask_all)
        if fast is not None:
            return fast
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


def _plan_trained_only(r: RenderedConversation, mask_all: bool) -> list[Piece] | None:
    """The common case: only trained regions, in order and disjoint (None: take the general path)."""
    n = len(r.text)
    if mask_all:
        return [Piece(0, n, True)] if n else []
    pieces = []
    pos = 0
    for t in r.turns:
        if not t.trained or t.end <= t.start:
            continue
        if t.start < pos:
            return None
        if t.start > pos:
            pieces.append(Piece(pos, t.start, False))
        pieces.append(Piece(t.start, t.end, True))
        pos = t.end
    if pos < n:
        pieces.append(Piece(pos, n, False))
    return pieces


class Text(NamedTuple):
    """A piece (or part) HF encodes with the batch: `normal[k]`."""

    k: int


class PlainText(NamedTuple):
    """A plain piece (user text spelling an added token) HF encodes as text: `plain[k]`."""

    k: int


class Fast(NamedTuple):
    """While planning: a text tiktoken encodes with the batch (`fast_texts[k]`); resolved to its ids, or to a
    Text where tiktoken cannot give HF's ids."""

    k: int


Part = Text | Fast | np.ndarray  # ids known already: tiktoken's, or a cached template stretch
Recipe = Text | PlainText | Fast | np.ndarray | list[Part]


@dataclass
class EncodeJob:
    """A batch's pieces as the texts to encode (built in Python), kept apart from the Rust encode call so
    that the encode of one batch can run in a thread while the next batch is rendered."""

    units: list[RenderedConversation]
    plans: list[list[Piece]]
    normal: list[str]
    plain: list[str]
    cuts: list[int] | None = None  # in-context texts: where each piece starts in its text
    # per piece when template stretches were cut out (literal_segments) or tiktoken encodes here: what it is
    # made of (a Recipe), in order
    recipes: list[Recipe] | None = None
    new_literals: dict[str, int] = field(default_factory=dict)  # stretch text -> index in `normal`
    fast_texts: list[str] = field(default_factory=list)  # texts tiktoken encodes in one call


def plan_encoding(units: list[RenderedConversation], tok: BPETokenizer, mask_all: bool = False) -> EncodeJob:
    plans = [plan_pieces(r, mask_all) for r in units]
    return (_plan_in_context if tok.start_sensitive else _plan_alone)(units, plans, tok)


def _plan_alone(units: list[RenderedConversation], plans: list[list[Piece]], tok: BPETokenizer) -> EncodeJob:
    """Each piece encoded on its own (byte-level BPE: a piece's tokens do not depend on what precedes it):
    template stretches between added tokens looked up once encoded (literal_segments), other text left to
    tiktoken's batch call where it is exact (fast_bpe; made in run_encoding), the rest to HF's."""
    normal: list[str] = []
    plain: list[str] = []
    cache, fast = tok.literal_cache, tok.fast
    if cache is None and fast is None:
        for r, plan in zip(units, plans):
            text = r.text
            for p in plan:
                (plain if p.plain else normal).append(text[p.start : p.end])
        return EncodeJob(units, plans, normal, plain)
    job = EncodeJob(units, plans, normal, plain, recipes=[])
    recipes = job.recipes
    assert recipes is not None
    for r, plan in zip(units, plans):
        contents = content_ranges(r) if cache is not None else []
        for p in plan:
            recipes.append(_recipe(job, r.text, p, contents, cache, fast))
    return job


def _resolve_fast(job: EncodeJob, found: list[np.ndarray | None]) -> None:
    """Each Fast part: its ids, or (tiktoken cannot give HF's ids there) a text HF encodes with the batch."""

    def resolve(part: Any) -> Any:
        if not isinstance(part, Fast):
            return part
        ids = found[part.k]
        if ids is not None:
            return ids
        job.normal.append(job.fast_texts[part.k])
        return Text(len(job.normal) - 1)

    assert job.recipes is not None
    job.recipes = [[resolve(x) for x in r] if isinstance(r, list) else resolve(r) for r in job.recipes]


def _recipe(
    job: EncodeJob, text: str, p: Piece, contents: list[tuple[int, int]], cache: LiteralCache | None, fast: Any
) -> Recipe:
    """What piece `p` is made of: a text HF encodes, a plain text, its ids, or a list of such parts."""
    if p.plain:
        job.plain.append(text[p.start : p.end])
        return PlainText(len(job.plain) - 1)
    if cache is None:
        return _ids_or_index(job, text[p.start : p.end], fast)
    parts = split_piece(text, p.start, p.end, contents, cache.pattern)
    if len(parts) == 1 and parts[0][2] == ENCODE:
        return _ids_or_index(job, text[p.start : p.end], fast)
    return [
        _template_ids(job, text[a:b], cache, fast) if kind == LITERAL else _ids_or_index(job, text[a:b], fast)
        for a, b, kind in parts
    ]


def _template_ids(job: EncodeJob, text: str, cache: LiteralCache, fast: Any) -> Part:
    """Template text: its cached ids, else encoded once (by tiktoken now, or by HF with this batch)."""
    known = cache.ids.get(text)
    if known is None and fast is not None and (known := fast.encode(text)) is not None:
        cache.store(text, known)
    if known is not None:
        return known
    if text not in job.new_literals:
        job.new_literals[text] = len(job.normal)
        job.normal.append(text)
    return Text(job.new_literals[text])


def _ids_or_index(job: EncodeJob, text: str, fast: Any) -> Part:
    """`text` for tiktoken's batch (resolved after planning: a text it does not take goes to HF then; one test of
    the batch's joined text usually answers for all), else a text HF encodes with the batch."""
    if fast is not None:
        job.fast_texts.append(text)
        return Fast(len(job.fast_texts) - 1)
    job.normal.append(text)
    return Text(len(job.normal) - 1)


def _plan_in_context(units: list[RenderedConversation], plans: list[list[Piece]], tok: BPETokenizer) -> EncodeJob:
    """Each piece encoded with its left context back to the previous added token, keeping the tokens from
    the piece's start: what a joint encoding has there (SentencePiece-style tokenizers prepend a space at
    the start of the input but not after a special token)."""
    normal: list[str] = []
    plain: list[str] = []
    cuts: list[int] = []
    for r, plan in zip(units, plans):
        specials = [a for a, _ in tok.find_added(r.text)]
        for p in plan:
            ctx = max((a for a in specials if a < p.start), default=0)  # the joint encoding's left context
            (plain if p.plain else normal).append(r.text[ctx : p.end])
            cuts.append(p.start - ctx)
    return EncodeJob(units, plans, normal, plain, cuts)


Encodings = tuple[list[Encoding], list[Encoding]]


def run_encoding(job: EncodeJob, tok: BPETokenizer) -> Encodings:
    """The Rust calls (they release the GIL; run in a thread while the next batch is rendered): tiktoken's for
    the texts it takes (those it does not take join the normal texts), HF's for normal text and plain text."""
    if job.fast_texts:
        assert tok.fast is not None
        _resolve_fast(job, tok.fast.encode_many(job.fast_texts))
        job.fast_texts = []
    return tok.encode_batch(job.normal), tok.encode_plain_batch(job.plain)


def piece_ids(job: EncodeJob, encodings: Encodings, cache: LiteralCache | None = None) -> list[np.ndarray]:
    """Each piece's ids (int32 arrays), in order."""
    if job.recipes is not None:
        return _assemble(job, encodings, cache)
    enc_normal, enc_plain = iter(encodings[0]), iter(encodings[1])
    flags = [p.plain for plan in job.plans for p in plan]
    if job.cuts is None:
        return [_array(next(enc_plain if plain else enc_normal).ids) for plain in flags]
    out = []
    for plain, cut in zip(flags, job.cuts):
        enc = next(enc_plain if plain else enc_normal)
        out.append(_array([i for i, (a, _) in zip(enc.ids, enc.offsets) if a >= cut] if cut else enc.ids))
    return out


def _array(ids: list[int]) -> np.ndarray:
    return np.array(ids, dtype=np.int32)


def _assemble(job: EncodeJob, encodings: Encodings, cache: LiteralCache | None) -> list[np.ndarray]:
    normal = [_array(e.ids) for e in encodings[0]]
    if cache is not None:
        for text, k in job.new_literals.items():
            cache.store(text, normal[k])
    out: list[np.ndarray] = []
    for recipe in job.recipes or []:
        if isinstance(recipe, np.ndarray):
            out.append(recipe)
        elif isinstance(recipe, Text):
            out.append(normal[recipe.k])
        elif isinstance(recipe, PlainText):
            out.append(_array(encodings[1][recipe.k].ids))
        else:
            out.append(np.concatenate([normal[part.k] if isinstance(part, Text) else part for part in recipe]))
    return out


def encode_and_label(units: list[RenderedConversation], tok: BPETokenizer, mask_all: bool = False) -> list[Encoded]:
    job = plan_encoding(units, tok, mask_all)
    return label_pieces(job, run_encoding(job, tok), tok.literal_cache)


def label_pieces(job: EncodeJob, encodings: Encodings, cache: LiteralCache | None = None) -> list[Encoded]:
    """Labels for the whole batch at once: ids on trained pieces, IGNORE_INDEX elsewhere."""
    units, plans = job.units, job.plans
    ids_lists = piece_ids(job, encodings, cache)
    lengths = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(ids_lists))
    all_ids = np.concatenate(ids_lists) if ids_lists else np.zeros(0, dtype=np.int32)
    flags = np.fromiter((p.trained for plan in plans for p in plan), dtype=bool, count=len(ids_lists))
    labels = np.where(np.repeat(flags, lengths), all_ids, np.int32(IGNORE_INDEX)).astype(np.int32, copy=False)
    tok_offsets = np.zeros(len(ids_lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=tok_offsets[1:])
    trained_before = np.zeros(len(ids_lists) + 1, dtype=np.int64)
    np.cumsum(np.where(flags, lengths, 0), out=trained_before[1:])
    bounds = np.zeros(len(plans) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, plans), dtype=np.int64, count=len(plans)), out=bounds[1:])
    tok_bounds = tok_offsets[bounds].tolist()
    trained = (trained_before[bounds[1:]] - trained_before[bounds[:-1]]).tolist()
    out = []
    for k, (r, plan) in enumerate(zip(units, plans)):
        a, b = tok_bounds[k], tok_bounds[k + 1]
        starts = tok_offsets[bounds[k] : bounds[k + 1] + 1] - a
        out.append(Encoded(r, plan, all_ids[a:b], labels[a:b], starts, trained[k]))
    return out
