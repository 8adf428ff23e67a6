"""A whole `prepare` run: inputs checked up front, batches through the pipeline (in worker processes
with --workers), shards and rejects written in record order into a staging directory beside OUT_DIR,
manifest last, then one rename. Same inputs and options give the same bytes whatever the worker count.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from sftprep.errors import ConfigError, StrictModeError
from sftprep.manifest import Stats, build_manifest
from sftprep.options import PrepareOptions
from sftprep.output import RejectWriter, ShardWriter, write_manifest
from sftprep.pipeline import BatchResult, Preparer, load_components
from sftprep.records import iter_input_files, read_records
from sftprep.types import RawRecord


def batched(it: Iterable[RawRecord], n: int) -> Iterator[list[RawRecord]]:
    iterator = iter(it)
    while chunk := list(islice(iterator, n)):
        yield chunk


def worker_count(requested: int) -> int:
    """0 means every core present."""
    return max(1, os.cpu_count() or 1) if requested <= 0 else requested


def prepare(opts: PrepareOptions) -> dict[str, Any]:
    """Run the whole preparation; returns the manifest (also written to OUT_DIR/manifest.json)."""
    opts.validate()
    files = iter_input_files(opts.inputs)
    tok, template = load_components(opts)
    out = Path(opts.out_dir)
    if out.exists() and not opts.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    stats = Stats()
    shards = ShardWriter(tmp, opts.shard_size)
    rejects = RejectWriter(tmp / "rejects.jsonl")
    try:
        batches = (b for path in files for b in batched(read_records(path), opts.batch_size))
        for result in _results(opts, Preparer(opts, tok, template), batches):
            _write(result, shards, rejects, opts.strict)
            stats.merge(result.stats)
        shards.flush()
    except BaseException:
        rejects.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rejects.close()
    manifest = build_manifest(opts, tok, template, stats, shards.shards)
    write_manifest(tmp / "manifest.json", manifest)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return manifest


def _write(result: BatchResult, shards: ShardWriter, rejects: RejectWriter, strict: bool) -> None:
    if strict and result.rejects:
        raise StrictModeError(result.rejects[0])
    for r in result.rejects:
        rejects.add(r)
    for source, line, turn, ids, labels in result.examples:
        shards.add(ids, labels, source, line, turn)


def _results(opts: PrepareOptions, preparer: Preparer, batches: Iterator[list[RawRecord]]) -> Iterator[BatchResult]:
    n = worker_count(opts.workers)
    if n == 1:
        yield from map(preparer.run_batch, batches)
        return
    ctx = mp.get_context("fork")
    with ctx.Pool(n, initializer=_init_worker, initargs=(preparer,)) as pool:
        pending: deque[Any] = deque()
        for batch in batches:  # a bounded window of batches in flight keeps memory flat
            pending.append(pool.apply_async(_run_in_worker, (batch,)))
            if len(pending) >= 2 * n:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


_WORKER: Preparer | None = None


def _init_worker(preparer: Preparer) -> None:
    global _WORKER
    os.environ["RAYON_NUM_THREADS"] = "1"  # one Rust thread per worker process: no oversubscription
    _WORKER = preparer


def _run_in_worker(batch: list[RawRecord]) -> BatchResult:
    assert _WORKER is not None
    return _WORKER.run_batch(batch)
