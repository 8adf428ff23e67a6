"""Which examples a report shows, read from the shards, with each token's text and role.

Roles come from re-rendering the source record; the tokenizer and template are loaded once and each source
file is scanned once for all the examples shown (`sftprep inspect` uses the same code for one example).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from sftprep.errors import ConfigError, SftprepError
from sftprep.preparation.manifest import Manifest
from sftprep.types import IGNORE_INDEX

DEFAULT_EXAMPLES = 20


@dataclass
class TokenView:
    id: int
    trained: bool
    text: str
    role: str


def role_at(r: Any, pos: int) -> str:
    """The role of the text at `pos` of a rendered conversation: a trained turn's, a message's, or the template's."""
    for t in r.turns:
        if t.start <= pos < t.end:
            return "assistant"
    for msg, span in zip(r.conversation.messages, r.message_spans):
        if span is not None and span.start <= pos < span.end:
            return msg.role
    return "template"


@dataclass
class ExampleView:
    index: int
    source_file: str
    source_line: int
    turn: int
    tokens: list[TokenView]
    roles_known: bool

    @property
    def n_trained(self) -> int:
        return sum(t.trained for t in self.tokens)


def select_indices(total: int, sample: int | None, indices: list[int] | None, seed: int = 0) -> list[int]:
    """--index I... as given (duplicates dropped); --sample N drawn with `seed`; else the first examples."""
    if sample is not None and indices:
        raise ConfigError("give --sample N or --index I..., not both")
    if indices:
        bad = [i for i in indices if not 0 <= i < total]
        if bad:
            raise ConfigError(f"--index {', '.join(map(str, bad))}: the output has {total} examples (0..{total - 1})")
        return list(dict.fromkeys(indices))
    if sample is not None:
        if sample < 1:
            raise ConfigError(f"--sample {sample}: expected a positive number of examples")
        return sorted(random.Random(seed).sample(range(total), min(sample, total)))
    return list(range(min(DEFAULT_EXAMPLES, total)))


def count_examples(out_dir: Path, shards: list[str]) -> int:
    return sum(pq.ParquetFile(out_dir / name).metadata.num_rows for name in shards)


def read_rows(out_dir: Path, shards: list[str], wanted: list[int]) -> dict[int, dict[str, Any]]:
    """The rows at global indices `wanted`, reading only the row groups that hold them."""
    want = sorted(set(wanted))
    rows: dict[int, dict[str, Any]] = {}
    start = 0
    for name in shards:
        pf = pq.ParquetFile(out_dir / name)
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            local = [i - start for i in want if start <= i < start + n]
            if local:
                table = pf.read_row_group(g).take(local)
                for i, row in zip(local, table.to_pylist()):
                    rows[start + i] = row
            start += n
    return rows


def example_views(
    manifest: Manifest, rows: dict[int, dict[str, Any]], order: list[int], tok: Any, template: Any
) -> list[ExampleView]:
    """Token views of the rows, in `order`, given the run's `components`; tokens are decoded one by one
    where the source record is unavailable (or no longer yields the same example)."""
    opts = manifest.prepare_options()
    named = {f: s.name for s in manifest.sources for f in s.files}
    picked = [rows[i] for i in order]
    prepared = _prepare_sources(opts, tok, template, picked, named) if template is not None else {}
    out = []
    for i in order:
        row = rows[i]
        spans = _spans(prepared.get((row["source_file"], row["source_line"])), row, tok)
        ids, labels = row["input_ids"], row["labels"]
        views = [
            TokenView(t, lab != IGNORE_INDEX, spans[k][0] if spans else _decode(tok, t), spans[k][1] if spans else "")
            for k, (t, lab) in enumerate(zip(ids, labels))
        ]
        out.append(ExampleView(i, row["source_file"], row["source_line"], row["turn"], views, spans is not None))
    return out


def components(manifest: Manifest) -> tuple[Any, Any]:
    """(tokenizer, template) as the run used them (Manifest.components); where the template cannot be rebuilt,
    the recorded tokenizer (or None) and None: the report then shows tokens without roles."""
    try:
        return manifest.components()
    except (SftprepError, OSError):
        try:
            return manifest.load_tokenizer(), None
        except (SftprepError, OSError):
            return None, None


def _decode(tok: Any, token_id: int) -> str:
    return tok.decode([token_id]) if tok is not None else f"⟨{token_id}⟩"


def _prepare_sources(
    opts: Any, tok: Any, template: Any, rows: list[dict[str, Any]], source_of: dict[str, str]
) -> dict[tuple[str, int], Any]:
    """Re-run the pipeline on the source records of `rows`, scanning each source file once, each with its
    source's options (column map, system prompt, ...: `source_of` names the source of a file)."""
    from sftprep.preparation.pipeline import Preparer
    from sftprep.read.records import read_records

    lines: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        lines[row["source_file"]].add(row["source_line"])
    specs = {s.name: s for s in opts.sources}
    out: dict[tuple[str, int], Any] = {}
    for src, wanted in lines.items():
        if not Path(src).exists():
            continue
        raws = []
        try:
            for raw in read_records(src):
                if raw.line in wanted:
                    raws.append(raw)
                    wanted.discard(raw.line)
                    if not wanted:
                        break
        except SftprepError:
            continue
        spec = specs.get(source_of.get(src, ""))
        source_opts = opts.for_source(spec) if spec is not None else opts
        for p in Preparer(source_opts, tok, template).process(raws) if raws else []:
            out[(p.raw.source_file, p.raw.line)] = p
    return out


def _spans(p: Any, row: dict[str, Any], tok: Any) -> list[tuple[str, str]] | None:
    """(text, role) per token of the re-rendered example matching `row`; None if there is none."""
    if p is None:
        return None
    match = [e for e in p.encoded if e.input_ids.tolist() == row["input_ids"]]
    if not match:
        return None
    e = match[0]
    r = e.rendered
    out: list[tuple[str, str]] = []
    for piece, piece_ids in zip(e.pieces, e.piece_ids):
        enc = (tok.encode_batch([r.text[piece.start : piece.end]]) or [None])[0]
        offsets = enc.offsets if enc is not None and len(enc.ids) == len(piece_ids) else None
        for k in range(len(piece_ids)):
            a, b = offsets[k] if offsets else (0, 0)
            # byte-level tokens of one character overlap in offsets: the first shows it, the rest decode (to �)
            shared = offsets is not None and k > 0 and a < offsets[k - 1][1]
            text = r.text[piece.start + a : piece.start + b] if offsets and not shared else ""
            out.append((text or _decode(tok, int(piece_ids[k])), role_at(r, piece.start + a)))
    return out if len(out) == len(row["input_ids"]) else None
