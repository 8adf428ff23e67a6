"""The manifest of a prepared OUT_DIR: a run's counts with every option, the tokenizer, the template and the
input hashes. This module alone writes and reads manifest.json (`Manifest`); the report, `inspect` and `train`
use the typed model, and `Manifest.components()` is the one way to rebuild the tokenizer and the exact template
a run used (the template from its recorded text, checked by its sha256; never looked up by name again).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from sftprep import __version__
from sftprep.errors import ConfigError
from sftprep.preparation.stats import Stats
from sftprep.templates.base import ChatTemplate, RenderOptions, template_sha256
from sftprep.templates.jinja_template import JinjaTemplate
from sftprep.templates.spec import SpecTemplate, TemplateSpec
from sftprep.tokenize.tokenizer import BPETokenizer

if TYPE_CHECKING:
    from sftprep.preparation.options import PrepareOptions

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TokenizerRecord:
    path: str
    sha256: str
    loader: str = "tokenizers"
    tiktoken_fast_path: bool = False  # tiktoken stood in for HF where it gives the same ids (tokenize/fast_bpe.py)
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    pad_id: int | None = None
    vocab_size: int = 0


@dataclass(frozen=True)
class TemplateRecord:
    name: str
    sha256: str
    text: str
    end_of_turn: str | None = None  # the stop a plain turn ends with (its marker, or the next header)
    end_of_turn_is_token: bool = True  # one token of the tokenizer (else generation would not stop on it)
    # the template's markers the tokenizer lacks, and the `sftprep tokenizer add-tokens` command that adds them
    missing_markers_hint: str | None = None


@dataclass(frozen=True)
class SourceRecord:
    """One source of the run: what was read, rejected and prepared, and what the output holds of it.
    `examples`, `tokens`, `trainable_tokens`: in OUT_DIR (repeats counted); `requested_ratio` / `realised_ratio`:
    its share of OUT_DIR's examples as its sampling asks (before rounding) and as written."""

    name: str
    files: list[str]
    sampling: dict[str, float] | None = None  # {"weight": 3} | {"examples": n} | {"epochs": e}; None: all once
    records_read: int = 0
    records_rejected: int = 0
    duplicates: int = 0
    filtered: int = 0
    records_with_examples: int = 0
    examples_prepared: int = 0
    eval_records: int = 0
    eval_examples: int = 0
    records_in_output: int = 0
    records_not_sampled: int = 0  # records with examples of which none was drawn (and not held out)
    examples: int = 0
    tokens: int = 0
    trainable_tokens: int = 0
    requested_ratio: float = 0.0
    realised_ratio: float = 0.0


@dataclass(frozen=True)
class EvalRecord:
    """The eval split of a run: held-out records and their examples, in OUT_DIR/`dir` (its own manifest)."""

    dir: str = "eval"
    records: int = 0
    examples: int = 0
    shards: list[str] = field(default_factory=list)


_LAST = ("sources", "eval", "shards", "tokenizer", "template", "options")  # written after the counts


