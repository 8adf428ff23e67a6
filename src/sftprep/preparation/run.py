"""A whole `prepare` run: inputs checked up front, batches through the pipeline (in worker processes
with --workers), shards and rejects written in record order into a staging directory beside OUT_DIR,
manifest last, then one rename. Same inputs and options give the same bytes whatever the worker count.

A run reads its sources one after the other (sourcing.py: each with its own options; plain input paths are
one source). With sampling or an eval split, every example is first written to `parts/` in the staging
directory and mixture.py then writes OUT_DIR's shards and OUT_DIR/eval from it.
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing as mp
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

from sftprep import __version__
from sftprep.errors import ConfigError, StrictModeError
from sftprep.labels.build_loss_labels import Encodings
from sftprep.outdir import (
    STAGING_MARKER,
    check_replaceable,
    forget_locks_in_child,
    make_staging,
    normalized,
    out_dir_lock,
    remove_staging,
    replace_dir,
    staging_dir,
)
from sftprep.preparation.manifest import build_manifest, write_manifest
from sftprep.preparation.mixture import (
    EVAL_DIR,
    MixResult,
    eval_manifest,
    eval_record,
    mix,
    remove_outputs,
    source_records,
)
from sftprep.preparation.options import PrepareOptions
from sftprep.preparation.output import RejectWriter, ShardWriter, reject_row_line
from sftprep.preparation.pipeline import BatchResult, PendingBatch, Preparer, load_components
from sftprep.preparation.sourcing import (
    BATCH_BYTES,
    Deduper,
    LineBatch,
    RunSource,
    all_files,
    batched,
    check_shapes,
    input_sha256,
    line_batches,
    run_sources,
)
from sftprep.preparation.stats import Stats
from sftprep.read.records import read_records
from sftprep.templates.base import ChatTemplate, template_sha256
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import RawRecord

__all__ = ["BATCH_BYTES", "batched", "prepare"]
PARTS = "parts"  # in the staging directory: every prepared example, before sampling and the eval split
Batch = tuple[int, list[RawRecord] | LineBatch]  # (source index, records or the lines a worker parses)


# Below this much input (bytes on disk), `--workers 0` prepares in the one process: starting a pool and
# warming each worker's caches costs more than the second core gives back (about 1 MB of JSONL).
AUTO_POOL_MIN_BYTES = 4 << 20


def worker_count(requested: int, input_bytes: int | None = None) -> int:
    """0 means every core present (one process for an input under AUTO_POOL_MIN_BYTES, when its size is given)."""
    if requested > 0:
        return requested
    if input_bytes is not None and input_bytes < AUTO_POOL_MIN_BYTES:
        return 1
    return max(1, os.cpu_count() or 1)


def run_key(opts: PrepareOptions, files: list[tuple[Path, str]], tok: Any, template: Any) -> str:
    """What the output depends on: input contents (and names, recorded in it), options (sources, column
    maps, sampling, seed included), tokenizer, template and sftprep version. Same key, same bytes."""
    h = hashlib.sha256()
    parts = {
        "version": __version__,
        "code": code_sha256(),
        "options": opts.recorded(),
        "tokenizer": tok.sha256,
        "tokenizer_config": tok.config,
        "loader": tok.loader,
        "chat_template": tok.chat_template,
        "template": template_sha256(template),
        "inputs": [[name, input_sha256(f)] for f, name in files],
    }
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()


CODE_ROOT = Path(__file__).parent.parent  # the sftprep package (every room), not only preparation/


def code_files() -> list[Path]:
    return sorted(p for p in CODE_ROOT.rglob("*") if p.suffix in (".py", ".json", ".jinja") and p.is_file())


@lru_cache(maxsize=1)
def code_sha256() -> str:
    """The package's own code and data (not only its version): a changed sftprep recomputes, even in development."""
    h = hashlib.sha256()
    for f in code_files():
        h.update(str(f.relative_to(CODE_ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


PROGRESS = "progress.json"
MARKERS = ("manifest.json",)  # a directory holding it was written by `sftprep prepare`
# Every name `prepare` writes in OUT_DIR: --overwrite refuses a directory holding anything else.
WRITTEN = ("manifest.json", "rejects.jsonl", "data-*.parquet", EVAL_DIR, PROGRESS, PARTS, STAGING_MARKER)


@dataclass(frozen=True)
class RunStart:
    """What a run (either engine) starts from: its inputs, components, key, OUT_DIR and staging directory."""

    files: list[Path]
    sources: list[RunSource]
    tok: BPETokenizer
    template: ChatTemplate
    key: str
    out: Path
    tmp: Path


@contextmanager
def locked_out_dir(opts: PrepareOptions) -> Iterator[None]:
    """Options checked, then OUT_DIR locked for this process from the up-to-date check to the final rename."""
    opts.validate()
    out = normalized(opts.out_dir)
    run_sources(opts)  # a bad input path is reported before anything is created
    check_replaceable(out, MARKERS)
    with out_dir_lock(out, "prepare"):
        yield


def begin_run(opts: PrepareOptions) -> RunStart | dict[str, Any]:
    """Check the options, inputs and OUT_DIR, load the components and key the run; OUT_DIR's manifest (with
    `up_to_date`) when OUT_DIR already holds this run. OUT_DIR is replaced only with --overwrite and only
    when sftprep wrote it. Call under `locked_out_dir`."""
    opts.validate()
    out = normalized(opts.out_dir)
    check_replaceable(out, MARKERS)  # refuse a user's directory before any work
    sources = run_sources(opts)
    check_shapes(sources)
    tok, template = load_components(opts)
    key = run_key(opts, all_files(sources), tok, template)
    existing = _existing_manifest(out)
    if existing is not None and existing.get("cache_key") == key and _complete(out, existing):
        return {**existing, "up_to_date": True}
    if out.exists() and any(out.iterdir()) and not opts.overwrite:
        if existing is None:
            why = "an sftprep run whose manifest.json cannot be read"
        elif existing.get("cache_key") == key:
            why = "this run, but a shard it lists is missing"
        else:
            why = "an earlier sftprep run with other inputs, options or sftprep code"
        raise ConfigError(f"{out} holds the output of {why}; pass --overwrite to replace it, or choose another -o")
    check_replaceable(out, MARKERS, WRITTEN)  # nothing of the user's in it
    files = [f for s in sources for f in s.files]
    return RunStart(files, sources, tok, template, key, out, staging_dir(out))


def prepare(
    opts: PrepareOptions, on_batch: Callable[[int, int], None] | None = None, keep: list[object] | None = None
) -> dict[str, Any]:
    """Run the whole preparation; returns the manifest (also written to OUT_DIR/manifest.json).
    A re-run whose key matches OUT_DIR's manifest does nothing and returns it with `up_to_date`.
    One process at a time writes an OUT_DIR (OutDirBusy otherwise). `keep`: the run's tokenizer and template
    are appended to it instead of freed here (a process about to end skips freeing them: cli.entry)."""
    with locked_out_dir(opts), _collecting_less():
        run = begin_run(opts)
        if isinstance(run, dict):
            return run
        if keep is not None:
            keep.append(run)
        return _prepare(opts, run, on_batch)


def _prepare(opts: PrepareOptions, run: RunStart, on_batch: Callable[[int, int], None] | None) -> dict[str, Any]:
    tok, template, key, out = run.tok, run.template, run.key, run.out
    progress = _load_progress(run.tmp, key) if opts.resume else None
    tmp = make_staging(out, (*MARKERS, PROGRESS), keep=progress is not None)
    parts = tmp / PARTS if opts.mixes else tmp
    parts.mkdir(exist_ok=True)
    stats = Stats.from_dict(progress["stats"]) if progress else Stats()
    for _, name in all_files(run.sources):  # every input is in the per-file counts, even an empty one
        stats.touch(name)
    shards = ShardWriter(parts, opts.shard_size, shards=progress["shards"] if progress else None)
    _remove_unlisted_shards(parts, shards.shards)
    rejects = RejectWriter(tmp / "rejects.jsonl", keep_bytes=progress["rejects_bytes"] if progress else 0)
    done = n = progress["batches"] if progress else 0
    mixed: MixResult | None = None
    try:
        if not (progress and progress.get("prepared")):
            preparers = [Preparer(s.opts, tok, template) for s in run.sources]
            n_workers = worker_count(opts.workers, sum(_size(f) for f, _ in all_files(run.sources)))
            results = _results(n_workers, preparers, islice(_batches(run.sources, preparers, opts), done, None))
            gc.freeze()  # the tokenizer's and template's objects, the preparers'
            for n, result in enumerate(results, done + 1):
                _write(result, shards, rejects, opts.strict)
                stats.merge(result.stats)
                if on_batch is not None:
                    on_batch(sum(f.records_read for f in result.stats.files.values()), result.stats.tokens)
                if shards.end_batch():
                    _save_progress(tmp, key, n, shards.shards, rejects.tell(), stats)
            shards.flush()
            if opts.mixes:  # a resume after this point only redoes the mixing
                _save_progress(tmp, key, n, shards.shards, rejects.tell(), stats, prepared=True)
        if opts.mixes:
            remove_outputs(tmp)
            mixed = mix(parts, shards.shards, tmp, run.sources, opts.seed, opts.eval_fraction, opts.eval_sources,
                        opts.mixture_examples, opts.shard_size)  # fmt: skip
    except KeyboardInterrupt:
        rejects.close()
        raise  # keep the staging directory: `--resume` continues from the last closed shard
    except BaseException:
        rejects.close()
        remove_staging(tmp)
        raise
    rejects.close()
    records, split = source_records(stats, run.sources, mixed), eval_record(mixed)
    manifest = build_manifest(opts, tok, template, stats, shards.shards, key, None, records, split, mixed is not None)
    if mixed is not None and (tmp / EVAL_DIR).is_dir():
        write_manifest(tmp / EVAL_DIR, eval_manifest(manifest, mixed))
    write_manifest(tmp, manifest)
    if opts.mixes:
        shutil.rmtree(parts)
    (tmp / PROGRESS).unlink(missing_ok=True)
    replace_dir(tmp, out, MARKERS, WRITTEN)
    return manifest.to_dict()


def _batches(sources: list[RunSource], preparers: list[Preparer], opts: PrepareOptions) -> Iterator[Batch]:
    """Every source's records in batches, tagged with the source (--dedup marks duplicates first, here in the
    main process, so that a resumed run skips the same batches with the same records seen). Without --dedup
    JSONL lines stay unparsed until a batch is prepared (in a worker, with --workers): the same batches."""
    dedup = Deduper() if opts.dedup else None
    for i, (src, preparer) in enumerate(zip(sources, preparers)):
        for f, name in zip(src.files, src.names):
            if dedup is None:
                yield from ((i, lines) for lines in line_batches(f, name, opts.batch_size))
                continue
            records = dedup.mark(read_records(f, name), preparer.conversation)
            for batch in batched(records, opts.batch_size):
                yield i, batch


def _complete(out: Path, manifest: dict[str, Any]) -> bool:
    ok = all((out / name).is_file() for name in manifest.get("shards", []))
    split = manifest.get("eval") or {}
    return ok and all((out / EVAL_DIR / name).is_file() for name in split.get("shards", []))


def _existing_manifest(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _load_progress(tmp: Path, key: str) -> dict[str, Any] | None:
    try:
        progress = json.loads((tmp / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return progress if progress.get("key") == key else None


def _save_progress(
    tmp: Path, key: str, batches: int, shards: list[str], rejects_bytes: int, stats: Stats, prepared: bool = False
) -> None:
    """Atomically record a resumable point: `batches` batches are fully in `shards` and rejects (`prepared`:
    all of them; what is left is the mixing)."""
    data = {"key": key, "batches": batches, "shards": shards, "rejects_bytes": rejects_bytes, "stats": stats.to_dict()}
    data["prepared"] = prepared
    part = tmp / (PROGRESS + ".part")
    part.write_text(json.dumps(data), encoding="utf-8")
    os.replace(part, tmp / PROGRESS)


def _remove_unlisted_shards(tmp: Path, keep: list[str]) -> None:
    for f in tmp.glob("data-*.parquet"):
        if f.name not in keep:
            f.unlink()


def _write(result: BatchResult, shards: ShardWriter, rejects: RejectWriter, strict: bool) -> None:
    if strict and result.rejects:
        raise StrictModeError(result.rejects[0])
    if result.reject_lines:
        rejects.add_lines(result.reject_lines)
    else:
        for r in result.rejects:
            rejects.add(r, r.turn)
    template_vars = result.example_vars or ["{}"] * len(result.examples)
    for (source, line, turn, ids, labels), tv in zip(result.examples, template_vars, strict=True):
        shards.add(ids, labels, source, line, turn, tv)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _results(n: int, preparers: list[Preparer], batches: Iterator[Batch]) -> Iterator[BatchResult]:
    if n == 1:
        yield from _overlapped(preparers, batches)
        return
    ctx = mp.get_context("fork")
    with ctx.Pool(n, initializer=_init_worker, initargs=(preparers,)) as pool:
        pending: deque[Any] = deque()
        for source, batch in batches:  # a bounded window of batches in flight keeps memory flat
            pending.append(pool.apply_async(_run_in_worker, (source, batch)))
            if len(pending) >= 2 * n:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


@contextmanager
def _collecting_less() -> Iterator[None]:
    """A run allocates many short-lived objects that reference counting frees; the cyclic collector's passes
    over the long-lived heap cost ~15% of preparation time (and a full pass over the imported modules ~25 ms
    of a small file's start-up). Freeze what exists (`gc.freeze` again once the tokenizer and template are
    loaded) and collect less often until the run ends."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _overlapped(preparers: list[Preparer], batches: Iterator[Batch]) -> Iterator[BatchResult]:
    """One process: batch k is encoded in a thread (the Rust call releases the GIL) while batch k+1 is
    read and rendered and batch k-1 is written; results come out in order."""
    with ThreadPoolExecutor(1, thread_name_prefix="sftprep-encode") as pool:
        previous: tuple[Preparer, PendingBatch, Future[Encodings]] | None = None
        for source, batch in batches:
            preparer = preparers[source]
            pending = preparer.start(_records(batch))
            encoding = pool.submit(preparer.encode, pending)
            if previous is not None:
                yield previous[0].complete(previous[1], previous[2].result())
            previous = (preparer, pending, encoding)
        if previous is not None:
            yield previous[0].complete(previous[1], previous[2].result())


_WORKERS: list[Preparer] = []


def _init_worker(preparers: list[Preparer]) -> None:
    global _WORKERS
    forget_locks_in_child()  # a worker outliving a killed parent must not keep OUT_DIR locked
    os.environ["RAYON_NUM_THREADS"] = "1"  # one Rust thread per worker process: no oversubscription
    _WORKERS = preparers


def _run_in_worker(source: int, batch: list[RawRecord] | LineBatch) -> BatchResult:
    """A batch prepared in a worker process; its rejects.jsonl lines made here, so the records they quote go
    back to the main process as bytes, not as objects to pickle, unpickle and serialize there."""
    result = _WORKERS[source].run_batch(_records(batch))
    result.reject_lines = [reject_row_line(r, r.turn) for r in result.rejects]
    result.rejects = [replace(r, record=None, raw_text=None) for r in result.rejects]
    return result


def _records(batch: list[RawRecord] | LineBatch) -> list[RawRecord]:
    return batch.records() if isinstance(batch, LineBatch) else batch
