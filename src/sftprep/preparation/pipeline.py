"""The per-batch pipeline: records -> normalize -> system prompt -> render -> encode -> labels -> truncate.

Records are processed in batches: one Rust encode call per batch (see run.py for the whole run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np

from sftprep.labels.boundary_check import absorb_rstrip, check_boundaries
from sftprep.labels.build_loss_labels import (
    Encoded,
    EncodeJob,
    Encodings,
    encode_and_label,
    label_pieces,
    plan_encoding,
    run_encoding,
)
from sftprep.labels.truncation import drop_oldest_exchange, only_turn, truncate_right
from sftprep.preparation.options import PrepareOptions
from sftprep.preparation.stats import FILTER_REASONS, Stats
from sftprep.read.normalize_conversations import normalize_conversations
from sftprep.read.system_prompt import maybe_add_system_prompt
from sftprep.templates.base import ChatTemplate
from sftprep.templates.loader import load_template, renders_instead
from sftprep.templates.render_chat_prompt import render_chat_prompt, split_turns
from sftprep.tokenize.special_text import masked_conversation, needs_marking, placeholder_spans, widen_to_words
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import IGNORE_INDEX, Conversation, RawRecord, Reject, RenderedConversation


@dataclass
class Prepared:
    """One record's outcome: its examples, or the reason it has none."""

    raw: RawRecord
    conv: Conversation | None = None
    units: list[RenderedConversation] = field(default_factory=list)
    reject: Reject | None = None
    encoded: list[Encoded] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)  # fixes verified for a too_long record


@dataclass
class PendingBatch:
    """A rendered batch waiting for its encodings."""

    prepared: list[Prepared]
    owners: list[tuple[Prepared, RenderedConversation]]
    job: EncodeJob


