"""Counters of a run and the manifest that records them with every option and input hash."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from sftprep import __version__
from sftprep.templates.base import ChatTemplate, template_sha256
from sftprep.tokenizer import BPETokenizer

if TYPE_CHECKING:
    from sftprep.build_loss_labels import Encoded
    from sftprep.options import PrepareOptions
    from sftprep.pipeline import Prepared


@dataclass
class FileCounts:
    records_read: int = 0
    records_with_examples: int = 0
    records_rejected: int = 0
    examples: int = 0

    @property
    def reconciled(self) -> bool:
        return self.records_read == self.records_with_examples + self.records_rejected


@dataclass
class Stats:
    files: dict[str, FileCounts] = field(default_factory=dict)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    dropped_examples: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    trainable_tokens: int = 0
    truncated: int = 0
    boundary_merges: int = 0
    split_for_tokenization: int = 0
    split_conversations: int = 0
    special_tokens_in_content: int = 0
    generation_tag_disagreements: int = 0
    reasoning_not_rendered: int = 0  # assistant messages whose reasoning the template leaves out
    # trained turns: how each was made consistent (mode:*), how it ends (stop:*), what the template drops
    turns: Counter[str] = field(default_factory=Counter)
    turns_rejected_by_reason: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Stats) -> None:
        """Add another batch's counts (batches may come from worker processes): every field, so a new
        counter is never lost."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "files":
                for name, counts in theirs.items():
                    target = self._file(name)
                    for key, value in counts.__dict__.items():
                        setattr(target, key, getattr(target, key) + value)
            elif isinstance(mine, Counter):
                mine.update(theirs)
            else:
                setattr(self, f.name, mine + theirs)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "files"}
        d["files"] = {name: f.__dict__ for name, f in self.files.items()}
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stats:
        counters = [f.name for f in fields(cls) if f.name != "files" and f.type in ("Counter[str]",)]
        stats = cls(**{k: v for k, v in d.items() if k not in ("files", *counters)})
        stats.files = {name: FileCounts(**f) for name, f in d["files"].items()}
        for name in counters:
            setattr(stats, name, Counter(d.get(name, {})))
        return stats

    def touch(self, name: str) -> None:
        self._file(name)

    def _file(self, name: str) -> FileCounts:
        return self.files.setdefault(name, FileCounts())

    def read(self, name: str) -> None:
        self._file(name).records_read += 1

    def turn_rejected(self, reason: str) -> None:
        self.turns_rejected_by_reason[reason] += 1

    def rejected(self, name: str, reason: str) -> None:
        self._file(name).records_rejected += 1
        self.rejected_by_reason[reason] += 1

    def count_record(self, p: Prepared) -> None:
        self._file(p.raw.source_file).records_with_examples += 1
        if any(u.turn >= 0 for u in p.units) and len(p.units) > 1:
            self.split_conversations += 1
        self.special_tokens_in_content += max((len(u.special_in_content) for u in p.units), default=0)
        self.generation_tag_disagreements += sum(u.tag_disagreements for u in p.units)
        self.reasoning_not_rendered += reasoning_not_rendered(p)
        for u in p.units:
            self.turns.update(u.counts)

    def example(self, name: str, e: Encoded) -> None:
        self._file(name).examples += 1
        self.tokens += len(e.input_ids)
        self.trainable_tokens += e.num_trainable

    @property
    def records_read(self) -> int:
        return sum(f.records_read for f in self.files.values())

    @property
    def examples(self) -> int:
        return sum(f.examples for f in self.files.values())

    @property
    def records_rejected(self) -> int:
        return sum(f.records_rejected for f in self.files.values())


def reasoning_not_rendered(p: Prepared) -> int:
    """Assistant messages with reasoning that appears in none of the record's rendered texts (the template
    drops it: Qwen2.5, Llama 3 and Phi-3 do; it is then neither context nor trained)."""
    if p.conv is None:
        return 0
    texts = [u.text for u in p.units]
    return sum(
        1
        for m in p.conv.messages
        if m.reasoning and m.reasoning.strip() and not any(m.reasoning.strip() in t for t in texts)
    )


def _template_record(opts: PrepareOptions, tok: BPETokenizer, template: ChatTemplate) -> dict[str, Any]:
    from sftprep.templates.base import RenderOptions

    ropts = RenderOptions(
        bos_token=tok.bos_token or "",
        eos_token=tok.eos_token or "",
        template_vars=opts.template_vars,
        special_tokens_map=tok.special_tokens_map,
    )
    marker = template.end_of_turn(ropts)
    return {
        "name": template.name,
        "sha256": template_sha256(template),
        "end_of_turn": marker,
        "end_of_turn_is_token": marker is None or tok.token_to_id(marker) is not None,
        # no marker in the template: the tokenizer's eos is appended to each trained turn
        "eos_appended": marker is None and opts.train_on_eos and bool(tok.eos_token),
        "text": template.source_text,
    }


def build_manifest(
    opts: PrepareOptions,
    tok: BPETokenizer,
    template: ChatTemplate,
    stats: Stats,
    shards: list[str],
    cache_key: str = "",
) -> dict[str, Any]:
    unreconciled = [name for name, f in stats.files.items() if not f.reconciled]
    if unreconciled:  # a bug, never bad input: fail loudly
        raise AssertionError(f"records do not reconcile for {unreconciled}: {stats.files}")
    return {
        "sftprep_version": __version__,
        "cache_key": cache_key,
        "records_read": stats.records_read,
        "examples_written": stats.examples,
        "records_rejected": stats.records_rejected,
        "rejected_by_reason": dict(sorted(stats.rejected_by_reason.items())),
        "examples_dropped_by_reason": dict(sorted(stats.dropped_examples.items())),
        "tokens": stats.tokens,
        "trainable_tokens": stats.trainable_tokens,
        "truncated": stats.truncated,
        "straddling_tokens": stats.boundary_merges,
        "split_for_tokenization": stats.split_for_tokenization,
        "split_conversations": stats.split_conversations,
        "special_tokens_in_content": stats.special_tokens_in_content,
        "generation_tag_disagreements": stats.generation_tag_disagreements,
        "reasoning_not_rendered": stats.reasoning_not_rendered,
        "turns": dict(sorted(stats.turns.items())),
        "turns_rejected_by_reason": dict(sorted(stats.turns_rejected_by_reason.items())),
        "per_file": {name: {**f.__dict__, "reconciled": f.reconciled} for name, f in sorted(stats.files.items())},
        "shards": shards,
        "tokenizer": {
            "path": tok.path,
            "loader": tok.loader,
            "tiktoken_for_ascii": tok.fast is not None,  # exact stand-in for HF on ASCII text (fast_bpe.py)
            "sha256": tok.sha256,
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
            "pad_token": tok.pad_token,
            "pad_id": tok.pad_id,
            "vocab_size": tok.vocab_size,
        },
        "template": _template_record(opts, tok, template),
        "options": opts.recorded(),
    }
