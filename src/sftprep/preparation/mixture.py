"""Sampling and the eval split: from every prepared example (the staging `parts/`), the training mixture in
OUT_DIR and the held-out records in OUT_DIR/eval. Runs after every record was prepared, so the mixture is
exact in examples: weights 3:1 give 3 examples of the first source for 1 of the second (up to rounding).

- Eval: `eval_sources` whole, or `eval_fraction` of each other source's records (whole records: a record's
  examples never straddle the split), chosen by the seed.
- Per source, from its examples not held out (A): none -> A (each once); `epochs` e -> round(e * A);
  `examples` n -> n; `weight` w -> round(s * w), s the largest scale at which no weighted source repeats an
  example (`mixture_examples` N: s = N / sum of weights). A target above A takes every example q = T // A
  times and T % A of them once more, chosen by the seed; below A, a seeded subset.
- Order: the sources interleaved by position (the k-th example of a source of T goes at (k + 1/2) / T), each
  source's examples in record order, each further pass after the first: every prefix of the output holds the
  mixture's ratio. Seeds derive from `seed` and the source's name (adding a source changes no other's draw).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sftprep.preparation.manifest import EvalRecord, Manifest, SourceRecord
from sftprep.preparation.output import ShardWriter
from sftprep.preparation.sourcing import RunSource
from sftprep.preparation.stats import Stats
from sftprep.types import IGNORE_INDEX

Row = tuple[np.ndarray, np.ndarray, str, int, int, str]  # ids, labels, source_file, line, turn, template_vars
EVAL_DIR = "eval"


@dataclass
class SourceDraw:
    """What the mixture took from one source."""

    name: str
    records: int = 0  # records with examples
    examples: int = 0  # prepared examples
    eval_records: int = 0
    eval_examples: int = 0
    eval_tokens: int = 0
    eval_trainable: int = 0
    available: int = 0  # examples not held out
    target: float = 0.0  # the examples the spec asks for (before rounding)
    written: int = 0  # examples written to OUT_DIR (repeats counted)
    tokens: int = 0
    trainable: int = 0
    records_written: int = 0  # records with at least one example in OUT_DIR
    start: int = 0  # the source's rows in parts/: [start, end)
    end: int = 0
    record_sizes: list[int] = field(default_factory=list, repr=False)


@dataclass
class MixResult:
    draws: list[SourceDraw]
    shards: list[str]
    eval_shards: list[str]


def mix(parts: Path, part_shards: list[str], out: Path, sources: list[RunSource], seed: int,
        eval_fraction: float | None, eval_sources: list[str], mixture_examples: int | None,
        shard_size: int) -> MixResult:  # fmt: skip
    """Write OUT_DIR's shards (and eval/'s) from the prepared examples in `parts`."""
    paths = [parts / s for s in part_shards]
    draws = _scan(paths, sources)
    is_eval = [_eval_records(d, s, seed, eval_fraction, eval_sources) for d, s in zip(draws, sources)]
    multiplicity = []
    for d, ev in zip(draws, is_eval):
        sizes = np.asarray(d.record_sizes, dtype=np.int64)
        d.eval_records, d.eval_examples = int(ev.sum()), int(sizes[ev].sum())
        d.available = d.examples - d.eval_examples
    _targets(draws, sources, eval_sources, mixture_examples)
    for d, s in zip(draws, sources):
        multiplicity.append(_multiplicity(d.available, round(d.target), _rng(seed, s.spec.name, 2)))
    shards = _write_train(paths, draws, is_eval, multiplicity, out, shard_size)
    eval_shards: list[str] = []
    if eval_fraction is not None or eval_sources:
        (out / EVAL_DIR).mkdir(exist_ok=True)
        eval_shards = _write_eval(paths, draws, is_eval, out / EVAL_DIR, shard_size)
    return MixResult(draws, shards, eval_shards)


def remove_outputs(out: Path) -> None:
    """What an interrupted mixing step left in the staging directory (it is redone whole)."""
    for f in out.glob("data-*.parquet"):
        f.unlink()
    shutil.rmtree(out / EVAL_DIR, ignore_errors=True)


# -- the manifest's records ----------------------------------------------------------------------------


def source_records(stats: Stats, sources: list[RunSource], mixed: MixResult | None) -> list[SourceRecord]:
    """Per source: the per-file counts summed, and (with sampling or an eval split) what the mixture drew."""
    out = []
    draws = {d.name: d for d in mixed.draws} if mixed else {}
    total = sum(d.written for d in draws.values()) if mixed else stats.examples
    asked = sum(d.target for d in draws.values())
    for src in sources:
        files = [stats.files[n] for n in src.names if n in stats.files]
        prepared = sum(f.examples for f in files)
        d = draws.get(src.spec.name)
        written = d.written if d else prepared
        sampling = src.spec.sampling
        out.append(
            SourceRecord(
                name=src.spec.name,
                files=list(src.names),
                sampling={sampling[0]: sampling[1]} if sampling else None,
                records_read=sum(f.records_read for f in files),
                records_rejected=sum(f.records_rejected for f in files),
                duplicates=sum(f.duplicates for f in files),
                filtered=sum(f.filtered for f in files),
                records_with_examples=sum(f.records_with_examples for f in files),
                examples_prepared=prepared,
                eval_records=d.eval_records if d else 0,
                eval_examples=d.eval_examples if d else 0,
                records_in_output=d.records_written if d else sum(f.records_with_examples for f in files),
                records_not_sampled=d.records - d.eval_records - d.records_written if d else 0,
                examples=written,
                tokens=d.tokens if d else sum(f.tokens for f in files),
                trainable_tokens=d.trainable if d else sum(f.trainable_tokens for f in files),
                requested_ratio=round((d.target / asked if asked else 0.0) if d else written / (total or 1), 6),
                realised_ratio=round(written / total, 6) if total else 0.0,
            )
        )
    return out


def eval_record(mixed: MixResult | None) -> EvalRecord | None:
    if mixed is None or not any(d.eval_records for d in mixed.draws):
        return None
    records = sum(d.eval_records for d in mixed.draws)
    examples = sum(d.eval_examples for d in mixed.draws)
    return EvalRecord(EVAL_DIR, records, examples, list(mixed.eval_shards))


def eval_manifest(train: Manifest, mixed: MixResult) -> Manifest:
    """OUT_DIR/eval's manifest: the held-out records of each source (a prepared directory of its own)."""
    per_file: dict[str, dict[str, Any]] = {}
    records: list[SourceRecord] = []
    for src, d in zip(train.sources, mixed.draws):
        records.append(SourceRecord(name=d.name, files=src.files, records_read=d.eval_records,
                                    records_with_examples=d.eval_records, examples_prepared=d.eval_examples,
                                    records_in_output=d.eval_records, examples=d.eval_examples,
                                    tokens=d.eval_tokens, trainable_tokens=d.eval_trainable))  # fmt: skip
    for r in records:
        share = {"records_read": r.records_read, "records_with_examples": r.records_read, "records_rejected": 0,
                 "examples": r.examples, "tokens": r.tokens, "trainable_tokens": r.trainable_tokens}  # fmt: skip
        per_file[f"{r.name} (eval)"] = {**share, "reconciled": True}
    total = sum(r.examples for r in records)
    records = [dataclasses.replace(r, realised_ratio=round(r.examples / total, 6) if total else 0.0) for r in records]
    return dataclasses.replace(
        train, shards=list(mixed.eval_shards), cache_key=train.cache_key + ":eval", split="eval",
        records_read=sum(r.records_read for r in records), examples_written=total, records_rejected=0,
        rejected_by_reason={}, examples_dropped_by_reason={}, tokens=sum(r.tokens for r in records),
        trainable_tokens=sum(r.trainable_tokens for r in records), per_file=per_file, examples_prepared=total,
        sources=records, eval=None,
    )  # fmt: skip


