"""Column and role mapping: records whose fields have other names than sftprep's shapes expect.

`--columns messages=dialog,tools=functions,system=sys` renames the record's `dialog` to `messages` (and so on)
before the shape is detected; the instruction shape (`instruction=question,output=answer`, rendered with the
chat template) and the prompt/completion shape (`prompt=question,completion=answer`, concatenated verbatim) map
the same way. `--tags` maps the messages inside a conversation as LLaMA-Factory's `tags` do: `role_tag` and
`content_tag` name the message's keys, `user_tag`, `assistant_tag`, `observation_tag`, `function_tag`,
`system_tag` the role values (the result is a ShareGPT conversation).

Cells holding a JSON list (a `messages` or `history` column of a CSV file, or a JSON-encoded column of a
Hugging Face dataset) are decoded. `suggest_columns` proposes the mapping for a record of unknown shape,
checked by the caller on that record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sftprep.errors import ConfigError

# sftprep's field names (targets of --columns), and the LLaMA-Factory names accepted for them.
CANONICAL: tuple[str, ...] = (
    "messages",
    "system",
    "tools",
    "instruction",
    "input",
    "output",
    "history",
    "prompt",
    "completion",
)
ALIASES = {"query": "input", "response": "output", "conversations": "messages"}
TAGS: tuple[str, ...] = (
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
)
# LLaMA-Factory's defaults for the sharegpt format, and the ShareGPT role each role tag stands for.
TAG_DEFAULTS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
_TAG_ROLES = {
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
_JSON_LISTS = ("messages", "conversations", "history")


@dataclass(frozen=True)
class ColumnMap:
    """sftprep field -> the record's column, and LLaMA-Factory-style message tags (validated by `build`)."""

    columns: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    only_mapped: bool = False  # keep only the mapped fields (LLaMA-Factory reads only the columns it names)

    @classmethod
    def build(
        cls,
        columns: Mapping[str, Any] | None,
        tags: Mapping[str, Any] | None,
        where: str = "",
        only_mapped: bool = False,
    ) -> ColumnMap:
        """Check and normalise a mapping (aliases resolved). ConfigError names the bad key; `where` prefixes
        it (a config key path, or the flag)."""
        cols: dict[str, str] = {}
        for key, value in (columns or {}).items():
            target = ALIASES.get(key, key)
            if target not in CANONICAL:
                raise ConfigError(
                    f"{where or '--columns'} {key!r}: not a field sftprep reads; expected one of "
                    f"{', '.join(CANONICAL)} (or {', '.join(ALIASES)}), as FIELD=COLUMN"
                )
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where or '--columns'} {key}: expected a column name, got {value!r}")
            cols[target] = value
        found: dict[str, str] = {}
        for key, value in (tags or {}).items():
            if key not in TAGS:
                raise ConfigError(f"{where or '--tags'} {key!r}: expected one of {', '.join(TAGS)}")
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where or '--tags'} {key}: expected a string, got {value!r}")
            found[key] = value
        return cls(cols, found, only_mapped)

    def __bool__(self) -> bool:
        return bool(self.columns or self.tags)

    def source_of(self, path: str) -> str:
        """A field path of the mapped record (`messages[2].role`) in the names of the data (`dialog[2].role`)."""
        for target, column in self.columns.items():
            for key in (target, "conversations") if target == "messages" else (target,):
                if path == key or path.startswith((key + "[", key + ".")):
                    return column + path[len(key) :]
        return path

    def apply(self, data: dict[str, Any]) -> dict[str, Any]:
        """The record with sftprep's field names (a new dict; `data` is not changed)."""
        out = data
        if self.only_mapped:
            out = {t: data[c] for t, c in self.columns.items() if c in data}
        elif self.columns:
            used = set(self.columns.values())
            out = {k: v for k, v in data.items() if k not in used}
            for target, column in self.columns.items():
                if target == "messages":
                    out.pop("conversations", None)
                if column in data:
                    out[target] = data[column]
                else:
                    out.pop(target, None)
        out = decode_json_lists(out)
        if self.tags:
            out = self._tagged(out)
        return out

    def _tagged(self, data: dict[str, Any]) -> dict[str, Any]:
        tags = {**TAG_DEFAULTS, **self.tags}
        key = "messages" if data.get("messages") is not None else "conversations"
        items = data.get(key)
        if not isinstance(items, list):
            return data
        roles = {tags[t]: role for t, role in _TAG_ROLES.items()}
        role_key, content_key = tags["role_tag"], tags["content_tag"]
        converted = []
        for item in items:
            if not isinstance(item, dict):
                converted.append(item)
                continue
            msg = {k: v for k, v in item.items() if k not in (role_key, content_key)}
            role = item.get(role_key)
            msg["from"] = roles.get(role, role) if isinstance(role, str) else role
            if content_key in item:
                msg["value"] = item[content_key]
            converted.append(msg)
        return {**data, key: converted}


