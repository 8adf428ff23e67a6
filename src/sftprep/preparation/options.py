"""Options of `prepare`, shared by the CLI, the data config file and the Python API: one field per flag and
per config key (`--max-length` / `max_length`), validated once at the edge (modes are Literals)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from sftprep.errors import ConfigError
from sftprep.read.columns import ColumnMap
from sftprep.read.sources import SourceSpec, check_sources, source_from_dict
from sftprep.templates.base import RenderOptions
from sftprep.types import (
    FORMATS,
    MASKS,
    REASONING_MODES,
    SYSTEM_POLICIES,
    TRUNCATIONS,
    FormatName,
    MaskMode,
    ReasoningMode,
    SystemPolicy,
    TruncationMode,
)

# --reasoning-mode (templates/modes.py): auto: the default variables, else the template's own switch variable
# that makes the turn consistent; thinking / non-thinking: only settings in which the template renders / does
# not render reasoning; reject: the default variables only.

DEFAULT_SOURCE = "inputs"  # the name of the one source a run of plain input paths has

if TYPE_CHECKING:
    from sftprep.tokenize.tokenizer import BPETokenizer


@dataclass
class PrepareOptions:
    inputs: list[str] = field(default_factory=list)
    out_dir: str = "out"
    tokenizer: str | None = None
    template: str | None = None
    template_name: str | None = None
    template_vars: dict[str, Any] = field(default_factory=dict)
    format: FormatName = "auto"
    columns: dict[str, str] = field(default_factory=dict)  # sftprep field -> the data's column (read/columns.py)
    tags: dict[str, str] = field(default_factory=dict)  # LLaMA-Factory message tags (role_tag, content_tag, ...)
    role_map: dict[str, str] = field(default_factory=dict)
    merge_consecutive: bool = False
    system_prompt: str | None = None
    system_policy: SystemPolicy = "if-missing"
    mask: MaskMode = "assistant"
    train_on_eos: bool = True
    train_reasoning: bool = True
    train_tool_calls: bool = True
    max_length: int | None = None
    truncation: TruncationMode = "drop"
    strict: bool = False
    shard_size: int = 50_000
    batch_size: int = 1_000
    overwrite: bool = False
    workers: int = 1
    max_chars: int = 8_000_000  # a rendered conversation longer than this is rejected (memory guard)
    resume: bool = False
    reasoning_mode: ReasoningMode = "auto"
    require_user_turn: bool = False  # reject [system, assistant] conversations (trained by default)
    train_marker_only: bool = False  # emit turns whose trained text is only the end-of-turn marker
    render_timeout: float = 10.0  # seconds one record's renders may take before it is rejected
    # -- a mixture of sources (a data config, --dataset-info), filters, an eval split
    sources: list[SourceSpec] = field(default_factory=list)
    seed: int = 0  # sampling and the eval split
    eval_fraction: float | None = None  # records held out per source (whole records: all their examples)
    eval_sources: list[str] = field(default_factory=list)  # sources held out whole
    mixture_examples: int | None = None  # examples drawn from the weighted sources (default: none repeated)
    dedup: bool = False  # drop a record whose normalized conversation an earlier record has
    min_trainable_tokens: int | None = None  # drop examples with fewer trained tokens
    max_trainable_tokens: int | None = None  # drop examples with more trained tokens
    only_mapped_columns: bool = False  # read only the mapped columns (set per LLaMA-Factory source)
    input_names: dict[str, str] = field(default_factory=dict)  # input path -> its source_file (Python objects)

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, SourceSpec) else source_from_dict(s, f"sources[{i}]")
                        for i, s in enumerate(self.sources)]  # fmt: skip

    def validate(self) -> None:
        choices = {
            "format": FORMATS,
            "system_policy": SYSTEM_POLICIES,
            "mask": MASKS,
            "truncation": TRUNCATIONS,
            "reasoning_mode": REASONING_MODES,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {value!r}: expected one of {', '.join(allowed)}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"--max-length {self.max_length}: expected a positive number of tokens")
        if self.shard_size < 1 or self.batch_size < 1:
            raise ConfigError(f"--shard-size {self.shard_size}: expected a positive number of examples")
        if not self.render_timeout > 0:
            raise ConfigError(f"--render-timeout {self.render_timeout}: expected a positive number of seconds")
        self.column_map()
        self._validate_mixture()
        if not self.inputs and not self.sources:
            raise ConfigError(
                "no input files given: sftprep prepare INPUT... (JSONL, JSON, CSV, Parquet, Arrow, a directory or "
                "a glob), or --config data.yaml with sources, or --dataset-info dataset_info.json --dataset NAME"
            )

    def _validate_mixture(self) -> None:
        if self.inputs and self.sources:
            raise ConfigError(
                "input paths and sources given together; fix: list the paths as a source of the config "
                "(sources: [{name: ..., paths: [...]}]) or drop the sources"
            )
        if self.eval_sources and not self.sources:
            raise ConfigError("--eval-sources needs named sources (a data config or --dataset-info)")
        check_sources(self.sources, self.eval_sources)
        if self.eval_fraction is not None:
            if self.eval_sources:
                raise ConfigError("eval: give a fraction or sources, not both")
            f = self.eval_fraction
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
                raise ConfigError(f"--eval-fraction {f!r}: expected a fraction of the records, 0 < f < 1")
        for name in ("min_trainable_tokens", "max_trainable_tokens", "mixture_examples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: expected a whole number, 0 or more")
        lo, hi = self.min_trainable_tokens, self.max_trainable_tokens
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"--min-trainable-tokens {lo} is above --max-trainable-tokens {hi}")
        if self.mixture_examples is not None and not any(s.weight is not None for s in self.sources):
            raise ConfigError("--mixture-examples counts the examples of weighted sources: no source has a weight")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"--seed {self.seed!r}: expected a whole number")

    # -- sources ----------------------------------------------------------------------------------
    def render_options(self, tok: BPETokenizer) -> RenderOptions:
        """What the template renders with in a run with these options and this tokenizer."""
        return RenderOptions(
            bos_token=tok.bos_token or "",
            eos_token=tok.eos_token or "",
            train_on_eos=self.train_on_eos,
            train_reasoning=self.train_reasoning,
            train_tool_calls=self.train_tool_calls,
            template_vars=self.template_vars,
            special_tokens_map=tok.special_tokens_map,
            reasoning_mode=self.reasoning_mode,
            train_marker_only=self.train_marker_only,
            render_timeout=self.render_timeout,
            max_chars=self.max_chars,
        )

    def column_map(self) -> ColumnMap:
        return ColumnMap.build(self.columns, self.tags, only_mapped=self.only_mapped_columns)

    def source_list(self) -> list[SourceSpec]:
        """The run's sources: the configured ones, or one source of the input paths."""
        return list(self.sources) or [SourceSpec(DEFAULT_SOURCE, list(self.inputs))]

    def for_source(self, spec: SourceSpec) -> PrepareOptions:
        """These options with the source's own settings (those it leaves unset are the run's)."""
        return replace(
            self,
            inputs=list(spec.paths),
            sources=[],
            format=spec.format or self.format,
            columns=spec.columns or self.columns,
            tags=spec.tags or self.tags,
            only_mapped_columns=spec.only_mapped or self.only_mapped_columns,
            role_map=spec.role_map or self.role_map,
            system_prompt=spec.system_prompt if spec.system_prompt is not None else self.system_prompt,
            system_policy=spec.system_policy or self.system_policy,
            template_vars={**self.template_vars, **spec.template_vars},
            mask=spec.mask or self.mask,
        )

    @property
    def mixes(self) -> bool:
        """Sampling or an eval split: examples are selected after they are all prepared."""
        return self.eval_fraction is not None or bool(self.eval_sources) or any(s.sampling for s in self.sources)

    def recorded(self) -> dict[str, Any]:
        """The options as recorded in the manifest (output location excluded: it does not change data)."""
        d = asdict(self)
        for k in ("out_dir", "overwrite", "workers", "resume", "input_names"):
            d.pop(k)
        d["inputs"] = [self.input_names.get(str(Path(p)), p) for p in self.inputs]
        return d


