"""`sftprep train`'s flags and config file, generated from the TrainConfig dataclasses (config.py).

Every field is one flag (`--batch-size`, nested ones prefixed: `--tiny-hidden`, `--lora-r`) and one
config-file key. Precedence: the dataclass default < `--config FILE` < a flag given on the command line.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from sftprep.errors import ConfigError
from sftprep.train.config import LoraConfig, TinyModelConfig, TrainConfig, read_config_file

PANELS = {
    "Model": ("out_dir", "model", "lora", "precision", "attn_implementation", "threads"),
    "Optimisation": (
        "batch_size", "grad_accum", "epochs", "max_steps", "lr", "min_lr_ratio", "weight_decay", "betas",
        "warmup_steps", "warmup_ratio", "max_grad_norm", "seed",
    ),
    "Memory and data": ("gradient_checkpointing", "sharding", "packing", "max_length"),
    "Evaluation": ("eval_dir", "eval_every", "eval_batch_size"),
    "Checkpoints": ("save_every", "keep_checkpoints", "resume", "resume_from", "stop_after", "overwrite"),
    "Logging": ("log_every", "quiet", "tensorboard", "wandb", "wandb_project", "wandb_mode"),
}  # fmt: skip
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}


@dataclass(frozen=True)
class Flag:
    dest: str  # the Python keyword: tiny_hidden
    path: tuple[str, ...]  # where it goes in TrainConfig: ("tiny", "hidden_size")
    hint: Any  # the field's type
    default: Any
    help: str
    names: tuple[str, ...]  # ("--tiny-hidden",)
    panel: str


def flags() -> list[Flag]:
    """One Flag per TrainConfig field (nested dataclasses flattened), plus `--lora` to switch LoRA on."""
    out: list[Flag] = []
    for f in dataclasses.fields(TrainConfig):
        if f.name == "data_dir":
            continue  # the positional argument
        if f.name == "tiny":
            out += _nested(TinyModelConfig, "Tiny model (--model tiny)")
        elif f.name == "lora":
            out.append(Flag("lora", ("lora",), bool, False, f.metadata["help"], ("--lora/--no-lora",), "LoRA"))
            out += _nested(LoraConfig, "LoRA", prefix="lora")
        else:
            out.append(_flag(f, typing.get_type_hints(TrainConfig)[f.name], (f.name,), _PANEL_OF.get(f.name, "Other")))
    return out


def _nested(cls: type, panel: str, prefix: str = "") -> list[Flag]:
    hints = typing.get_type_hints(cls)
    path = "lora" if cls is LoraConfig else "tiny"
    return [_flag(f, hints[f.name], (path, f.name), panel, prefix) for f in dataclasses.fields(cls)]


def _flag(f: dataclasses.Field[Any], hint: Any, path: tuple[str, ...], panel: str, prefix: str = "") -> Flag:
    name = f.metadata.get("flag") or ((prefix + "-") if prefix else "") + f.name.replace("_", "-")
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    names: tuple[str, ...] = (f"--{name}/--no-{name}",) if hint is bool else (f"--{name}",)
    if f.metadata.get("short"):
        names = (f.metadata["short"], *names)
    return Flag(name.replace("-", "_"), path, hint, default, f.metadata.get("help", ""), names, panel)


def _cli_type(flag: Flag) -> Any:
    origin = typing.get_origin(flag.hint)
    if origin is dict:
        return list[str]  # KEY=JSON, repeatable
    if origin is list:
        return flag.hint
    return flag.hint


def _cli_default(flag: Flag) -> Any:
    if isinstance(flag.default, dict):
        return [f"{k}={json.dumps(v)}" for k, v in flag.default.items()]
    return flag.default


def to_value(flag: Flag, value: Any) -> Any:
    """A command-line value as the config holds it: lists split at commas, KEY=JSON pairs as a dict."""
    origin = typing.get_origin(flag.hint)
    if origin is dict:
        if isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for item in value:
            key, sep, raw = str(item).partition("=")
            if not sep or not key:
                raise ConfigError(f"--{flag.dest.replace('_', '-')} {item!r}: expected KEY=VALUE (VALUE as JSON)")
            try:
                out[key] = json.loads(raw)
            except ValueError:
                out[key] = raw
        return out
    if origin is list and typing.get_args(flag.hint)[0] is str and not isinstance(value, str):
        return [part.strip() for v in value for part in str(v).split(",") if part.strip()]
    if origin is tuple:
        return list(value)
    return value


def resolve(
    data_dir: str | Path | None, explicit: dict[str, Any], config_file: str | Path | None = None
) -> TrainConfig:
    """TrainConfig from defaults, then the config file, then the explicitly given flags (by `dest`)."""
    by_dest = {f.dest: f for f in flags()}
    unknown = sorted(set(explicit) - set(by_dest))
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
    d = TrainConfig(data_dir="").to_dict()
    where = "options"
    if config_file is not None:
        where = f"--config {config_file}"
        d = _merge(d, read_config_file(config_file))
    if "lora" in explicit:
        d["lora"] = (d["lora"] or asdict(LoraConfig())) if explicit["lora"] else None
    for dest, value in explicit.items():
        flag = by_dest[dest]
        if dest == "lora":
            continue
        if flag.path[0] == "lora" and d["lora"] is None:
            raise ConfigError(f"--{dest.replace('_', '-')} is a LoRA option but LoRA is off: add --lora")
        target = d[flag.path[0]] if len(flag.path) == 2 else d
        target[flag.path[-1]] = to_value(flag, value)
    if data_dir is not None:
        d["data_dir"] = str(data_dir)
    elif not d.get("data_dir"):
        raise ConfigError("give DATA_DIR (a directory written by `sftprep prepare`) or data_dir in --config")
    return TrainConfig.from_dict(d, where)


def _merge(base: dict[str, Any], file: dict[str, Any]) -> dict[str, Any]:
    out = {**base, **{k: v for k, v in file.items() if k not in ("tiny", "lora")}}
    if "tiny" in file:
        if not isinstance(file["tiny"], dict):
            raise ConfigError(f"config: 'tiny' must be a table of tiny-model options (got {file['tiny']!r})")
        out["tiny"] = {**base["tiny"], **file["tiny"]}
    if "lora" in file:
        lora = file["lora"]
        out["lora"] = {**asdict(LoraConfig()), **lora} if isinstance(lora, dict) else lora
    return out


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def train_typer_command(run: Callable[[TrainConfig], Any], doc: str) -> Callable[..., None]:
    """A typer command with one option per TrainConfig field, calling `run(config)`."""
    all_flags = flags()
    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "data_dir",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None,
            annotation=Annotated[Path | None, typer.Argument(help="A directory written by `sftprep prepare`.")],
        ),
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None, typer.Option(help="A .toml or .json file of these options; flags given here win.")
            ],
        ),
        inspect.Parameter(
            "print_config",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option(help="Print the resolved options as JSON and exit.")],
        ),
    ]
    for flag in all_flags:
        option = typer.Option(*flag.names, help=flag.help, rich_help_panel=flag.panel)
        params.append(
            inspect.Parameter(
                flag.dest,
                inspect.Parameter.KEYWORD_ONLY,
                default=_cli_default(flag),
                annotation=Annotated[_cli_type(flag), option],
            )
        )

    def command(ctx: typer.Context, **values: Any) -> None:
        explicit = {f.dest: values[f.dest] for f in all_flags if _given(ctx, f.dest)}
        cfg = resolve(values.get("data_dir"), explicit, values.get("config"))
        if values.get("print_config"):
            print(json.dumps(cfg.to_dict(), indent=2))
            return
        run(cfg)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    command.__name__ = "train"
    return command