@dataclass
class Manifest:
    tokenizer: TokenizerRecord
    template: TemplateRecord
    options: dict[str, Any]
    shards: list[str] = field(default_factory=list)
    sftprep_version: str = __version__
    cache_key: str = ""
    records_read: int = 0
    examples_written: int = 0
    records_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    examples_dropped_by_reason: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    trainable_tokens: int = 0
    truncated: int = 0
    straddling_tokens: int = 0
    split_for_tokenization: int = 0
    split_conversations: int = 0
    special_tokens_in_content: int = 0
    generation_tag_disagreements: int = 0
    reasoning_not_rendered: int = 0
    turns: dict[str, int] = field(default_factory=dict)  # per trained turn: mode:*, stop:*, content dropped
    turns_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    per_file: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples_prepared: int = 0  # before sampling and the eval split (= examples_written without them)
    split: str | None = None  # "eval" for OUT_DIR/eval
    sources: list[SourceRecord] = field(default_factory=list)
    eval: EvalRecord | None = None  # with an eval split
    engine: str | None = None  # "ray" when the Ray engine wrote it

    # -- the JSON form ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        counts = [f.name for f in dataclasses.fields(self) if f.name not in _LAST and f.name != "engine"]
        out = {k: d[k] for k in counts if k != "split" or self.split is not None}
        if self.engine is not None:
            out["engine"] = self.engine
        return {**out, **{k: d[k] for k in _LAST}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)}
        tok = _record(TokenizerRecord, d.get("tokenizer") or {})
        template = _record(TemplateRecord, d.get("template") or {})
        rest = {k: v for k, v in d.items() if k in known and k not in ("tokenizer", "template", "sources", "eval")}
        sources = [_record(SourceRecord, s) for s in d.get("sources") or [] if isinstance(s, dict)]
        split = _record(EvalRecord, d["eval"]) if isinstance(d.get("eval"), dict) else None
        return cls(tokenizer=tok, template=template, sources=sources, eval=split, **{"options": {}, **rest})

    # -- what the run used ------------------------------------------------------------------------
    def prepare_options(self, **overrides: Any) -> PrepareOptions:
        from sftprep.preparation.options import PrepareOptions

        known = {f.name for f in dataclasses.fields(PrepareOptions)}
        values = {k: v for k, v in self.options.items() if k in known}
        return PrepareOptions(**{"inputs": [], **values, **overrides})

    def load_tokenizer(self) -> BPETokenizer:
        """The tokenizer the run used: from its recorded path, checked by its sha256."""
        rec = self.tokenizer
        try:
            tok = BPETokenizer.load(rec.path)
        except ConfigError as e:
            tok = BPETokenizer.load(None)  # the embedded default, if that is what it was (an installation moved)
            if tok.sha256 != rec.sha256:
                raise ConfigError(f"cannot load the tokenizer recorded in the manifest: {e}") from e
        if rec.sha256 and tok.sha256 != rec.sha256:
            raise ConfigError(
                f"the tokenizer at {tok.path} is not the one the data was prepared with (its sha256 changed); "
                "fix: prepare the data again with it"
            )
        return tok

    def render_options(self, tok: BPETokenizer) -> RenderOptions:
        return self.prepare_options().render_options(tok)

    def components(self) -> tuple[BPETokenizer, ChatTemplate]:
        """The tokenizer and the exact template the run used."""
        tok = self.load_tokenizer()
        return tok, template_from_record(dataclasses.asdict(self.template), tok)


def _record(cls: Any, d: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})


def template_from_record(record: dict[str, Any], tok: BPETokenizer) -> ChatTemplate:
    """Rebuild the exact template from a recorded {name, sha256, text} (no lookup by name)."""
    text, name = record["text"], record.get("name", "template")
    template: ChatTemplate
    spec = _as_spec(text)
    if spec is not None:
        template = SpecTemplate(spec)
    else:
        template = JinjaTemplate(text, name=name, special_tokens=tok.added_tokens)
    if record.get("sha256") and template_sha256(template) != record["sha256"]:
        raise ConfigError(f"template {name!r}: its text does not match the recorded sha256")
    return template