# -- options from a mapping (a data config) --------------------------------------------------------

FIELDS = {f.name: f for f in dataclasses.fields(PrepareOptions)}
HINTS = typing.get_type_hints(PrepareOptions)
NOT_KEYS = ("only_mapped_columns", "input_names")  # internal: set per source, not a key of its own


def options_from_mapping(values: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Config keys (dashes or underscores) checked against PrepareOptions' fields and types; ConfigError names
    the key. Returns field -> value."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS or name in NOT_KEYS:
            keys = ", ".join(sorted(n for n in FIELDS if n not in (*NOT_KEYS, "sources")))
            raise ConfigError(f"{where}: {key}: unknown key; expected one of {keys}, sources, eval")
        if name == "sources":
            out[name] = value
            continue
        out[name] = check_type(value, HINTS[name], f"{where}: {key}")
    return out


def check_type(value: Any, hint: Any, where: str) -> Any:
    """`value` when it has type `hint` (ints accepted for floats), else ConfigError naming `where`."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in get_args(hint):
            return None
        for arg in (a for a in get_args(hint) if a is not type(None)):
            return check_type(value, arg, where)
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{where}: {value!r}: expected one of {', '.join(map(str, get_args(hint)))}")
        return value
    if origin is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ConfigError(f"{where}: expected a list, got {_name(value)}")
        return [check_type(v, get_args(hint)[0], f"{where}[{i}]") for i, v in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of KEY: VALUE, got {_name(value)}")
        return {str(k): v for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_name(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {_name(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_name(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_name(value)}")
        return value
    return value


def _name(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


# -- the CLI's options: default < config file < a flag given on the command line -------------------

CLI_ONLY = ("engine", "ray_address", "quiet")  # config keys of flags that are not PrepareOptions fields


def resolve_options(
    flags: dict[str, Any],
    given: set[str],
    config: str | None = None,
    dataset_info: str | None = None,
    datasets: list[str] | None = None,
) -> tuple[PrepareOptions, dict[str, Any]]:
    """PrepareOptions from the flags (`given`: those on the command line), a data config and LLaMA-Factory's
    registry; and the config's values of the CLI-only keys (engine, ray_address, quiet) not given as flags."""
    from sftprep.read.dataconfig import load_data_config
    from sftprep.read.llamafactory import lf_sources

    from_config: dict[str, Any] = {}
    cli_only: dict[str, Any] = {}
    sources: list[SourceSpec] = []
    if config is not None:
        cfg = load_data_config(config)
        for key in CLI_ONLY:
            if key in cfg.options:
                cli_only[key] = cfg.options.pop(key)
        from_config = options_from_mapping(cfg.options, where=config)
        sources = cfg.sources
    if dataset_info is not None or datasets:
        if dataset_info is None:
            raise ConfigError("--dataset names datasets of a registry: give it with --dataset-info dataset_info.json")
        sources = [*sources, *lf_sources(dataset_info, list(datasets or []))]
    values = {k: v for k, v in from_config.items() if k not in given}
    values.update({k: v for k, v in flags.items() if k in given or k not in from_config})
    if sources:
        values["sources"] = sources
    return PrepareOptions(**values), {k: v for k, v in cli_only.items() if k not in given}