def decode_json_lists(data: dict[str, Any]) -> dict[str, Any]:
    """`messages` / `conversations` / `history` given as a JSON string holding a list, decoded."""
    found = [k for k in _JSON_LISTS if isinstance(data.get(k), str) and data[k].lstrip()[:1] == "["]
    if not found:
        return data
    out = dict(data)
    for k in found:
        try:
            value = json.loads(out[k])
        except ValueError:
            continue  # left as it is: the shape check names it
        if isinstance(value, list):
            out[k] = value
    return out


def parse_pairs(text: str, flag: str) -> dict[str, str]:
    """`a=b,c=d` (the value of --columns or --tags) as a dict; ConfigError for a malformed pair."""
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{flag} {part!r}: expected FIELD=COLUMN pairs separated by commas, e.g. {_EXAMPLE}")
        pairs[key.strip()] = value.strip()
    return pairs


_EXAMPLE = "messages=dialog,system=sys"

# Column names that usually hold the question / the answer of an instruction record.
_QUESTION = ("question", "query", "prompt", "instruction", "input", "problem", "text", "context", "user", "human")
_ANSWER = ("answer", "response", "output", "completion", "target", "solution", "reply", "assistant", "gpt", "label")
_ROLE_WORDS = {"user", "assistant", "human", "gpt", "system", "bot", "model", "tool", "observation", "function_call"}


def suggest_columns(data: Mapping[str, Any]) -> list[dict[str, dict[str, str]]]:
    """Candidate mappings ({"columns": ..., "tags": ...}) for a record of unknown shape, most likely first;
    the caller keeps the first that makes the record a conversation."""
    out: list[dict[str, dict[str, str]]] = []
    for key, value in data.items():
        if isinstance(value, str) and value.lstrip()[:1] == "[":
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
            cols = {} if key in ("messages", "conversations") else {"messages": str(key)}
            out.append({"columns": cols, "tags": {}})
            tags = _guess_tags(value)
            if tags:
                out.append({"columns": cols, "tags": tags})
    lower = {str(k).lower(): str(k) for k, v in data.items() if isinstance(v, str)}
    questions = [lower[q] for q in _QUESTION if q in lower]
    answers = [lower[a] for a in _ANSWER if a in lower]
    for q in questions:
        for a in answers:
            if q != a:
                out.append({"columns": {"instruction": q, "output": a}, "tags": {}})
    return out


def _guess_tags(messages: list[dict[str, Any]]) -> dict[str, str]:
    """role_tag/content_tag (and role values) for messages keyed otherwise than role/content, from/value."""
    first = messages[0]
    role_key = next((k for k, v in first.items() if isinstance(v, str) and v.lower() in _ROLE_WORDS), None)
    content_key = next((k for k, v in first.items() if isinstance(v, str) and k != role_key), None)
    if role_key is None or content_key is None:
        return {}
    tags = {"role_tag": str(role_key), "content_tag": str(content_key)}
    values = [m.get(role_key) for m in messages if isinstance(m.get(role_key), str)]
    for value in dict.fromkeys(values):
        v = value.lower()
        tag = {"user": "user_tag", "human": "user_tag", "assistant": "assistant_tag", "bot": "assistant_tag",
               "model": "assistant_tag", "gpt": "assistant_tag", "system": "system_tag", "tool": "observation_tag",
               "observation": "observation_tag"}.get(v)  # fmt: skip
        if tag and tag not in tags:
            tags[tag] = value
    return tags


def mapping_flags(candidate: Mapping[str, Mapping[str, str]]) -> str:
    """The flags that give `candidate` (`--columns a=b --tags c=d`)."""
    parts = []
    if candidate.get("columns"):
        parts.append("--columns " + ",".join(f"{k}={v}" for k, v in candidate["columns"].items()))
    if candidate.get("tags"):
        parts.append("--tags " + ",".join(f"{k}={v}" for k, v in candidate["tags"].items()))
    return " ".join(parts)
