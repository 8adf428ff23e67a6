"""LLaMA-Factory's dataset registry (`dataset_info.json`) as sources: `--dataset-info FILE --dataset a,b`.

Each named entry with a local `file_name` (a file or a directory, relative to the registry's directory, as
LLaMA-Factory's `dataset_dir`) becomes a source read as LLaMA-Factory reads it: `formatting` alpaca (default)
or sharegpt (openai: sharegpt with role/content tags), its `columns` (alpaca: prompt, query, response, history,
system, tools; sharegpt: messages, system, tools; only the columns it names are read, as LLaMA-Factory does),
its `tags` (role_tag, content_tag, user_tag, assistant_tag, observation_tag, function_tag, system_tag), and
`num_samples` as the number of examples drawn. Entries sftprep cannot prepare as SFT data (on a hub only,
preference or KTO data, multimodal columns) are refused naming why.

LLaMA-Factory joins an alpaca record's instruction and input with one newline; sftprep keeps the input apart
(templates with an input slot render it; others get instruction, a blank line, input).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sftprep.errors import ConfigError
from sftprep.read.sources import SourceSpec

_ALPACA = {"prompt": "instruction", "query": "input", "response": "output"}  # LF column -> sftprep field
_ALPACA_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output"}
_OPTIONAL = ("history", "system", "tools")
_MULTIMODAL = ("images", "videos", "audios")
_NOT_SFT = {"chosen": "preference (chosen/rejected)", "rejected": "preference (chosen/rejected)", "kto_tag": "KTO"}
_HUBS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
_OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                "system_tag": "system"}  # fmt: skip


def read_registry(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        msg = f"--dataset-info {str(path)!r} does not exist; fix: give LLaMA-Factory's dataset_info.json"
        raise ConfigError(msg) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--dataset-info {str(path)!r} cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict):
        got = type(data).__name__
        raise ConfigError(f"--dataset-info {str(path)!r}: expected a JSON object of datasets, got {got}")
    return data


def lf_sources(info: str | Path, names: list[str]) -> list[SourceSpec]:
    """The sources for the datasets `names` of the registry `info` (ConfigError naming an unusable one)."""
    registry = read_registry(info)
    base = Path(info).parent
    if not names:
        local = [n for n, e in registry.items() if isinstance(e, dict) and e.get("file_name")]
        raise ConfigError(
            f"--dataset-info {str(info)!r} needs --dataset NAME[,NAME...]; its local datasets: {', '.join(local[:20])}"
        )
    out = []
    for name in names:
        entry = registry.get(name)
        if not isinstance(entry, dict):
            known = ", ".join(sorted(registry)[:30])
            raise ConfigError(f"--dataset {name!r} is not in {info} (it registers: {known})")
        out.append(_source(name, entry, base, str(info)))
    return out


def _source(name: str, entry: dict[str, Any], base: Path, info: str) -> SourceSpec:
    where = f"{info}: {name}"
    file_name = entry.get("file_name")
    if not file_name:
        hub = next((k for k in _HUBS if entry.get(k)), None)
        if hub:
            raise ConfigError(
                f"{where}: {hub} {entry[hub]!r}: sftprep reads local files only; fix: download the dataset "
                "(e.g. huggingface-cli download --repo-type dataset REPO --local-dir DIR) and register it with "
                "file_name"
            )
        raise ConfigError(f"{where}: no file_name; fix: give the local file or directory in file_name")
    if entry.get("ranking"):
        raise ConfigError(f"{where}: a preference dataset (ranking: true); sftprep prepares SFT data")
    columns: dict[str, Any] = dict(entry.get("columns") or {})
    for key, what in _NOT_SFT.items():
        if key in columns:
            raise ConfigError(f"{where}: a {what} dataset (columns.{key}); sftprep prepares SFT data")
    media = [k for k in _MULTIMODAL if k in columns]
    if media:
        raise ConfigError(f"{where}: a multimodal dataset (columns {', '.join(media)}); sftprep prepares text")
    formatting = entry.get("formatting", "alpaca")
    if formatting == "alpaca" and "prompt" in columns and "response" not in columns:
        raise ConfigError(
            f"{where}: a pre-training dataset (columns.prompt {columns['prompt']!r} and no response); sftprep "
            "prepares SFT data"
        )
    tags = dict(entry.get("tags") or {})
    if formatting == "openai":
        formatting, tags = "sharegpt", {**_OPENAI_TAGS, **tags}
    if formatting == "alpaca":
        mapped = {field: columns.get(col, _ALPACA_DEFAULTS[col]) for col, field in _ALPACA.items()}
        fmt = "alpaca"
    elif formatting == "sharegpt":
        mapped = {"messages": columns.get("messages", "conversations")}
        fmt = "sharegpt"
    else:
        raise ConfigError(f"{where}: formatting {formatting!r}; expected alpaca, sharegpt or openai")
    mapped.update({k: str(columns[k]) for k in _OPTIONAL if columns.get(k)})
    unknown = sorted(set(columns) - set(_ALPACA) - set(_OPTIONAL) - {"messages"})
    if unknown:
        raise ConfigError(f"{where}: columns {', '.join(unknown)}: not read by sftprep (SFT text data)")
    num = entry.get("num_samples")
    spec = SourceSpec(
        name=name,
        paths=[str(base / str(file_name))],
        format=fmt,  # type: ignore[arg-type]
        columns={k: str(v) for k, v in mapped.items()},
        tags={k: str(v) for k, v in tags.items()},
        examples=int(num) if isinstance(num, int) and not isinstance(num, bool) else None,
        only_mapped=True,
    )
    spec.validate(where)
    return spec