# -- the plan --------------------------------------------------------------------------------------


def _rng(seed: int, name: str, purpose: int) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key, purpose])


def _scan(paths: list[Path], sources: list[RunSource]) -> list[SourceDraw]:
    """Per source: its rows' range in parts/ and the number of examples of each of its records."""
    owner = {name: i for i, s in enumerate(sources) for name in s.names}
    draws = [SourceDraw(s.spec.name) for s in sources]
    row = 0
    last: tuple[str, int] | None = None
    current = -1
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=["source_file", "source_line"]):
            for f, line in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                i = owner[f]
                d = draws[i]
                if i != current:
                    d.start, current = row, i
                if (f, line) != last:
                    d.record_sizes.append(0)
                    last = (f, line)
                d.record_sizes[-1] += 1
                d.examples += 1
                row += 1
                d.end = row
    for d in draws:
        d.records = len(d.record_sizes)
    return draws


def _eval_records(d: SourceDraw, s: RunSource, seed: int, fraction: float | None, names: list[str]) -> np.ndarray:
    held = np.zeros(d.records, dtype=bool)
    if s.spec.name in names:
        held[:] = True
    elif fraction is not None and d.records:
        k = round(fraction * d.records)
        held[_rng(seed, s.spec.name, 1).choice(d.records, size=k, replace=False)] = True
    return held


