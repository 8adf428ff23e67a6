"""The Ray Data engine: the local engine's per-batch preparation (`Preparer.run_batch`) mapped over a
`ray.data.Dataset`, so a run scales to a Ray cluster with no machinery of sftprep's own.

`prepare_ray` gives `sftprep.preparation.run.prepare`'s OUT_DIR (same Parquet bytes and rejects.jsonl; the manifest adds
`"engine": "ray"`): read tasks on the driver's node read the files (one per file, streaming, exact line
numbers), actors anywhere parse and prepare the records (tokenizer and template loaded once per actor), the
driver writes results in record order. Every node needs the same sftprep and tokenizer/template files at the
same paths (checked). `map_prepare` is the same preparation as a step of your own pipeline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sftprep import __version__
from sftprep.errors import ConfigError, StrictModeError
from sftprep.outdir import make_staging, remove_staging, replace_dir
from sftprep.preparation.manifest import build_manifest, write_manifest
from sftprep.preparation.mixture import source_records
from sftprep.preparation.options import PrepareOptions
from sftprep.preparation.output import SCHEMA, RejectWriter, ShardWriter
from sftprep.preparation.pipeline import BatchResult, Preparer, load_components
from sftprep.preparation.run import BATCH_BYTES, MARKERS, WRITTEN, RunStart, begin_run, locked_out_dir, worker_count
from sftprep.preparation.stats import Stats
from sftprep.read.records import RawLine, iter_input_files, iter_raw_lines, parse_line
from sftprep.templates.base import template_sha256
from sftprep.types import RawRecord, Reject

try:  # Ray is optional: pip install "ray[data]"
    import ray
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask
except ImportError:  # pragma: no cover - exercised only without Ray
    ray = None  # type: ignore[assignment]
    Datasource = object  # type: ignore[assignment,misc]

# Rows of raw records, the input of `map_prepare`. `source_file` and `line` (1-based) are required, plus
# one of: `text` (one JSON record, as a JSONL line), `raw` (the line's bytes as in the file, UTF-8 errors
# become bad_encoding rejects; `offset`: its byte offset, for that message) or `parsed` (a pickled
# RawRecord: JSON-array elements, which the reader parses whole). Consecutive rows with the same `batch`
# are prepared together (without `batch`: each Ray batch of opts.batch_size rows).
_STR, _INT, _BIN = pa.string(), pa.int64(), pa.binary()
RAW_SCHEMA = pa.schema([("source_file", _STR), ("line", _INT), ("offset", _INT), ("raw", _BIN), ("parsed", _BIN)])
RAW_SCHEMA = RAW_SCHEMA.append(pa.field("batch", _INT))
# Rows `map_prepare` returns: `kind` "example" (the OUT_DIR columns set), "reject" (`reject`: the Reject
# as JSON, `source_file`/`source_line` set) or "stats" (`stats`: one batch's counts, Stats.to_dict JSON).
OUT_SCHEMA = pa.schema([("kind", _STR), ("batch", _INT), *SCHEMA, ("reject", _STR), ("stats", _STR)])
EXAMPLE, REJECT, STATS = "example", "reject", "stats"
BLOCK_BYTES = 1 << 20  # Ray's default (128 MiB) would make a block, one actor's work, of a whole file
_FILE_SHIFT = 32  # batch key of prepare_ray's reader: file index << 32 | batch index in the file

RawRow = RawLine  # line, offset, raw line bytes | parsed record
_AUTH_HINT = "on a cluster node use `auto`; HOST:PORT with token auth needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN"


def require_ray() -> None:
    if ray is None:
        raise ConfigError('--engine ray needs Ray: pip install "ray[data]"')


def prepare_ray(
    opts: PrepareOptions, ray_address: str | None = None, on_batch: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """`sftprep.preparation.run.prepare` on Ray: same OUT_DIR (+ "engine": "ray" in the manifest), up-to-date
    and --overwrite rules, staging directory and rename. `ray_address`: a running cluster ("auto",
    "HOST:6379"); None: a local instance of `opts.workers` CPUs (0: all) for the run. An initialized Ray is
    used as is. No --resume."""
    require_ray()
    opts.validate()
    if opts.resume:
        raise ConfigError("--resume is not supported with --engine ray: re-run without it (the run starts over)")
    if opts.mixes or opts.dedup or len(opts.sources) > 1:
        raise ConfigError(
            "--engine ray prepares the records of one source: sampling, an eval split, --dedup and several sources "
            "need the local engine (drop --engine ray); input formats, --columns and --tags work with both"
        )
    with locked_out_dir(opts):
        run = begin_run(opts)
        if isinstance(run, dict):
            return run
        return _prepare_ray(opts, run, ray_address, on_batch)


def _prepare_ray(
    opts: PrepareOptions, run: RunStart, ray_address: str | None, on_batch: Callable[[int, int], None] | None
) -> dict[str, Any]:
    files, tok, template, key, out = run.files, run.tok, run.template, run.key, run.out
    tmp = make_staging(out, MARKERS)  # replaces a staging directory an interrupted run left
    try:
        with ray_session(ray_address, worker_count(opts.workers)):
            named = [(f, n) for s in run.sources for f, n in zip(s.files, s.names)]
            prepared = _map(read_inputs(files, opts.batch_size, named), opts, _fingerprint(tok, template), True)
            stats, shards = _write_all(prepared, tmp, opts, [n for _, n in named], on_batch)
    except BaseException:
        remove_staging(tmp)
        raise
    records = source_records(stats, run.sources, None)
    manifest = build_manifest(opts, tok, template, stats, shards, key, engine="ray", sources=records)
    write_manifest(tmp, manifest)
    replace_dir(tmp, out, MARKERS, WRITTEN)
    return manifest.to_dict()


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int) -> Iterator[None]:
    """Connect to `address`, or start a local instance; disconnect/shut down only what was started here."""
    if ray.is_initialized():
        yield
        return
    where = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
    try:
        ray.init(**where, log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        if not address:
            raise
        raise ConfigError(f"--ray-address {address}: cannot connect to the Ray cluster ({exc}); {_AUTH_HINT}") from exc
    try:
        yield
    finally:
        ray.shutdown()


def read_inputs(
    paths: Sequence[str | Path], batch_size: int = 1000, named: list[tuple[Path, str]] | None = None
) -> ray.data.Dataset:
    """The files as RAW_SCHEMA rows in record order (batch keys as the local engine batches). Reads take no
    CPU, so they run on a head started with --num-cpus=0 and are not fused with (and pin) the actors.
    `named`: the files and the source_file of their records (default: `paths` expanded, named by path)."""
    named = named if named is not None else [(f, str(f)) for f in iter_input_files(paths)]
    raw = ray.data.read_datasource(InputFiles(named, batch_size), num_cpus=0, concurrency=min(2, len(named)))
    raw.context.execution_options.preserve_order = True  # the context is shared by the datasets derived from it
    raw.context.enable_progress_bars = False
    raw.context.target_max_block_size = BLOCK_BYTES  # many small blocks: the unit of parallelism
    return raw


def _write_all(
    prepared: Any, tmp: Path, opts: PrepareOptions, names: list[str], on_batch: Any
) -> tuple[Stats, list[str]]:
    sink = _Sink(ShardWriter(tmp, opts.shard_size), RejectWriter(tmp / "rejects.jsonl"), opts.strict, on_batch)
    for name in names:  # every input is in the per-file counts, even an empty one (as run.prepare does)
        sink.stats.touch(name)
    try:
        for table in prepared.iter_batches(batch_format="pyarrow", batch_size=None):
            sink.take(table)
        if sink.batch is not None:
            sink.shards.end_batch()
        sink.shards.flush()
    finally:
        sink.rejects.close()
    return sink.stats, sink.shards.shards


class _Sink:
    """Writes rows in record order as run.prepare does: `end_batch` after each batch (same shard cuts)."""

    def __init__(self, shards: ShardWriter, rejects: RejectWriter, strict: bool, on_batch: Any) -> None:
        self.shards, self.rejects, self.strict = shards, rejects, strict
        self.on_batch = on_batch or (lambda records, tokens: None)
        self.stats = Stats()
        self.batch: int | None = None

    def take(self, table: pa.Table) -> None:
        col = {name: table.column(name).to_pylist() for name in ("kind", "batch", "source_file", "source_line")}
        ids, labels = _rows_of(table.column("input_ids")), _rows_of(table.column("labels"))
        turns, tvars, rejects, stats = (table.column(n).to_pylist() for n in ("turn", "template_vars", REJECT, STATS))
        for i, kind in enumerate(col["kind"]):
            self._enter(col["batch"][i])
            if kind == EXAMPLE:
                source, line = col["source_file"][i], col["source_line"][i]
                self.shards.add(ids(i), labels(i), source, line, turns[i], tvars[i])
            elif kind == REJECT and self.strict:
                raise StrictModeError(reject_from_json(rejects[i]))
            elif kind == REJECT:
                r = reject_from_json(rejects[i])
                self.rejects.add(r, r.turn)
            else:
                counts = Stats.from_dict(json.loads(stats[i]))
                self.stats.merge(counts)
                self.on_batch(counts.records_read, counts.tokens)

    def _enter(self, batch: int) -> None:
        if batch == self.batch:
            return
        if self.batch is not None:
            if batch < self.batch:
                raise AssertionError(f"Ray returned batch {batch} after batch {self.batch}: order was not kept")
            self.shards.end_batch()
        self.batch = batch


def _rows_of(column: pa.ChunkedArray) -> Callable[[int], np.ndarray]:  # row i of a list column, a numpy view
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets, values = arr.offsets.to_numpy(), arr.values.to_numpy(zero_copy_only=False)
    return lambda i: values[offsets[i] : offsets[i + 1]]


class InputFiles(Datasource):
    """The input files: one read task per file, on the driver's node (where the files are), yielding a
    RAW_SCHEMA block per `batch_size` records (the local engine's batches); see `raw_rows`."""

    def __init__(self, files: list[tuple[Path, str]], batch_size: int) -> None:
        super().__init__()
        self.files, self.batch_size = files, batch_size  # (path, the source_file of its records)

    @property
    def supports_distributed_reads(self) -> bool:
        return False

    def estimate_inmemory_data_size(self) -> int:
        return sum(f.stat().st_size for f, _ in self.files)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None) -> list:
        return [
            ReadTask(
                partial(read_blocks, str(f.resolve()), name, i, self.batch_size),
                BlockMetadata(num_rows=None, size_bytes=f.stat().st_size, exec_stats=None, input_files=[str(f)]),
                schema=RAW_SCHEMA,
                per_task_row_limit=per_task_row_limit,
            )
            for i, (f, name) in enumerate(self.files)
        ]


