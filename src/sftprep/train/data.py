"""Prepared Parquet -> training examples (shifted targets), best-fit-decreasing packing, batches.

Labels in DATA_DIR are aligned with input_ids; the model at position t predicts token t+1, so each
example's `targets` are its labels shifted left by one (-100 at the end). Shifting per example before
packing means the last token of one example never predicts the first token of the next.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from sftprep.api import shard_paths
from sftprep.errors import ConfigError
from sftprep.types import IGNORE_INDEX


@dataclass(frozen=True)
class TrainExample:
    input_ids: np.ndarray  # int64 [n]
    targets: np.ndarray  # int64 [n]: labels[1:] + [-100]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trainable(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


@dataclass
class DataStats:
    examples_read: int = 0
    dropped_no_target: int = 0  # no trained label after the first token: nothing to predict
    dropped_too_long: int = 0
    examples: int = 0
    tokens: int = 0
    trainable_tokens: int = 0
    rows: int = 0  # packed rows (0 without packing)
    row_capacity: int = 0

    @property
    def packing_efficiency(self) -> float:
        """Real tokens / row capacity (1.0 = no padding at all)."""
        return self.tokens / (self.rows * self.row_capacity) if self.rows else 0.0


def shift_labels(labels: np.ndarray) -> np.ndarray:
    targets = np.full(len(labels), IGNORE_INDEX, dtype=np.int64)
    targets[:-1] = labels[1:]
    return targets


def read_parquet(data_dir: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input_ids, labels) of every example in DATA_DIR, in order, as int64 arrays."""
    if not (Path(data_dir) / "manifest.json").is_file():
        raise ConfigError(f"{data_dir}: no manifest.json; give a directory written by `sftprep prepare`")
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for path in shard_paths(data_dir):
        table = pq.read_table(path, columns=["input_ids", "labels"]).combine_chunks()
        ids, labels = (_split_list(table.column(c).chunk(0)) for c in ("input_ids", "labels"))
        out.extend(zip(ids, labels))
    return out


def _split_list(arr: object) -> list[np.ndarray]:
    offsets = np.asarray(arr.offsets)  # type: ignore[attr-defined]
    values = np.asarray(arr.values, dtype=np.int64)  # type: ignore[attr-defined]
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def load_examples(data_dir: str | Path, max_length: int | None = None) -> tuple[list[TrainExample], DataStats]:
    """Examples with at least one trained target (the others never reach the loss)."""
    stats = DataStats()
    examples: list[TrainExample] = []
    for ids, labels in read_parquet(data_dir):
        stats.examples_read += 1
        if len(ids) != len(labels):
            raise ConfigError(f"{data_dir}: an example's labels are not aligned with its input_ids")
        if max_length is not None and len(ids) > max_length:
            stats.dropped_too_long += 1
            continue
        ex = TrainExample(ids, shift_labels(labels))
        n = ex.n_trainable
        if n == 0:
            stats.dropped_no_target += 1
            continue
        examples.append(ex)
        stats.tokens += len(ex)
        stats.trainable_tokens += n
    stats.examples = len(examples)
    return examples, stats


# ------------------------------------------------------------------------------------------- packing
def pack_best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of at most `capacity` tokens, best-fit decreasing.

    Longest first, each item goes to the open row whose free space is the smallest that fits it.
    Free space takes at most `capacity` distinct values, so a sorted list of them stays short.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free_values: list[int] = []  # sorted distinct free sizes of open rows
    rows_by_free: dict[int, list[int]] = {}
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"an item of {n} tokens does not fit rows of {capacity}")
        at = bisect.bisect_left(free_values, n)
        if at < len(free_values):
            free = free_values[at]
            bucket = rows_by_free[free]
            row = bucket.pop()
            if not bucket:
                del rows_by_free[free]
                free_values.pop(at)
        else:
            free, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        left = free - n
        if left > 0:
            if left not in rows_by_free:
                bisect.insort(free_values, left)
                rows_by_free[left] = []
            rows_by_free[left].append(row)
    return rows


