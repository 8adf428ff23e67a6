"""The Python API, mirroring the CLI: prepare(), load(), collate()."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sftprep.types import IGNORE_INDEX


def prepare(inputs: str | Sequence[str], out_dir: str = "out", **options: Any) -> dict[str, Any]:
    """`sftprep prepare` as a function; keyword options are PrepareOptions fields. Returns the manifest."""
    from sftprep.preparation.options import PrepareOptions
    from sftprep.preparation.run import prepare as run

    paths = [inputs] if isinstance(inputs, str) else list(inputs)
    return run(PrepareOptions(inputs=[str(p) for p in paths], out_dir=str(out_dir), **options))


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """OUT_DIR's manifest as a dict (its JSON); sftprep's own code reads the typed `Manifest`."""
    from sftprep.preparation.manifest import read_manifest as read_typed

    return read_typed(out_dir).to_dict()


def shard_paths(out_dir: str | Path) -> list[Path]:
    manifest = read_manifest(out_dir)
    return [Path(out_dir) / name for name in manifest["shards"]]


def iter_examples(out_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Examples in order, as dicts of plain Python values."""
    for path in shard_paths(out_dir):
        table = pq.read_table(path)
        yield from table.to_pylist()


def load(out_dir: str | Path, as_dataset: bool | None = None) -> Any:
    """A HF `datasets.Dataset` when datasets is installed (or as_dataset=True), else an iterator of dicts."""
    if as_dataset is not False:
        try:
            import datasets
        except ImportError:
            if as_dataset:
                raise
        else:
            files = [str(p) for p in shard_paths(out_dir)]
            if not files:
                from sftprep.preparation.output import SCHEMA

                return datasets.Dataset.from_dict({f.name: [] for f in SCHEMA}, features=_features(datasets))
            return datasets.load_dataset("parquet", data_files=files, split="train")
    return iter_examples(out_dir)


def _features(datasets: Any) -> Any:
    v = datasets.Value
    return datasets.Features(
        {
            "input_ids": datasets.Sequence(v("int32")),
            "labels": datasets.Sequence(v("int32")),
            "source_file": v("string"),
            "source_line": v("int64"),
            "turn": v("int32"),
            "template_vars": v("string"),
        }
    )


def collate(examples: Sequence[Mapping[str, Any]], pad_id: int, return_tensors: str = "np") -> dict[str, Any]:
    """Right-pad to the longest example: input_ids with pad_id, labels with -100, attention_mask 1/0."""
    n = len(examples)
    longest = max((len(e["input_ids"]) for e in examples), default=0)
    input_ids = np.full((n, longest), pad_id, dtype=np.int64)
    labels = np.full((n, longest), IGNORE_INDEX, dtype=np.int64)
    attention = np.zeros((n, longest), dtype=np.int64)
    for i, e in enumerate(examples):
        k = len(e["input_ids"])
        input_ids[i, :k] = e["input_ids"]
        labels[i, :k] = e["labels"]
        attention[i, :k] = 1
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
    if return_tensors == "pt":
        import torch

        return {k: torch.from_numpy(v) for k, v in batch.items()}
    return batch