def _as_spec(text: str) -> TemplateSpec | None:
    """A built-in spec when the recorded template text is one (its JSON), else None."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    known = {f.name for f in dataclasses.fields(TemplateSpec)}
    if not isinstance(data, dict) or "name" not in data or not set(data) <= known:
        return None
    return TemplateSpec(**{**data, "markers": tuple(data.get("markers", ()))})


# -- writing and reading ---------------------------------------------------------------------------


def build_manifest(
    opts: PrepareOptions,
    tok: BPETokenizer,
    template: ChatTemplate,
    stats: Stats,
    shards: list[str],
    cache_key: str = "",
    engine: str | None = None,
    sources: list[SourceRecord] | None = None,
    eval_split: EvalRecord | None = None,
    mixed: bool = False,
) -> Manifest:
    """The manifest of a run. `sources`: per-source records; `mixed`: OUT_DIR holds a sample of the prepared
    examples (sampling or an eval split): its counts are the sources' `examples`/`tokens`, not `stats`'."""
    unreconciled = [name for name, f in stats.files.items() if not f.reconciled]
    if unreconciled:  # a bug, never bad input: fail loudly
        raise AssertionError(f"records do not reconcile for {unreconciled}: {stats.files}")
    ropts = RenderOptions(
        bos_token=tok.bos_token or "",
        eos_token=tok.eos_token or "",
        template_vars=opts.template_vars,
        special_tokens_map=tok.special_tokens_map,
    )
    marker = template.end_of_turn(ropts)
    records = sources or []
    written = sum(r.examples for r in records) if mixed else stats.examples
    return Manifest(
        tokenizer=TokenizerRecord(
            path=tok.path,
            sha256=tok.sha256,
            loader=tok.loader,
            tiktoken_fast_path=tok.fast is not None,
            bos_token=tok.bos_token,
            eos_token=tok.eos_token,
            pad_token=tok.pad_token,
            pad_id=tok.pad_id,
            vocab_size=tok.vocab_size,
        ),
        template=TemplateRecord(
            name=template.name,
            sha256=template_sha256(template),
            text=template.source_text,
            end_of_turn=marker,
            end_of_turn_is_token=marker is None or tok.token_to_id(marker) is not None,
            missing_markers_hint=_markers_hint(opts, tok),
        ),
        options=opts.recorded(),
        shards=list(shards),
        cache_key=cache_key,
        records_read=stats.records_read,
        examples_written=written,
        records_rejected=stats.records_rejected,
        rejected_by_reason=dict(sorted(stats.rejected_by_reason.items())),
        examples_dropped_by_reason=dict(sorted(stats.dropped_examples.items())),
        tokens=sum(r.tokens for r in records) if mixed else stats.tokens,
        trainable_tokens=sum(r.trainable_tokens for r in records) if mixed else stats.trainable_tokens,
        truncated=stats.truncated,
        straddling_tokens=stats.boundary_merges,
        split_for_tokenization=stats.split_for_tokenization,
        split_conversations=stats.split_conversations,
        special_tokens_in_content=stats.special_tokens_in_content,
        generation_tag_disagreements=stats.generation_tag_disagreements,
        reasoning_not_rendered=stats.reasoning_not_rendered,
        turns=dict(sorted(stats.turns.items())),
        turns_rejected_by_reason=dict(sorted(stats.turns_rejected_by_reason.items())),
        per_file={name: {**f.__dict__, "reconciled": f.reconciled} for name, f in sorted(stats.files.items())},
        examples_prepared=stats.examples,
        sources=records,
        eval=eval_split,
        engine=engine,
    )


def _markers_hint(opts: PrepareOptions, tok: BPETokenizer) -> str | None:
    """For a built-in or file template: the add-tokens command when the tokenizer lacks its markers."""
    from sftprep.tokenize.add_tokens import missing_markers_hint

    template = opts.template or (None if tok.chat_template is not None else tok.default_template or "chatml")
    return missing_markers_hint(tok, template, opts.tokenizer) if template else None


def write_manifest(out_dir: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    (out_dir / MANIFEST).write_text(text, "utf-8")


def read_manifest(out_dir: str | Path) -> Manifest:
    """OUT_DIR's manifest (ConfigError naming the problem when there is none or it is not sftprep's)."""
    path = Path(out_dir) / MANIFEST
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{out_dir}: no {MANIFEST}; give a directory written by `sftprep prepare`") from e
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot be read as a manifest ({e})") from e
    if not isinstance(data, dict) or "shards" not in data or "tokenizer" not in data:
        raise ConfigError(f"{path}: not a manifest written by `sftprep prepare`")
    return Manifest.from_dict(data)


_WRITTEN_BY = "expected a directory written by `sftprep prepare INPUT... -o DIR`"


def open_out_dir(out_dir: Path | str) -> tuple[Path, Manifest]:
    """OUT_DIR and its manifest, checked: a directory whose manifest.json reads and lists shards that exist.
    Else ConfigError naming what is wrong."""
    p = Path(out_dir)
    if not p.exists():
        raise ConfigError(f"{p} does not exist; {_WRITTEN_BY}, e.g. sftprep prepare data.jsonl -o {p}")
    if not p.is_dir():
        raise ConfigError(f"{p} is a file; {_WRITTEN_BY}")
    if not (p / "manifest.json").is_file():
        if any(p.glob("*.parquet")) or (p / "progress.json").is_file():
            why = "the run that wrote it did not finish: prepare it again"
        else:
            why = _WRITTEN_BY
        raise ConfigError(f"{p}: no manifest.json; {why}")
    damaged = f"{p} is damaged: prepare it again (sftprep prepare ... -o {p} --overwrite)"
    try:
        data = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p / 'manifest.json'} cannot be read ({e}); {damaged}") from e
    keys = ("shards", "examples_written", "records_read")
    if not isinstance(data, dict) or not all(k in data for k in keys):
        raise ConfigError(f"{p / 'manifest.json'} is not an sftprep manifest (no {', '.join(keys)}); {damaged}")
    manifest = Manifest.from_dict(data)
    missing = [s for s in manifest.shards if not (p / str(s)).is_file()]
    if missing:
        raise ConfigError(f"{p}: {', '.join(map(str, missing))} listed in manifest.json is missing; {damaged}")
    for shard in manifest.shards:
        try:
            pq.ParquetFile(p / str(shard)).close()  # reads the footer only
        except (OSError, pa.ArrowException) as e:
            raise ConfigError(f"{p / str(shard)} is not a readable Parquet file ({e}); {damaged}") from e
    return p, manifest