def read_blocks(path: str, source: str, file_index: int, batch_size: int) -> Iterator[pa.Table]:
    """One file as RAW_SCHEMA tables of `batch_size` records; `source` is the name records carry."""
    rows: list[RawRow] = []
    batch = file_index << _FILE_SHIFT
    size = 0
    for row in raw_rows(Path(path), source):
        rows.append(row)
        size += len(row[2]) if row[2] is not None else row[3].size if row[3] is not None else 0  # as run.batched
        if len(rows) == batch_size or size >= BATCH_BYTES:
            yield _raw_table(source, batch, rows)
            rows, batch, size = [], batch + 1, 0
    if rows:
        yield _raw_table(source, batch, rows)


def _raw_table(source: str, batch: int, rows: list[RawRow]) -> pa.Table:
    lines, offsets, raws, parsed = zip(*rows)
    pickled = [None if r is None else pickle.dumps(r) for r in parsed]
    columns = [[source] * len(rows), lines, offsets, raws, pickled, [batch] * len(rows)]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, RAW_SCHEMA)], schema=RAW_SCHEMA)


def raw_rows(path: Path, source: str) -> Iterator[RawRow]:
    """read_records' walk over a file, JSONL lines unparsed (parsed on the workers: `raw_record`)."""
    return iter_raw_lines(path, source)


