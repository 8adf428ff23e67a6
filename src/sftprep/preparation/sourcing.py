"""The sources of a run and the batches they are read in: each source's files (directories and globs expanded,
checked up front), its options, the optional exact dedup, and the batches every engine and --resume agree on.

A file belongs to one source (`source_file` names it in the output and the manifest). A Parquet, Arrow or CSV
file whose columns match no record shape is refused before the run (its schema is the same for every row),
naming the columns and the `--columns` mapping that reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson

from sftprep.errors import ConfigError, InputError
from sftprep.preparation.options import DEFAULT_SOURCE, PrepareOptions
from sftprep.read.columnar import dataset_dir_files
from sftprep.read.inputs import iter_input_files
from sftprep.read.normalize_conversations import normalize_conversations
from sftprep.read.records import (
    ERR_DUPLICATE,
    MAX_RAW_TEXT,
    RawLine,
    check_input_path,
    iter_raw_lines,
    read_records,
    record_of,
)
from sftprep.read.sniff import sniff_format
from sftprep.read.sources import SourceSpec
from sftprep.types import Conversation, RawRecord, Reject

BATCH_BYTES = 1 << 20  # a batch also ends after this much input: long conversations still spread over workers
_SCHEMA_KINDS = ("parquet", "arrow", "arrow-stream", "csv", "tsv")
T = TypeVar("T")


@dataclass(frozen=True)
class RunSource:
    """One source of a run: its spec, the run's options with its settings, its files and their names."""

    spec: SourceSpec
    opts: PrepareOptions
    files: list[Path]
    names: list[str]  # the source_file of each file's records


def run_sources(opts: PrepareOptions) -> list[RunSource]:
    """Every source's files, expanded and checked (one InputError listing every problem)."""
    out: list[RunSource] = []
    owner: dict[str, str] = {}
    problems: list[str] = []
    for spec in opts.source_list():
        try:
            files = iter_input_files(spec.paths)
        except InputError as exc:
            named = spec.name != DEFAULT_SOURCE
            problems += [f"source {spec.name!r}: {m}" if named else m for m in str(exc).splitlines()]
            continue
        names = [opts.input_names.get(str(f), str(f)) for f in files]
        for name in names:
            if name in owner and owner[name] != spec.name:
                both = f"sources {owner[name]!r} and {spec.name!r}"
                raise ConfigError(f"{name} is in {both}; a file belongs to one source: remove it from one")
            owner[name] = spec.name
        out.append(RunSource(spec, opts.for_source(spec), files, names))
    if problems:
        raise InputError("\n".join(problems))
    return out


def all_files(sources: list[RunSource]) -> list[tuple[Path, str]]:
    return [(f, n) for s in sources for f, n in zip(s.files, s.names)]


def input_sha256(path: Path) -> str:
    """The sha256 of an input file, or of a save_to_disk directory's files (names and contents)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else [path / "state.json", *dataset_dir_files(path)]
    for f in files:
        if len(files) > 1:
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def check_shapes(sources: list[RunSource]) -> None:
    """Refuse a columnar or CSV file whose first row has no known shape under its source's column map."""
    problems = []
    for src in sources:
        for f, name in zip(src.files, src.names):
            if not (f.is_dir() or sniff_format(f) in _SCHEMA_KINDS):
                continue
            first = next((r for r in read_records(f, name) if r.error is None), None)
            if first is None:
                continue
            o = src.opts
            found = normalize_conversations(first, o.format, o.role_map, False, False, o.column_map())
            if isinstance(found, Reject) and found.reason == "unknown_format":
                problems.append(f"{found.message} (every row of {name} has these columns: refused before the run)")
    if problems:
        raise InputError("\n".join(problems))


def batched(it: Iterable[RawRecord], n: int, max_bytes: int = BATCH_BYTES) -> Iterator[list[RawRecord]]:
    """Batches of `n` records, or fewer where they reach `max_bytes` of input (a function of the input only,
    so --resume finds the same batches)."""
    return _batched(it, n, max_bytes, lambda record: record.size)


@dataclass(frozen=True)
class LineBatch:
    """A batch of one file's records as read (JSONL lines unparsed): a worker parses them (`records`), so the
    main process neither parses them nor pickles the parsed objects. The same batches as `batched` gives."""

    source_file: str
    lines: list[RawLine]

    def records(self) -> list[RawRecord]:
        return [record_of(line, self.source_file) for line in self.lines]


def line_batches(path: Path, name: str, n: int, max_bytes: int = BATCH_BYTES) -> Iterator[LineBatch]:
    """`batched(read_records(path, name), n, max_bytes)`, each batch's lines left unparsed (a parsed line's
    `size` is its length in bytes, so the batches end where those do)."""
    for lines in _batched(iter_raw_lines(check_input_path(path), name), n, max_bytes, _line_size):
        yield LineBatch(name, lines)


def _line_size(line: RawLine) -> int:
    raw, record = line[2], line[3]
    return len(raw) if raw is not None else record.size if record is not None else 0


def _batched(it: Iterable[T], n: int, max_bytes: int, size_of: Callable[[T], int]) -> Iterator[list[T]]:
    chunk: list[T] = []
    size = 0
    for record in it:
        chunk.append(record)
        size += size_of(record)
        if len(chunk) >= n or size >= max_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class Deduper:
    """--dedup: a record whose conversation (columns mapped, normalized, the source's system prompt applied)
    an earlier record has becomes a `duplicate` reject naming the first. Runs in the main process, in record
    order, before batches go to workers: the same records are kept whatever the worker count. Memory: one
    entry (~100 bytes) per distinct conversation."""

    def __init__(self) -> None:
        self.first: dict[bytes, tuple[str, int]] = {}

    def mark(self, records: Iterable[RawRecord], conversation: object) -> Iterator[RawRecord]:
        to_conv = conversation  # Preparer.conversation of the records' source
        for r in records:
            if r.error is None:
                conv = to_conv(r)  # type: ignore[operator]
                if isinstance(conv, Conversation):
                    key = conversation_hash(conv)
                    first = self.first.setdefault(key, (r.source_file, r.line))
                    if first != (r.source_file, r.line):
                        r = _duplicate(r, first)
            yield r


def conversation_hash(conv: Conversation) -> bytes:
    """A 16-byte hash of what a conversation renders from (messages, tools, a verbatim prompt/completion)."""
    messages = [
        [m.role, m.content, m.weight, [[c.name, c.arguments, c.id] for c in m.tool_calls], m.reasoning, m.name,
         m.tool_call_id, m.input, m.content_null, m.reasoning_field]
        for m in conv.messages
    ]  # fmt: skip
    payload = [messages, conv.tools, conv.raw_prompt, conv.raw_completion]
    return hashlib.blake2b(orjson.dumps(payload, default=str), digest_size=16).digest()


def _duplicate(r: RawRecord, first: tuple[str, int]) -> RawRecord:
    msg = f"the same conversation as {first[0]}:{first[1]} (after the column map and system prompt)"
    text = json.dumps(r.data, ensure_ascii=False, default=str)[:MAX_RAW_TEXT]
    return RawRecord(r.source_file, r.line, error=msg, error_kind=ERR_DUPLICATE, raw_text=text, size=r.size)