@dataclass
class BatchResult:
    """One batch's output, in record order."""

    stats: Stats
    examples: list[tuple[str, int, int, np.ndarray, np.ndarray]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # per example, the template variables beyond the defaults it was rendered with (a JSON object)
    example_vars: list[str] = field(default_factory=list)
    # the rejects' rejects.jsonl lines where a worker process made them (`rejects` then quote no record)
    reject_lines: list[bytes] = field(default_factory=list)


class Preparer:
    """Holds the loaded tokenizer/template and turns batches of records into examples."""

    def __init__(self, opts: PrepareOptions, tok: BPETokenizer, template: ChatTemplate) -> None:
        self.opts = opts
        self.tok = tok
        self.template = template
        self.ropts = opts.render_options(tok)
        self.columns = opts.column_map()
        self.rstrip_tokens = tuple(t.content for t in tok.facts.added if t.rstrip)
        _ = tok.fast, tok.literal_cache  # built once here, before any worker process forks
        self.stats = Stats()

    # -- per record ------------------------------------------------------------------------------
    def conversation(self, raw: RawRecord) -> Conversation | Reject:
        """The record as this run reads it: columns mapped, normalized, the system prompt applied."""
        o = self.opts
        conv = normalize_conversations(
            raw, o.format, o.role_map, o.merge_consecutive, o.require_user_turn, self.columns
        )
        if isinstance(conv, Reject):
            return conv
        return maybe_add_system_prompt(conv, o.system_prompt, o.system_policy)

    def render_record(self, raw: RawRecord) -> Prepared:
        conv = self.conversation(raw)
        if isinstance(conv, Reject):
            return Prepared(raw, reject=conv)
        return self._render(Prepared(raw, conv=conv))

    def _render(self, p: Prepared) -> Prepared:
        assert p.conv is not None
        units = render_chat_prompt(p.conv, self.template, self.ropts, self.opts.mask)
        if isinstance(units, Reject):
            if "(HINT)" in units.message:  # a built-in that cannot render tools: name one verified to
                fix = renders_instead(p.conv, self.tok.added_tokens, self.ropts)
                units = replace(units, message=units.message.replace("a template that renders them (HINT)", fix))
            p.reject, p.units = units, []
            return p
        for u in units:
            problem = _check_text(u, self.opts)
            if problem is not None:
                p.reject, p.units = problem, []
                return p
        problem = self._mark_special(p.conv, units)
        if problem is not None:
            p.reject, p.units = problem, []
            return p
        for u in units:
            absorb_rstrip(u, self.rstrip_tokens)
        p.units = units
        return p

    def _mark_special(self, conv: Conversation, units: list[RenderedConversation]) -> Reject | None:
        """Record where user/system/tool text spells an added token (encoded as plain text later).
        Assistant text keeps the tokenizer's own encoding: special tokens there are what the model emits."""
        pattern = self.tok.special_pattern
        if pattern is None or not needs_marking(conv, self.tok.find_special):
            return None
        masked = render_chat_prompt(masked_conversation(conv, pattern), self.template, self.ropts, self.opts.mask)
        ok = not isinstance(masked, Reject) and len(masked) == len(units)
        spans = [placeholder_spans(u, m) for u, m in zip(units, masked)] if ok else [None]
        if any(s is None for s in spans):
            return Reject(
                conv.source_file,
                conv.source_line,
                "special_token_in_content",
                f"{conv.source_file}:{conv.source_line}: a message spells a special token and the "
                "template's render of it could not be located, so it cannot be encoded as plain text",
            )
        for u, found in zip(units, spans):
            u.special_in_content = found or []
            if self.tok.start_sensitive and found:
                u.special_in_content = widen_to_words(u.text, found, self.tok.find_added(u.text))
        return None

    # -- per batch -------------------------------------------------------------------------------
    # A batch is `start`ed (Python: normalize, render, cut into pieces), encoded (`run_encoding`: the
    # Rust call, which releases the GIL: run.py overlaps it with the next batch's `start`), then
    # `complete`d (Python: labels, boundary checks, truncation, counts).
    def start(self, raws: list[RawRecord]) -> PendingBatch:
        prepared = [self.render_record(raw) for raw in raws]
        owners = [(p, u) for p in prepared for u in p.units]
        job = plan_encoding([u for _, u in owners], self.tok, self.opts.mask == "none")
        return PendingBatch(prepared, owners, job)

    def encode(self, pending: PendingBatch) -> Encodings:
        return run_encoding(pending.job, self.tok)

    def complete(self, pending: PendingBatch, encodings: Encodings) -> BatchResult:
        """A started batch and its encodings -> its examples, rejects and counts (what a worker sends back)."""
        self.stats = Stats()
        result = BatchResult(stats=self.stats)
        for p in self._finish_batch(pending, label_pieces(pending.job, encodings, self.tok.literal_cache)):
            source = p.raw.source_file
            self.stats.read(source)
            if p.reject is not None:
                result.rejects.append(p.reject)
                self.stats.rejected(source, p.reject.reason)
                continue
            self.stats.count_record(source, p.conv, p.units)
            for u in p.units:
                for r in u.dropped_turns:
                    result.rejects.append(replace(r, record=p.raw.data, raw_text=p.raw.raw_text))
                    self.stats.turn_rejected(r.reason)
            for e in p.encoded:
                result.examples.append((source, p.raw.line, e.rendered.turn, e.input_ids, e.labels))
                tv = e.rendered.template_vars
                result.example_vars.append(json.dumps(tv, sort_keys=True, ensure_ascii=False) if tv else "{}")
                self.stats.example(source, e)
        return result

    def run_batch(self, raws: list[RawRecord]) -> BatchResult:
        pending = self.start(raws)
        return self.complete(pending, self.encode(pending))

    def process(self, raws: list[RawRecord]) -> list[Prepared]:
        pending = self.start(raws)
        return self._finish_batch(pending, label_pieces(pending.job, self.encode(pending), self.tok.literal_cache))

    def _finish_batch(self, pending: PendingBatch, encoded: list[Encoded]) -> list[Prepared]:
        self._attach(pending.prepared, pending.owners, encoded)
        for p in pending.prepared:
            if p.reject is None:
                self._finish(p)
        return pending.prepared

    def _encode(self, prepared: list[Prepared]) -> None:
        owners = [(p, u) for p in prepared for u in p.units]
        self._attach(prepared, owners, encode_and_label([u for _, u in owners], self.tok, self.opts.mask == "none"))

    def _attach(self, prepared: list[Prepared], owners: list[tuple[Prepared, RenderedConversation]],
                encoded: list[Encoded]) -> None:  # fmt: skip
        """Give each record its examples; conversations whose cuts merge in a joint encoding are re-split."""
        ok, merges = check_boundaries(encoded, self.tok)
        self.stats.boundary_merges += merges
        resplit = [(p, u) for (p, u), good in zip(owners, ok) if not good]
        if resplit:
            self.stats.split_for_tokenization += len({id(p) for p, _ in resplit})
            extra = [(p, s) for p, u in resplit for s in split_turns(u)]
            re_encoded = encode_and_label([s for _, s in extra], self.tok, self.opts.mask == "none")
        else:
            extra, re_encoded = [], []
        by_owner: dict[int, list[Encoded]] = {}
        bad = {id(u) for _, u in resplit}
        for (p, u), e in zip(owners, encoded):
            if id(u) not in bad:
                by_owner.setdefault(id(p), []).append(e)
        for (p, _), e in zip(extra, re_encoded):
            by_owner.setdefault(id(p), []).append(e)
        for p in prepared:
            p.encoded = by_owner.get(id(p), [])

    def _finish(self, p: Prepared) -> None:
        """Truncate, and drop examples without a trainable token."""
        kept: list[Encoded] = []
        reasons: list[str] = []
        for e in p.encoded:
            fitted, reason = self._fit(p, e)
            if not fitted:
                reasons.append(reason)
            kept += fitted
        p.encoded = kept
        if not kept:
            reason = reasons[0] if reasons else "no_trainable_tokens"
            p.reject = Reject(p.raw.source_file, p.raw.line, reason, _explain(reason, p, self.opts), record=p.raw.data)
        elif reasons:
            self.stats.dropped_examples.update(r for r in reasons if r)

    def _fit(self, p: Prepared, e: Encoded) -> tuple[list[Encoded], str]:
        max_len = self.opts.max_length
        kept = [e]
        if max_len is not None and len(e.input_ids) > max_len:
            if self.opts.truncation == "drop":
                self._verified_fixes(p, e, max_len)
                return [], "too_long"
            if self.opts.truncation == "history":
                shorter = self._drop_history(p, e)
                if shorter is None:
                    self._verified_fixes(p, e, max_len)
                    return [], "too_long"
                kept = shorter
            else:
                kept = [truncate_right(e, max_len)]
            kept = [x for x in kept if x.num_trainable]
            self.stats.truncated += len(kept)  # counted only for examples that are written
        kept = [x for x in kept if x.num_trainable]
        if not kept:
            return [], "no_trainable_tokens"
        return self._filter(kept)

    def _filter(self, kept: list[Encoded]) -> tuple[list[Encoded], str]:
        """--min/--max-trainable-tokens: examples outside the range are dropped (the first reason is kept)."""
        lo, hi = self.opts.min_trainable_tokens, self.opts.max_trainable_tokens
        reason = ""
        if lo is not None and any(x.num_trainable < lo for x in kept):
            kept, reason = [x for x in kept if x.num_trainable >= lo], FILTER_REASONS[0]
        if hi is not None and any(x.num_trainable > hi for x in kept):
            kept, reason = [x for x in kept if x.num_trainable <= hi], reason or FILTER_REASONS[1]
        return kept, reason

    def _verified_fixes(self, p: Prepared, e: Encoded, max_len: int) -> None:
        """The fixes for a too-long example that do give it trainable tokens: a larger --max-length, keeping
        its first tokens, dropping its oldest exchanges."""
        if not p.fixes:
            p.fixes.append(f"raise --max-length to at least {len(e.input_ids)}")
            if np.any(e.labels[:max_len] != IGNORE_INDEX):
                p.fixes.append("use --truncation right (keeps the first tokens)")
            counts = (self.stats.boundary_merges, self.stats.split_for_tokenization)  # a trial, not counted
            if self.opts.truncation != "history" and any(x.num_trainable for x in self._drop_history(p, e) or []):
                p.fixes.append("use --truncation history (drops the oldest exchanges)")
            self.stats.boundary_merges, self.stats.split_for_tokenization = counts

    def _drop_history(self, p: Prepared, e: Encoded) -> list[Encoded] | None:
        """Drop the oldest exchanges of `e`'s conversation until every example it renders to fits."""
        conv = e.rendered.conversation
        k = e.rendered.turn
        if k >= 0:  # an example of one turn: the conversation through that turn, only it trained
            found = only_turn(conv, k)
            if found is None:
                return None
            conv = found[0]
        max_len = self.opts.max_length or 0
        dropped_assistants = 0
        while True:
            shorter = drop_oldest_exchange(conv)
            if shorter is None:
                return None
            dropped_assistants += _assistants(conv) - _assistants(shorter[0])
            conv = shorter[0]
            q = self._render(Prepared(p.raw, conv=conv))
            if q.reject is not None:
                return None
            self._encode([q])
            if q.encoded and all(len(x.input_ids) <= max_len for x in q.encoded):
                for x in q.encoded:  # the turn column counts the source conversation's assistant turns
                    turn = x.rendered.turn
                    x.rendered.turn = k if k >= 0 else turn + dropped_assistants if turn >= 0 else -1
                return q.encoded


def _assistants(conv: Conversation) -> int:
    return sum(1 for m in conv.messages if m.role == "assistant")


def _check_text(r: RenderedConversation, opts: PrepareOptions) -> Reject | None:
    """Text the tokenizer cannot take, or so large that encoding it would exhaust memory."""
    c = r.conversation
    where = f"{c.source_file}:{c.source_line}"
    if len(r.text) > opts.max_chars:
        return Reject(
            c.source_file,
            c.source_line,
            "record_too_large",
            f"{where}: the rendered conversation has {len(r.text):,} characters, over --max-chars "
            f"{opts.max_chars:,}; fix: split the record, or raise --max-chars",
        )
    if not r.text.isascii():
        try:
            r.text.encode("utf-8")
        except UnicodeEncodeError as e:
            return Reject(
                c.source_file,
                c.source_line,
                "bad_encoding",
                f"{where}: the text holds {e.object[e.start : e.end]!r}, which is not valid Unicode "
                "(a lone surrogate, e.g. from a \\ud800 escape); fix: repair the record's text",
            )
    return None


def _explain(reason: str, p: Prepared, opts: PrepareOptions) -> str:
    where = f"{p.raw.source_file}:{p.raw.line}"
    if reason == "too_long":
        what = "even its last exchange is" if opts.truncation == "history" else "it is"
        return f"{where}: {what} longer than --max-length {opts.max_length} tokens; fix: " + ", or ".join(p.fixes)
    if reason in FILTER_REASONS:
        lo, hi = opts.min_trainable_tokens, opts.max_trainable_tokens
        bound = f"--min-trainable-tokens {lo}" if reason == FILTER_REASONS[0] else f"--max-trainable-tokens {hi}"
        return f"{where}: filtered out: no example of it is within {bound} (trained tokens per example)"
    return (
        f"{where}: no trainable token left (mask {opts.mask!r}, message weights, truncation); "
        "an example without trainable tokens is never emitted"
    )


def load_components(opts: PrepareOptions) -> tuple[BPETokenizer, ChatTemplate]:
    tok = BPETokenizer.load(opts.tokenizer)
    fallback = tok.default_template or "chatml"
    template = load_template(opts.template, tok.chat_template, tok.added_tokens, opts.template_name, fallback)
    return tok, template