def raw_record(row: dict[str, Any]) -> RawRecord:
    """A RAW_SCHEMA row (or a `text` row) -> the RawRecord records.read_records makes of that line."""
    if row.get("parsed") is not None:
        return pickle.loads(row["parsed"])
    raw = row.get("raw")
    if raw is None:
        text = row["text"]
        raw = (text if text.endswith("\n") else text + "\n").encode("utf-8", "surrogatepass")
    return parse_line(raw, int(row["line"]), int(row.get("offset") or 0), row["source_file"])


def map_prepare(ds: ray.data.Dataset, opts: PrepareOptions, *, concurrency: int | None = None) -> ray.data.Dataset:
    """Prepare a Dataset of raw records (RAW_SCHEMA rows, or {"source_file", "line", "text"}) with the
    local engine's per-batch pipeline, in actors that load the tokenizer and template once. Returns
    OUT_SCHEMA rows (`kind` example | reject | stats), in no particular order unless the dataset's
    context has `execution_options.preserve_order`; `split_prepared` separates them. `concurrency`: a
    fixed number of actors (default: an autoscaling pool)."""
    require_ray()
    opts.validate()
    tok, template = load_components(opts)  # bad tokenizer/template options fail here, on the driver
    return _map(ds, opts, _fingerprint(tok, template), actors=concurrency)


def _map(ds: Any, opts: PrepareOptions, expect: dict[str, str], whole_blocks: bool = False, actors: Any = None) -> Any:
    """`whole_blocks`: one call per block (prepare_ray's reader makes a block per batch of records)."""
    return ds.map_batches(
        PrepareBatches,
        fn_constructor_args=(_portable(opts), expect),
        batch_size=None if whole_blocks else opts.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors) if actors else None,
        num_cpus=1,
    )


