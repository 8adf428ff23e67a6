"""A data config: one YAML (.yaml/.yml) or TOML (.toml) file describing a run (`prepare --config data.yaml`).

Top-level keys are the options of `prepare`, one per flag (`max_length` or `max-length`); `sources` lists the
mixture (read/sources.py); `eval` holds out an evaluation split (`fraction: 0.05`, or `sources: [name]`);
`inputs` is a list of paths read as one source; `dataset_info` + `dataset` read LLaMA-Factory's registry.
Relative paths in the file (inputs, source paths, dataset_info, out_dir, a `@file` system prompt, a tokenizer
or template file) are relative to the file's directory. Every error names its key path (`sources[1].weight`).

This module checks the structure (sources, eval); the option keys and their types are checked against
`PrepareOptions` by preparation/options.py.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from sftprep.errors import ConfigError
from sftprep.read.llamafactory import lf_sources
from sftprep.read.sources import SourceSpec, source_from_dict
from sftprep.read.system_prompt import load_system_prompt

_PATH_KEYS = ("out_dir",)  # always paths
_MAYBE_PATH_KEYS = ("tokenizer", "template")  # paths when such a file exists beside the config, else names


@dataclass
class DataConfig:
    path: str
    options: dict[str, Any] = field(default_factory=dict)  # prepare options, keys with underscores
    sources: list[SourceSpec] = field(default_factory=list)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The file's top-level table (ConfigError for a missing, unreadable or malformed file)."""
    p = Path(path)
    if p.suffix.lower() not in (".yaml", ".yml", ".toml"):
        raise ConfigError(f"--config {str(path)!r}: expected a .yaml, .yml or .toml file")
    try:
        text = p.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {str(path)!r} does not exist; fix: check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {str(path)!r} cannot be read ({exc})") from None
    import yaml  # only for a data config (10 ms of every run's start-up otherwise)

    try:
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {str(path)!r} is not valid {p.suffix.lstrip('.').upper()}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {str(path)!r}: expected a table of options at the top, got {type(data).__name__}")
    return data


def load_data_config(path: str | Path) -> DataConfig:
    data = read_config_file(path)
    base = Path(path).parent
    cfg = DataConfig(str(path))
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name == "sources":
            cfg.sources += _sources(value, base)
        elif name == "eval":
            cfg.options.update(_eval(value))
        elif name == "inputs":
            paths = [value] if isinstance(value, str) else value
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ConfigError(f"inputs: expected a path or a list of paths, got {value!r}")
            cfg.options["inputs"] = [_relative(base, p) for p in paths]
        elif name in ("dataset_info", "dataset"):
            cfg.options[name] = value
        elif isinstance(value, str) and (name in _PATH_KEYS or (name in _MAYBE_PATH_KEYS and (base / value).exists())):
            cfg.options[name] = _relative(base, value)
        elif name == "system_prompt" and isinstance(value, str):
            cfg.options[name] = _system_prompt(value, base, "system_prompt")
        else:
            cfg.options[name] = value
    info = cfg.options.pop("dataset_info", None)
    names = cfg.options.pop("dataset", None)
    if info is not None or names is not None:
        if not isinstance(info, str):
            raise ConfigError("dataset_info: expected the path of LLaMA-Factory's dataset_info.json")
        listed = names.split(",") if isinstance(names, str) else names
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise ConfigError("dataset: expected a name or a list of names of dataset_info.json")
        cfg.sources += lf_sources(_relative(base, info), [n.strip() for n in listed if n.strip()])
    return cfg


def _relative(base: Path, value: str) -> str:
    """`value` relative to the config's directory (as the path to use from here), unless absolute."""
    if os.path.isabs(value) or str(base) in ("", "."):
        return value
    return os.path.normpath(base / value)


def _system_prompt(value: str, base: Path, where: str) -> str:
    if value.startswith("@") and not value.startswith("@@"):
        value = "@" + _relative(base, value[1:])
    try:
        return load_system_prompt(value)
    except ConfigError:
        raise
    except Exception as exc:  # InputError: a missing file
        raise ConfigError(f"{where}: {exc}") from None


def _sources(value: Any, base: Path) -> list[SourceSpec]:
    if not isinstance(value, list) or not value:
        raise ConfigError("sources: expected a list of tables, each with name and paths")
    out = []
    for i, item in enumerate(value):
        where = f"sources[{i}]"
        spec = source_from_dict(item, where)
        spec.paths = [_relative(base, p) for p in spec.paths]
        if spec.system_prompt is not None:
            spec.system_prompt = _system_prompt(spec.system_prompt, base, f"{where}.system_prompt")
        out.append(spec)
    return out


def _eval(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError("eval: expected a table with fraction (0 < f < 1) or sources (a list of source names)")
    unknown = set(value) - {"fraction", "sources"}
    if unknown:
        raise ConfigError(f"eval.{sorted(unknown)[0]}: unknown key; expected fraction or sources")
    if ("fraction" in value) == ("sources" in value):
        raise ConfigError("eval: expected exactly one of fraction (0 < f < 1) and sources (a list of source names)")
    if "fraction" in value:
        return {"eval_fraction": value["fraction"]}
    names = [value["sources"]] if isinstance(value["sources"], str) else value["sources"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"eval.sources: expected a list of source names, got {value['sources']!r}")
    return {"eval_sources": names}
