"""A source of a training mixture: its input paths, how its records are read (shape, column map), what is
done to them (system prompt, template variables, mask), and how much of it the mixture takes.

Sampling (at most one; none: every example once): `weight` (a share of the examples drawn from the weighted
sources, in proportion to the weights), `examples` (exactly this many examples, repeating the source when it has
fewer), `epochs` (passes over the source: 2 = every example twice, 0.5 = a random half). Settings left unset
(None, or empty) take the run's own (the CLI flags or the config's top-level keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sftprep.errors import ConfigError
from sftprep.read.columns import ColumnMap
from sftprep.types import FORMATS, MASKS, SYSTEM_POLICIES, FormatName, MaskMode, SystemPolicy

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
SAMPLING = ("weight", "examples", "epochs")


@dataclass
class SourceSpec:
    name: str
    paths: list[str]
    format: FormatName | None = None
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    role_map: dict[str, str] = field(default_factory=dict)
    system_prompt: str | None = None
    system_policy: SystemPolicy | None = None
    template_vars: dict[str, Any] = field(default_factory=dict)
    mask: MaskMode | None = None
    weight: float | None = None
    examples: int | None = None
    epochs: float | None = None
    only_mapped: bool = False  # read only the mapped columns (LLaMA-Factory's registry entries)

    @property
    def sampling(self) -> tuple[str, float] | None:
        """("weight" | "examples" | "epochs", value), or None (every example once)."""
        for key in SAMPLING:
            value = getattr(self, key)
            if value is not None:
                return key, value
        return None

    def validate(self, where: str) -> None:
        """Check every field; ConfigError names `where` (e.g. `sources[2]`) and the key."""
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"{where}.name: expected a name of letters, digits, '_', '-', '.' (it names the source in the "
                f"manifest), got {self.name!r}"
            )
        if not isinstance(self.paths, list) or not self.paths or not all(isinstance(p, str) for p in self.paths):
            raise ConfigError(f"{where}.paths: expected a path or a list of paths (files, directories, globs)")
        for key, allowed in (("format", FORMATS), ("system_policy", SYSTEM_POLICIES), ("mask", MASKS)):
            value = getattr(self, key)
            if value is not None and value not in allowed:
                raise ConfigError(f"{where}.{key}: {value!r}: expected one of {', '.join(allowed)}")
        for key in ("role_map", "template_vars"):
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(f"{where}.{key}: expected a table of KEY: VALUE")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ConfigError(f"{where}.system_prompt: expected a string")
        ColumnMap.build(self.columns, None, f"{where}.columns", self.only_mapped)
        ColumnMap.build(None, self.tags, f"{where}.tags")
        given = [k for k in SAMPLING if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(f"{where}: {' and '.join(given)} given; expected at most one of weight, examples, epochs")
        if self.weight is not None and not (_number(self.weight) and self.weight > 0):
            raise ConfigError(f"{where}.weight: expected a positive number, got {self.weight!r}")
        if self.epochs is not None and not (_number(self.epochs) and self.epochs > 0):
            raise ConfigError(f"{where}.epochs: expected a positive number of passes, got {self.epochs!r}")
        n = self.examples
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            raise ConfigError(f"{where}.examples: expected a whole number of examples (0 or more), got {n!r}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def source_from_dict(d: Any, where: str) -> SourceSpec:
    """A SourceSpec from a config table (keys with dashes or underscores); ConfigError names the bad key."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table with name and paths, got {type(d).__name__}")
    known = set(SourceSpec.__dataclass_fields__)
    values: dict[str, Any] = {}
    for key, value in d.items():
        name = str(key).replace("-", "_")
        if name == "path":
            name = "paths"
        if name not in known:
            raise ConfigError(f"{where}.{key}: unknown key; expected one of {', '.join(sorted(known))}")
        values[name] = value
    for required in ("name", "paths"):
        if required not in values:
            raise ConfigError(f"{where}: no {required}; every source has a name and paths")
    if isinstance(values["paths"], str):
        values["paths"] = [values["paths"]]
    for key in ("columns", "tags", "role_map", "template_vars"):
        if values.get(key) is None:
            values.pop(key, None)
        elif not isinstance(values[key], dict):
            raise ConfigError(f"{where}.{key}: expected a table of KEY: VALUE, got {type(values[key]).__name__}")
    spec = SourceSpec(**values)
    spec.validate(where)
    return spec


def check_sources(sources: list[SourceSpec], eval_sources: list[str]) -> None:
    """Names unique, eval sources known and not sampled."""
    seen: set[str] = set()
    for i, s in enumerate(sources):
        s.validate(f"sources[{i}]")
        if s.name in seen:
            raise ConfigError(f"sources[{i}].name: {s.name!r} is the name of an earlier source; names are unique")
        seen.add(s.name)
    for name in eval_sources:
        if name not in seen:
            raise ConfigError(f"eval.sources: {name!r} is not a source; the sources are {', '.join(sorted(seen))}")
        spec = next(s for s in sources if s.name == name)
        if spec.sampling is not None:
            raise ConfigError(
                f"eval.sources: {name!r} has {spec.sampling[0]}; a source held out for evaluation is taken whole: "
                "remove its sampling key"
            )