def _targets(draws: list[SourceDraw], sources: list[RunSource], eval_names: list[str], total: int | None) -> None:
    weighted = [(d, s.spec.weight) for d, s in zip(draws, sources) if s.spec.weight is not None]
    if weighted:
        weights = sum(w for _, w in weighted)
        have = [d.available / w for d, w in weighted if d.available]
        scale = total / weights if total is not None else min(have, default=0.0)
    for d, s in zip(draws, sources):
        sampling = s.spec.sampling
        if s.spec.name in eval_names:
            d.target = 0.0
        elif sampling is None:
            d.target = float(d.available)
        elif sampling[0] == "epochs":
            d.target = sampling[1] * d.available
        elif sampling[0] == "examples":
            d.target = float(sampling[1])  # asked even when the source has no example (then realised: 0)
        else:
            d.target = scale * sampling[1]


def _multiplicity(available: int, target: int, rng: np.random.Generator) -> np.ndarray:
    """How many times each available example is written: q = T // A each, T % A of them once more."""
    if not available:
        return np.zeros(0, dtype=np.int32)
    times = np.full(available, target // available, dtype=np.int32)
    extra = target % available
    if extra:
        times[rng.choice(available, size=extra, replace=False)] += 1
    return times


# -- writing ---------------------------------------------------------------------------------------


def _rows(paths: list[Path], start: int, end: int) -> Iterator[Row]:
    """Rows [start, end) of the shards in `paths`, streamed."""
    offset = 0
    for path in paths:
        f = pq.ParquetFile(path)
        n = f.metadata.num_rows
        if offset + n <= start:
            offset += n
            continue
        if offset >= end:
            return
        for batch in f.iter_batches(batch_size=1024):
            b_end = offset + batch.num_rows
            if b_end > start and offset < end:
                lo, hi = max(start - offset, 0), min(end - offset, batch.num_rows)
                yield from _batch_rows(batch.slice(lo, hi - lo))
            offset = b_end
            if offset >= end:
                return


def _batch_rows(batch: pa.RecordBatch) -> Iterator[Row]:
    ids, labels = batch.column("input_ids"), batch.column("labels")
    i_off, i_val = ids.offsets.to_numpy(), ids.values.to_numpy()
    l_off, l_val = labels.offsets.to_numpy(), labels.values.to_numpy()
    files = batch.column("source_file").to_pylist()
    lines = batch.column("source_line").to_pylist()
    turns = batch.column("turn").to_pylist()
    tvars = batch.column("template_vars").to_pylist()
    for k in range(len(files)):
        yield (i_val[i_off[k] : i_off[k + 1]], l_val[l_off[k] : l_off[k + 1]], files[k], lines[k], turns[k], tvars[k])


def _train_stream(paths: list[Path], d: SourceDraw, held: np.ndarray, times: np.ndarray, index: int,
                  total: int) -> Iterator[tuple[float, int, int, Row]]:  # fmt: skip
    """(position key, source index, k, row) of every example this source writes, pass after pass."""
    k = 0
    for p in range(int(times.max()) if len(times) else 0):
        record, left, j = -1, 0, 0
        for row in _rows(paths, d.start, d.end):
            if left == 0:
                record += 1
                left = d.record_sizes[record]
            left -= 1
            if held[record]:
                continue
            if times[j] > p:
                yield (k + 0.5) / total, index, k, row
                k += 1
            j += 1


def _write_train(paths: list[Path], draws: list[SourceDraw], held: list[np.ndarray], times: list[np.ndarray],
                 out: Path, shard_size: int) -> list[str]:  # fmt: skip
    writer = ShardWriter(out, shard_size)
    streams = [_train_stream(paths, d, h, t, i, int(t.sum())) for i, (d, h, t) in enumerate(zip(draws, held, times))]
    for _, i, _, (ids, labels, f, line, turn, tv) in heapq.merge(*streams):
        writer.add(ids, labels, f, line, turn, tv)
        writer.end_batch()
        d = draws[i]
        d.written += 1
        d.tokens += len(ids)
        d.trainable += int(np.count_nonzero(labels != IGNORE_INDEX))
    writer.flush()
    for d, h, t in zip(draws, held, times):
        sizes = np.asarray(d.record_sizes, dtype=np.int64)
        record_of = np.repeat(np.flatnonzero(~h), sizes[~h])  # the record of each available example
        d.records_written = len(np.unique(record_of[t > 0]))
    return writer.shards


def _write_eval(paths: list[Path], draws: list[SourceDraw], held: list[np.ndarray], out: Path,
                shard_size: int) -> list[str]:  # fmt: skip
    writer = ShardWriter(out, shard_size)
    for d, h in zip(draws, held):
        if not h.any():
            continue
        record, left = -1, 0
        for ids, labels, f, line, turn, tv in _rows(paths, d.start, d.end):
            if left == 0:
                record += 1
                left = d.record_sizes[record]
            left -= 1
            if h[record]:
                writer.add(ids, labels, f, line, turn, tv)
                writer.end_batch()
                d.eval_tokens += len(ids)
                d.eval_trainable += int(np.count_nonzero(labels != IGNORE_INDEX))
    writer.flush()
    return writer.shards