class PrepareBatches:
    """A Ray actor's callable: builds the Preparer once (checking it matches the driver's), then turns
    RAW_SCHEMA tables into OUT_SCHEMA tables, one `run_batch` per run of rows with the same `batch`."""

    def __init__(self, opts: PrepareOptions, expect: dict[str, str]) -> None:
        os.environ["RAYON_NUM_THREADS"] = "1"  # one CPU per actor: no Rust thread oversubscription
        tok, template = load_components(opts)
        found = _fingerprint(tok, template)
        if found != expect:
            raise ConfigError(
                f"a Ray worker loaded {found}, the driver {expect}: install the same sftprep on every node "
                "and make the tokenizer and template files identical at the same paths"
            )
        self.preparer = Preparer(opts, tok, template)

    def __call__(self, table: pa.Table) -> pa.Table:
        parts = []
        for batch, rows in groupby(table.to_pylist(), key=lambda row: row.get("batch")):
            parts.append((batch, self.preparer.run_batch([raw_record(row) for row in rows])))
        return result_table(parts)


def result_table(parts: list[tuple[int | None, BatchResult]]) -> pa.Table:
    """BatchResults -> OUT_SCHEMA rows: per batch its stats row, its rejects, then its examples."""
    rows: list[tuple[Any, ...]] = []  # in OUT_SCHEMA order: kind, batch, *SCHEMA, reject, stats
    for batch, res in parts:
        rows.append((STATS, batch, None, None, None, None, None, None, None, json.dumps(res.stats.to_dict())))
        rows += [
            (REJECT, batch, None, None, r.source_file, r.line, None, None, reject_to_json(r), None) for r in res.rejects
        ]
        tvars = res.example_vars or ["{}"] * len(res.examples)
        rows += [
            (EXAMPLE, batch, ids, labels, f, n, turn, tv, None, None)
            for (f, n, turn, ids, labels), tv in zip(res.examples, tvars, strict=True)
        ]
    cols = list(zip(*rows)) if rows else [[] for _ in OUT_SCHEMA]
    arrays = [_lists(c) if pa.types.is_list(f.type) else pa.array(c, f.type) for c, f in zip(cols, OUT_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=OUT_SCHEMA)


def _lists(rows: Sequence[np.ndarray | None]) -> pa.ListArray:
    lengths = np.fromiter((0 if r is None else len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = [r for r in rows if r is not None]
    values = np.concatenate(present).astype(np.int32, copy=False) if present else np.zeros(0, np.int32)
    mask = pa.array([r is None for r in rows], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=mask)


def reject_to_json(r: Reject) -> str:
    return json.dumps(dataclasses.asdict(r), ensure_ascii=False, allow_nan=True)


def reject_from_json(text: str) -> Reject:
    return Reject(**json.loads(text))


def split_prepared(prepared: ray.data.Dataset) -> tuple[ray.data.Dataset, list[Reject], Stats]:
    """Run `map_prepare`'s output once: (examples as a Dataset of the OUT_DIR columns, the rejects, the
    summed counts). Examples and rejects are in no guaranteed order: sort them if order matters."""
    done = prepared.materialize()
    examples = done.map_batches(_keep, fn_args=(True,), batch_format="pyarrow", batch_size=None)
    side = done.map_batches(_keep, fn_args=(False,), batch_format="pyarrow", batch_size=None).take_all()
    stats = Stats()
    for row in (r for r in side if r["kind"] == STATS):
        stats.merge(Stats.from_dict(json.loads(row[STATS])))
    rejects = [reject_from_json(row[REJECT]) for row in side if row["kind"] == REJECT]
    return examples.select_columns(SCHEMA.names), rejects, stats


def _keep(table: pa.Table, examples: bool) -> pa.Table:
    is_example = pc.equal(table.column("kind"), EXAMPLE)
    return table.filter(is_example if examples else pc.invert(is_example))


def _fingerprint(tok: Any, template: Any) -> dict[str, str]:
    t = template_sha256(template)  # `loader`: the tokenizer's backend (tokenizers, transformers)
    return {"sftprep": __version__, "tokenizer": tok.sha256, "loader": str(getattr(tok, "loader", "")), "template": t}


def _portable(opts: PrepareOptions) -> PrepareOptions:
    """The options with tokenizer/template paths made absolute: Ray workers do not share the driver's cwd."""
    paths = {name: getattr(opts, name) for name in ("tokenizer", "template")}
    return dataclasses.replace(opts, **{k: str(Path(v).resolve()) for k, v in paths.items() if v and Path(v).exists()})
