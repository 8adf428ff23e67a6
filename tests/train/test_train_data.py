"""Training data: shifted targets, dropped examples, best-fit-decreasing packing, batches, step plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from hypothesis import given, settings
from hypothesis import strategies as st
from train_helpers import chat, prepare_records

from sftprep.train.data import (
    StepPlan,
    TrainExample,
    collate_packed,
    collate_padded,
    load_examples,
    pack_best_fit_decreasing,
    read_parquet,
    shift_labels,
)

IGNORE = -100


def ex(ids: list[int], targets: list[int]) -> TrainExample:
    return TrainExample(np.array(ids, dtype=np.int64), np.array(targets, dtype=np.int64))


def test_shift_labels_moves_each_label_to_the_position_that_predicts_it() -> None:
    labels = np.array([IGNORE, IGNORE, 7, 8, IGNORE])
    assert shift_labels(labels).tolist() == [IGNORE, 7, 8, IGNORE, IGNORE]


def test_examples_without_a_trained_target_are_dropped(tmp_path: Path) -> None:
    data = prepare_records(tmp_path, [chat(10, 20), chat(30, 40)], mask="none")
    # mask "none" trains every token: rewrite one example so that only its first token is trained,
    # which no position predicts once labels are shifted
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = next(data.glob("*.parquet"))
    table = pq.read_table(shard)
    labels = table.column("labels").to_pylist()
    labels[1] = [labels[1][0]] + [IGNORE] * (len(labels[1]) - 1)
    table = table.set_column(1, "labels", pa.array(labels, pa.list_(pa.int32())))
    pq.write_table(table, shard)
    examples, stats = load_examples(data)
    assert stats.examples_read == 2 and stats.examples == 1 and stats.dropped_no_target == 1
    assert all(e.n_trainable > 0 for e in examples)
    ids, labels0 = read_parquet(data)[0]
    assert examples[0].input_ids.tolist() == ids.tolist()
    assert examples[0].targets.tolist() == shift_labels(labels0).tolist()
    assert stats.trainable_tokens == examples[0].n_trainable


def test_max_length_drops_longer_examples(tmp_path: Path) -> None:
    data = prepare_records(tmp_path, [chat(10, 20, turns=1), chat(10, 20, turns=3)])
    lengths = sorted(len(ids) for ids, _ in read_parquet(data))
    examples, stats = load_examples(data, max_length=lengths[0])
    assert stats.examples == 1 and stats.dropped_too_long == 1 and len(examples[0]) == lengths[0]


def naive_bfd(lengths: list[int], capacity: int) -> list[list[int]]:
    """The textbook O(n^2) best-fit decreasing (ties: the most recently opened... see below)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        fits = [r for r in range(len(rows)) if free[r] >= lengths[i]]
        if fits:
            r = min(fits, key=lambda r: free[r])
        else:
            rows.append([])
            free.append(capacity)
            r = len(rows) - 1
        rows[r].append(i)
        free[r] -= lengths[i]
    return rows


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), max_size=60), st.integers(50, 64))
def test_best_fit_decreasing_is_a_valid_best_fit_packing(lengths: list[int], capacity: int) -> None:
    rows = pack_best_fit_decreasing(lengths, capacity)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(len(lengths)))  # every item exactly once
    assert all(sum(lengths[i] for i in row) <= capacity for row in rows)
    assert all(row for row in rows)
    # the same number of rows and the same row fill as the textbook algorithm (ties may pick other rows)
    ref = naive_bfd(lengths, capacity)
    assert len(rows) == len(ref)
    assert sorted(sum(lengths[i] for i in r) for r in rows) == sorted(sum(lengths[i] for i in r) for r in ref)


def test_best_fit_decreasing_picks_the_tightest_row() -> None:
    # rows after the 3 long items: free 2, 4, 6; an item of 4 goes to the row with 4 free
    rows = pack_best_fit_decreasing([8, 6, 4, 4], 10)
    assert rows == [[0], [1, 3], [2]] or sorted(map(sorted, rows)) == [[0], [1, 2], [3]]
    assert all(sum([8, 6, 4, 4][i] for i in r) <= 10 for r in rows)
    assert len(rows) == 3


def test_too_long_item_is_rejected() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        pack_best_fit_decreasing([5, 11], 10)


def test_collate_padded() -> None:
    b = collate_padded([ex([1, 2, 3], [IGNORE, 3, IGNORE]), ex([4], [IGNORE])], pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert b.targets.tolist() == [[IGNORE, 3, IGNORE], [IGNORE, IGNORE, IGNORE]]
    assert b.attention_mask is not None and b.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert (b.n_examples, b.n_tokens, b.padded_tokens, b.n_trainable) == (2, 4, 6, 1)


def test_collate_packed_restarts_positions_and_separates_examples() -> None:
    rows = [[ex([1, 2, 3], [2, 3, IGNORE]), ex([4, 5], [5, IGNORE])], [ex([6], [IGNORE])]]
    b = collate_packed(rows, pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 0, 0, 0, 0]]
    assert b.targets.tolist() == [[2, 3, IGNORE, 5, IGNORE], [IGNORE] * 5]
    assert b.position_ids is not None and b.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
    assert b.seq_ids is not None and b.seq_ids.tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]]
    assert (b.n_examples, b.n_tokens, b.padded_tokens) == (3, 6, 10)


@pytest.mark.parametrize(("batch", "accum", "world"), [(8, 1, 1), (1, 8, 1), (2, 4, 1), (2, 2, 2)])
def test_step_plan_takes_each_unit_once_per_epoch(batch: int, accum: int, world: int) -> None:
    plan = StepPlan(n_units=37, batch_size=batch, grad_accum=accum, world_size=world, seed=3)
    assert plan.steps_per_epoch == 37 // 8
    for epoch in range(2):
        seen: list[int] = []
        for step in range(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch):
            step_units = [u for r in range(world) for mb in plan.micro_batches(step, r) for u in mb.tolist()]
            assert len(step_units) == 8
            # the same 8 units make a step whatever the batch/accumulation/process split
            assert sorted(step_units) == sorted(StepPlan(37, 8, 1, 1, 3).micro_batches(step)[0].tolist())
            seen += step_units
        assert len(seen) == len(set(seen)) == 32
    assert plan.permutation(0).tolist() != plan.permutation(1).tolist()