# ------------------------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """One micro-batch. Packed batches carry `seq_ids` (one id per example in a row, pads their own)."""

    input_ids: torch.Tensor  # [B, S]
    targets: torch.Tensor  # [B, S], -100 = not trained
    attention_mask: torch.Tensor | None = None  # [B, S] 1/0 (padded batches)
    position_ids: torch.Tensor | None = None  # [B, S] restarting at 0 per example (packed)
    seq_ids: torch.Tensor | None = None  # [B, S] (packed)
    n_examples: int = 0
    n_tokens: int = 0  # real (non-pad) tokens

    @property
    def n_trainable(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    @property
    def padded_tokens(self) -> int:
        return self.input_ids.numel()

    def tensors(self) -> dict[str, torch.Tensor | None]:
        """The keyword arguments of SFTLoss.forward."""
        return {
            "input_ids": self.input_ids,
            "targets": self.targets,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            "seq_ids": self.seq_ids,
        }

    def to(self, device: torch.device) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            move(self.attention_mask),
            move(self.position_ids),
            move(self.seq_ids),
            self.n_examples,
            self.n_tokens,
        )


def collate_padded(examples: Sequence[TrainExample], pad_id: int) -> Batch:
    """Right-padded rows: pad_id inputs, -100 targets, attention_mask 0 on padding."""
    longest = max(len(e) for e in examples)
    n = len(examples)
    ids = np.full((n, longest), pad_id, dtype=np.int64)
    targets = np.full((n, longest), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((n, longest), dtype=np.int64)
    for i, e in enumerate(examples):
        k = len(e)
        ids[i, :k], targets[i, :k], mask[i, :k] = e.input_ids, e.targets, 1
    return Batch(
        torch.from_numpy(ids),
        torch.from_numpy(targets),
        attention_mask=torch.from_numpy(mask),
        n_examples=n,
        n_tokens=int(mask.sum()),
    )


def collate_packed(rows: Sequence[Sequence[TrainExample]], pad_id: int) -> Batch:
    """Packed rows (padded to the longest row): position ids restart at 0 for each example."""
    lengths = [sum(len(e) for e in row) for row in rows]
    longest = max(lengths)
    n = len(rows)
    ids = np.full((n, longest), pad_id, dtype=np.int64)
    targets = np.full((n, longest), IGNORE_INDEX, dtype=np.int64)
    positions = np.zeros((n, longest), dtype=np.int64)
    seq = np.zeros((n, longest), dtype=np.int64)
    for i, row in enumerate(rows):
        at = 0
        for j, e in enumerate(row):
            k = len(e)
            ids[i, at : at + k], targets[i, at : at + k] = e.input_ids, e.targets
            positions[i, at : at + k] = np.arange(k)
            seq[i, at : at + k] = j
            at += k
        positions[i, at:] = np.arange(longest - at)  # padding: its own causal segment
        seq[i, at:] = len(row)
    return Batch(
        torch.from_numpy(ids),
        torch.from_numpy(targets),
        position_ids=torch.from_numpy(positions),
        seq_ids=torch.from_numpy(seq),
        n_examples=sum(len(r) for r in rows),
        n_tokens=sum(lengths),
    )


# ------------------------------------------------------------------------------------------- order
@dataclass
class StepPlan:
    """Which units (examples, or packed rows) every micro-batch of every step takes.

    Stateless: step s of epoch e uses a permutation seeded by (seed, e), so resuming needs only s.
    One optimizer step takes batch_size x grad_accum x world_size units; the last partial one is dropped.
    """

    n_units: int
    batch_size: int
    grad_accum: int
    world_size: int = 1
    seed: int = 0
    _cache: tuple[int, np.ndarray] | None = None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.n_units // self.global_batch

    def permutation(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n_units))
        return self._cache[1]

    def micro_batches(self, step: int, rank: int = 0) -> list[np.ndarray]:
        """The unit indices of this process's micro-batches for optimizer step `step` (0-based)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        units = self.permutation(epoch)[k * self.global_batch : (k + 1) * self.global_batch]
        out = []
        for j in range(self.grad_accum):
            start = (j * self.world_size + rank) * self.batch_size
            out.append(units[start : start + self.batch_size])
        return out
