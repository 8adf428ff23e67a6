"""`sftprep.collate` (padding, masks, tensors) and `sftprep.load` (HF Dataset or plain dicts)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from dummy_tokenizer import MARKER_IDS, write_dummy_tokenizer

import sftprep

IGNORE = -100
PAD = MARKER_IDS["<pad>"]
COLUMNS = ["input_ids", "labels", "source_file", "source_line", "turn", "template_vars"]

EXAMPLES = [
    {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]},
    {"input_ids": [8], "labels": [8]},
    {"input_ids": [9, 10], "labels": [IGNORE, IGNORE]},
]


def test_collate_right_pads_to_the_longest() -> None:
    batch = sftprep.collate(EXAMPLES, pad_id=PAD)
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    np.testing.assert_array_equal(batch["input_ids"], [[5, 6, 7], [8, PAD, PAD], [9, 10, PAD]])
    np.testing.assert_array_equal(batch["labels"], [[IGNORE, 6, 7], [8, IGNORE, IGNORE], [IGNORE, IGNORE, IGNORE]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    for v in batch.values():
        assert isinstance(v, np.ndarray) and v.dtype == np.int64 and v.shape == (3, 3)


def test_collate_pad_id_zero_is_not_confused_with_real_tokens() -> None:
    batch = sftprep.collate([{"input_ids": [0, 0], "labels": [0, IGNORE]}, {"input_ids": [1], "labels": [1]}], 0)
    np.testing.assert_array_equal(batch["input_ids"], [[0, 0], [1, 0]])
    np.testing.assert_array_equal(batch["labels"], [[0, IGNORE], [1, IGNORE]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1], [1, 0]])


def test_collate_equal_lengths_need_no_padding() -> None:
    batch = sftprep.collate([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3, 4], "labels": [IGNORE, 4]}], 9)
    np.testing.assert_array_equal(batch["input_ids"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1], [1, 1]])


def test_collate_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    batch = sftprep.collate(EXAMPLES, pad_id=PAD, return_tensors="pt")
    expected = sftprep.collate(EXAMPLES, pad_id=PAD)
    for key, value in batch.items():
        assert isinstance(value, torch.Tensor)
        assert value.dtype == torch.int64
        assert value.tolist() == expected[key].tolist()


# ---------------------------------------------------------------------------- load


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep datasets' cache inside the test's tmp dir."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    yield


def conversation(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"question {i}?"},
            {"role": "assistant", "content": f"answer {i}."},
            {"role": "user", "content": "more?"},
            {"role": "assistant", "content": "done."},
        ]
    }


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    tok = write_dummy_tokenizer(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(conversation(i)) + "\n" for i in range(3)), encoding="utf-8")
    out = tmp_path / "out"
    manifest = sftprep.prepare(
        [str(src)],
        out_dir=str(out),
        tokenizer=str(tok),
        template="chatml",
        mask="split-turns",
        shard_size=4,
        batch_size=1,
    )
    assert manifest["examples_written"] == 6 and len(manifest["shards"]) == 2
    return out


def parquet_rows(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in sorted(out.glob("data-*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


def test_load_returns_a_dataset_equal_to_the_parquet(out_dir: Path, hf_cache: None) -> None:
    import datasets

    ds = sftprep.load(out_dir)
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == COLUMNS
    assert len(ds) == 6
    expected = parquet_rows(out_dir)
    assert [dict(r) for r in ds] == expected
    assert [r["turn"] for r in expected] == [0, 1] * 3
    assert [r["source_line"] for r in expected] == [1, 1, 2, 2, 3, 3]
    assert ds.features["input_ids"].feature.dtype == "int32"
    assert ds.features["labels"].feature.dtype == "int32"


def test_load_as_dataset_true(out_dir: Path, hf_cache: None) -> None:
    import datasets

    ds = sftprep.load(out_dir, as_dataset=True)
    assert isinstance(ds, datasets.Dataset) and len(ds) == 6
    assert ds.column_names == COLUMNS
    assert [dict(r) for r in ds] == parquet_rows(out_dir)


def test_load_without_dataset_iterates_dicts(out_dir: Path) -> None:
    it = sftprep.load(out_dir, as_dataset=False)
    assert not isinstance(it, list | tuple)
    first = next(it)
    assert isinstance(first, dict) and list(first) == COLUMNS
    rows = [first, *it]
    assert rows == parquet_rows(out_dir)
    assert all(isinstance(x, int) for r in rows for x in r["input_ids"])


def test_collate_loaded_rows(out_dir: Path, hf_cache: None) -> None:
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["tokenizer"]["pad_id"] == PAD
    ds = sftprep.load(out_dir)
    rows = [ds[i] for i in range(len(ds))]
    batch = sftprep.collate(rows, pad_id=manifest["tokenizer"]["pad_id"])
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (6, longest)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        assert batch["input_ids"][i, :k].tolist() == r["input_ids"]
        assert batch["labels"][i, :k].tolist() == r["labels"]
        assert set(batch["input_ids"][i, k:].tolist()) <= {PAD}
        assert set(batch["labels"][i, k:].tolist()) <= {IGNORE}
        assert batch["attention_mask"][i].tolist() == [1] * k + [0] * (longest - k)


def empty_out(tmp_path: Path) -> Path:
    tok = write_dummy_tokenizer(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    src.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n', encoding="utf-8")
    out = tmp_path / "empty"
    manifest = sftprep.prepare([str(src)], out_dir=str(out), tokenizer=str(tok))
    assert manifest["examples_written"] == 0 and manifest["shards"] == []
    return out


def test_load_of_an_empty_output(tmp_path: Path, hf_cache: None) -> None:
    out = empty_out(tmp_path)
    assert list(sftprep.load(out, as_dataset=False)) == []
    ds = sftprep.load(out)
    assert len(ds) == 0


def test_load_of_an_empty_output_has_every_column(tmp_path: Path, hf_cache: None) -> None:
    ds = sftprep.load(empty_out(tmp_path))
    assert ds.column_names == COLUMNS
