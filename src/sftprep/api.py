"""The Python API, mirroring the CLI: prepare(), load(), collate()."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq

from sftprep.errors import ConfigError
from sftprep.types import IGNORE_INDEX


def prepare(
    inputs: Any = None,
    out_dir: str | Path | None = None,
    *,
    config: str | Path | None = None,
    source_name: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """`sftprep prepare` as a function; keyword options are PrepareOptions fields (`sources=[{...}]`,
    `columns={...}`, `eval_fraction=...`); `config`: a data config file (keyword options given here win).
    Returns the manifest. `out_dir`: default "out" (or the config's).

    `inputs`: a path or a list of paths (files, directories, globs), or the records themselves: a
    `datasets.Dataset` / `IterableDataset` (its Arrow rows, read as sftprep reads a save_to_disk directory)
    or any iterable of dicts. Records are spooled to a temporary file (streamed: constant memory), named
    `source_name` in `source_file` (default "dataset" / "records"), and removed after the run."""
    from sftprep.preparation.options import resolve_options
    from sftprep.preparation.run import prepare as run

    with tempfile.TemporaryDirectory(prefix="sftprep-input-") as spool:
        paths, names = _inputs(inputs, Path(spool), source_name)
        flags = {**options, **({"out_dir": str(out_dir)} if out_dir is not None else {})}
        if paths or inputs is not None:
            flags["inputs"] = paths
        flags["input_names"] = names
        opts, _ = resolve_options(flags, set(flags), str(config) if config is not None else None)
        return run(opts)


def _inputs(inputs: Any, spool: Path, name: str | None) -> tuple[list[str], dict[str, str]]:
    """Input paths, and the names of the files records were spooled to."""
    if inputs is None:
        return [], {}
    if isinstance(inputs, (str, os.PathLike)):
        return [str(inputs)], {}
    if isinstance(inputs, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in inputs):
        return [str(p) for p in inputs], {}
    kind = type(inputs).__name__
    if kind == "DatasetDict" or kind == "IterableDatasetDict":
        splits = ", ".join(map(repr, inputs))
        raise ConfigError(f"a {kind} holds several splits ({splits}); pass one, e.g. ds[{next(iter(inputs))!r}]")
    if kind in ("Dataset", "IterableDataset") and hasattr(inputs, "with_format"):
        return _spooled(_arrow_spool(inputs, spool / "dataset.arrow"), name or "dataset")
    if isinstance(inputs, Mapping) or not isinstance(inputs, Iterable):
        raise ConfigError(f"inputs: expected paths, a datasets.Dataset or an iterable of dicts (records), got {kind}")
    return _spooled(_jsonl_spool(inputs, spool / "records.jsonl"), name or "records")


def _spooled(path: Path, name: str) -> tuple[list[str], dict[str, str]]:
    return [str(path)], {str(path): name}


def _arrow_spool(ds: Any, path: Path) -> Path:
    """A Dataset's rows as an Arrow IPC stream, batch by batch (the schema as the Dataset has it)."""
    import pyarrow as pa

    writer = None
    try:
        for table in ds.with_format("arrow").iter(batch_size=1000):
            if writer is None:
                writer = pa.ipc.new_stream(pa.OSFile(str(path), "wb"), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        path.write_bytes(b"")
    return path


def _jsonl_spool(records: Iterable[Any], path: Path) -> Path:
    """Dicts as JSON Lines (anything else: a line the reader rejects as not_object, counted like a bad line)."""
    with path.open("wb") as f:
        for record in records:
            f.write(orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n")
    return path


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
