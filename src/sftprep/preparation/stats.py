"""The counters of a run: per input file (reconciled: read = with examples + rejected), by reason, and per
trained turn. Batches count on their own (in worker processes) and are merged."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from sftprep.types import Conversation, RenderedConversation

if TYPE_CHECKING:
    from sftprep.labels.build_loss_labels import Encoded

# Reasons an example is dropped by the trainable-token filters (--min/--max-trainable-tokens).
FILTER_REASONS = ("too_few_trainable_tokens", "too_many_trainable_tokens")


@dataclass
class FileCounts:
    records_read: int = 0
    records_with_examples: int = 0
    records_rejected: int = 0
    examples: int = 0
    tokens: int = 0
    trainable_tokens: int = 0
    duplicates: int = 0  # of records_rejected: the same conversation as an earlier record (--dedup)
    filtered: int = 0  # of records_rejected: no example within --min/--max-trainable-tokens

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
        stats.files = {name: FileCounts(**f) for name, f in d["files"].items()}  # (older progress: no tokens)
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
        f = self._file(name)
        f.records_rejected += 1
        f.duplicates += reason == "duplicate"
        f.filtered += reason in FILTER_REASONS
        self.rejected_by_reason[reason] += 1

    def count_record(self, source: str, conv: Conversation | None, units: list[RenderedConversation]) -> None:
        self._file(source).records_with_examples += 1
        if any(u.turn >= 0 for u in units) and len(units) > 1:
            self.split_conversations += 1
        self.special_tokens_in_content += max((len(u.special_in_content) for u in units), default=0)
        self.generation_tag_disagreements += sum(u.tag_disagreements for u in units)
        self.reasoning_not_rendered += reasoning_not_rendered(conv, units)
        for u in units:
            if u.counts:
                self.turns.update(u.counts)

    def example(self, name: str, e: Encoded) -> None:
        f = self._file(name)
        f.examples += 1
        f.tokens += len(e.input_ids)
        f.trainable_tokens += e.num_trainable
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


def reasoning_not_rendered(conv: Conversation | None, units: list[RenderedConversation]) -> int:
    """Assistant messages with reasoning that appears in none of the record's rendered texts (the template
    drops it: Qwen2.5, Llama 3 and Phi-3 do; it is then neither context nor trained)."""
    if conv is None:
        return 0
    texts = [u.text for u in units]
    return sum(
        1
        for m in conv.messages
        if m.reasoning and m.reasoning.strip() and not any(m.reasoning.strip() in t for t in texts)
    )
