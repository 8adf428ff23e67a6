"""Dataset health: statistics streamed from the Parquet shards, checked against the manifest and rejects.

Shards are read batch by batch (pyarrow `iter_batches`), keeping only a length histogram (one counter per
length) and a fine trainable-fraction histogram, so memory does not grow with the number of examples.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sftprep.preparation.manifest import Manifest, read_manifest
from sftprep.report.template_info import TemplateInfo, template_info
from sftprep.types import IGNORE_INDEX

if TYPE_CHECKING:
    from sftprep.tokenize.tokenizer import BPETokenizer

FRACTION_RESOLUTION = 1000  # trainable fraction kept in 0.1% bins
BATCH_ROWS = 4096
PLOT_BINS = 30


@dataclass
class Histogram:
    title: str
    xlabel: str
    edges: list[float]
    counts: list[int]


@dataclass
class Check:
    name: str
    ok: bool | None  # None: informational, neither pass nor fail
    detail: str


@dataclass
class ShardStats:
    """Running totals over every example of the Parquet shards."""

    examples: int = 0
    tokens: int = 0
    trainable: int = 0
    per_turn_examples: int = 0
    zero_trainable: int = 0
    misaligned: int = 0
    label_not_input: int = 0
    length_counts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    fraction_counts: np.ndarray = field(default_factory=lambda: np.zeros(FRACTION_RESOLUTION, dtype=np.int64))

    def add_batch(self, batch: pa.RecordBatch) -> None:
        ids, labels = batch.column("input_ids"), batch.column("labels")
        n_ids = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        n_lab = pc.list_value_length(labels).to_numpy(zero_copy_only=False).astype(np.int64)
        flat_ids = ids.flatten().to_numpy(zero_copy_only=False)
        flat_lab = labels.flatten().to_numpy(zero_copy_only=False)
        trained = flat_lab != IGNORE_INDEX
        ends = np.cumsum(n_lab)
        cum = np.concatenate([[0], np.cumsum(trained, dtype=np.int64)])
        per_row = cum[ends] - cum[ends - n_lab]
        self.examples += len(n_ids)
        self.tokens += int(n_ids.sum())
        self.trainable += int(per_row.sum())
        self.per_turn_examples += int((batch.column("turn").to_numpy(zero_copy_only=False) >= 0).sum())
        self.zero_trainable += int((per_row == 0).sum())
        self.misaligned += int((n_ids != n_lab).sum())
        if len(flat_ids) == len(flat_lab):
            self.label_not_input += int((trained & (flat_lab != flat_ids)).sum())
        self._add_lengths(n_ids)
        fraction = per_row / np.maximum(n_ids, 1)
        bins = np.minimum((fraction * FRACTION_RESOLUTION).astype(np.int64), FRACTION_RESOLUTION - 1)
        self.fraction_counts += np.bincount(bins, minlength=FRACTION_RESOLUTION)

    def _add_lengths(self, lengths: np.ndarray) -> None:
        counts = np.bincount(lengths)
        if len(counts) > len(self.length_counts):
            counts[: len(self.length_counts)] += self.length_counts
            self.length_counts = counts
        else:
            self.length_counts[: len(counts)] += counts

    def length_percentile(self, q: float) -> int:
        if self.examples == 0:
            return 0
        cum = np.cumsum(self.length_counts)
        return int(np.searchsorted(cum, q * self.examples))

    @property
    def min_length(self) -> int:
        nz = np.nonzero(self.length_counts)[0]
        return int(nz[0]) if len(nz) else 0

    @property
    def max_length(self) -> int:
        nz = np.nonzero(self.length_counts)[0]
        return int(nz[-1]) if len(nz) else 0


def stream_shards(out_dir: Path, shards: list[str]) -> ShardStats:
    stats = ShardStats()
    for name in shards:
        pf = pq.ParquetFile(out_dir / name)
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["input_ids", "labels", "turn"]):
            stats.add_batch(batch)
    return stats


def count_rejects(path: Path) -> tuple[Counter[str], Counter[str]]:
    """Reasons in rejects.jsonl, read line by line: (rejected records, dropped turns: lines with a `turn`)."""
    records: Counter[str] = Counter()
    turns: Counter[str] = Counter()
    if not path.is_file():
        return records, turns
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                (turns if row.get("turn") is not None else records)[str(row.get("reason", "?"))] += 1
            except (ValueError, AttributeError):
                records["(unreadable line)"] += 1
    return records, turns


@dataclass
class Health:
    out_dir: Path
    manifest: Manifest
    shards: ShardStats
    rejects: Counter[str]
    dropped_turns: Counter[str]
    template: TemplateInfo

    def counts(self) -> list[tuple[str, str]]:
        m = self.manifest
        tokens, trainable = m.tokens, m.trainable_tokens
        pct = f" ({100 * trainable / tokens:.1f}%)" if tokens else ""
        return [
            ("records read", str(m.records_read)),
            ("examples written", str(m.examples_written)),
            ("records rejected", str(m.records_rejected)),
            ("tokens", str(tokens)),
            ("trainable tokens", f"{trainable}{pct}"),
            ("truncated", str(m.truncated)),
            ("per-turn examples (split turns)", str(self.shards.per_turn_examples)),
            ("straddling tokens (joint encoding would differ)", str(m.straddling_tokens)),
            ("special-token strings in user text (encoded as text)", str(m.special_tokens_in_content)),
            ("generation-tag disagreements", str(m.generation_tag_disagreements)),
        ]

    def rejected_rows(self) -> list[tuple[str, int, int]]:
        """(reason, count in manifest, count in rejects.jsonl) for every reason seen in either."""
        recorded = self.manifest.rejected_by_reason
        reasons = sorted(set(recorded) | set(self.rejects))
        return [(r, int(recorded.get(r, 0)), self.rejects.get(r, 0)) for r in reasons]

    def dropped_rows(self) -> list[tuple[str, int, int | None]]:
        """(reason, examples dropped per the manifest, turn lines in rejects.jsonl or None if it lists none)."""
        recorded = self.manifest.examples_dropped_by_reason
        listed = sum(self.dropped_turns.values()) > 0
        reasons = sorted(set(recorded) | set(self.dropped_turns))
        return [(r, int(recorded.get(r, 0)), self.dropped_turns.get(r, 0) if listed else None) for r in reasons]

    SOURCE_HEADER = (
        "source", "sampling", "records read", "rejected", "duplicates", "examples prepared", "eval examples",
        "examples written", "tokens", "trainable tokens", "requested", "realised",
    )  # fmt: skip

    def show_sources(self) -> bool:
        """Per-source rows are worth showing: several sources, sampling or an eval split."""
        m = self.manifest
        return len(m.sources) > 1 or m.eval is not None or any(s.sampling for s in m.sources)

    def source_rows(self) -> list[tuple[str, ...]]:
        """One row per source (SOURCE_HEADER): what was read, rejected, prepared, held out and written."""
        rows = []
        for s in self.manifest.sources:
            sampling = ", ".join(f"{k} {v:g}" for k, v in (s.sampling or {}).items()) or "all, once"
            rows.append((s.name, sampling, str(s.records_read), str(s.records_rejected), str(s.duplicates),
                         str(s.examples_prepared), str(s.eval_examples), str(s.examples), str(s.tokens),
                         str(s.trainable_tokens), f"{100 * s.requested_ratio:.2f}%",
                         f"{100 * s.realised_ratio:.2f}%"))  # fmt: skip
        return rows

    def mixture_check(self) -> list[Check]:
        """With sampling: each source's realised share of the examples within 1 point of the requested one."""
        m = self.manifest
        if not any(s.sampling for s in m.sources):
            return []
        off = [f"{s.name} {s.realised_ratio:.2%} (asked {s.requested_ratio:.2%})" for s in m.sources
               if abs(s.realised_ratio - s.requested_ratio) > 0.01]  # fmt: skip
        shares = ", ".join(f"{s.name} {s.realised_ratio:.2%}" for s in m.sources)
        return [Check("mixture as requested (each share within 1 point)", not off, ", ".join(off) or shares)]

    def length_summary(self) -> list[tuple[str, str]]:
        s = self.shards
        mean = s.tokens / s.examples if s.examples else 0.0
        frac = s.trainable / s.tokens if s.tokens else 0.0
        row = [
            ("length min / p50 / p90 / p99 / max",
             f"{s.min_length} / {s.length_percentile(0.5)} / {s.length_percentile(0.9)} / "
             f"{s.length_percentile(0.99)} / {s.max_length}"),
            ("mean length", f"{mean:.1f}"),
            ("trainable fraction (all tokens)", f"{100 * frac:.1f}%"),
        ]  # fmt: skip
        max_len = self.manifest.options.get("max_length")
        if max_len:
            at_max = int(s.length_counts[max_len]) if max_len < len(s.length_counts) else 0
            row.append((f"examples at --max-length {max_len}", str(at_max)))
        return row

    def checks(self) -> list[Check]:
        m, s = self.manifest, self.shards
        mismatched = [r for r, a, b in self.rejected_rows() if a != b]
        mismatched += [f"{r} (dropped turns)" for r, a, b in self.dropped_rows() if b is not None and a != b]
        unreconciled = [f for f, c in m.per_file.items() if not c.get("reconciled", True)]
        return [
            Check("at least one example written", s.examples > 0, f"{s.examples} examples"),
            _eq("examples in Parquet = manifest examples_written", s.examples, m.examples_written),
            _eq("tokens in Parquet = manifest tokens", s.tokens, m.tokens),
            _eq("trainable tokens in Parquet = manifest", s.trainable, m.trainable_tokens),
            Check("labels aligned with input_ids", s.misaligned == 0, f"{s.misaligned} example(s) misaligned"),
            Check("labels are -100 or the input id", s.label_not_input == 0, f"{s.label_not_input} token(s) differ"),
            Check("every example has a trainable token", s.zero_trainable == 0, f"{s.zero_trainable} without"),
            Check(
                "rejects.jsonl = manifest rejected_by_reason",
                not mismatched,
                "mismatch: " + ", ".join(mismatched) if mismatched else f"{sum(self.rejects.values())} rejected",
            ),
            Check("every input file reconciles", not unreconciled, ", ".join(unreconciled) or "read = kept + rejected"),
            *self.mixture_check(),
            *template_checks(self.template),
        ]

    def length_histogram(self, bins: int = PLOT_BINS) -> Histogram:
        """Integer-edged bins [a, b) of token counts, at most `bins` of them."""
        s = self.shards
        lo, hi = s.min_length, max(s.max_length, s.min_length)
        step = max(1, -(-(hi + 1 - lo) // bins))
        edges = np.arange(lo, hi + 1 + step, step)
        counts, _ = np.histogram(np.arange(len(s.length_counts)), bins=edges, weights=s.length_counts)
        return Histogram("Sequence length", "tokens per example", edges.tolist(), counts.astype(int).tolist())

    def fraction_histogram(self, bins: int = 20) -> Histogram:
        counts = self.shards.fraction_counts.reshape(bins, -1).sum(axis=1)
        edges = np.linspace(0.0, 1.0, bins + 1)
        return Histogram("Trainable fraction", "trained tokens / tokens", edges.tolist(), counts.astype(int).tolist())


def template_checks(t: TemplateInfo) -> list[Check]:
    marker = "unknown" if t.end_of_turn is None else repr(t.end_of_turn)
    checks = [
        Check("end-of-turn marker", t.end_of_turn is not None or None, f"{marker}; tokenizer eos {t.eos_token!r}"),
        Check("prefix-preserving (no per-turn split)", t.prefix_preserving or None, t.prefix_detail()),
        Check(
            "generation tags agree with the computed turns",
            t.generation_tag_disagreements == 0,
            f"{t.generation_tag_disagreements} disagreement(s)",
        ),
    ]
    if t.marker_is_one_token is not None:
        checks.append(Check("end-of-turn marker is one token", t.marker_is_one_token, marker))
    if t.tokenizer_sha_matches is not None:
        same = "matches the manifest" if t.tokenizer_sha_matches else "differs: the tokenizer changed since prepare"
        checks.append(Check("tokenizer unchanged since prepare (sha256)", t.tokenizer_sha_matches, same))
    return checks


def _eq(name: str, got: int, want: int) -> Check:
    return Check(name, got == want, f"{got} vs {want}")


def compute_health(out_dir: Path, tok: BPETokenizer | None = None) -> Health:
    """Health of OUT_DIR; `tok` (the recorded tokenizer, when the caller already loaded it) saves a reload."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    records, turns = count_rejects(out_dir / "rejects.jsonl")
    return Health(
        out_dir=out_dir,
        manifest=manifest,
        shards=stream_shards(out_dir, manifest.shards),
        rejects=records,
        dropped_turns=turns,
        template=template_info(manifest, tok),
    )
