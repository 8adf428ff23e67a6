"""Records (as the agentic corpus holds them) -> Hugging Face chat messages, written independently of sftprep.

Shapes: OpenAI `messages` (content a string, null/absent, or parts {"type": "text"|"reasoning"|"tool_call"} with
"text" or "value"; assistant `tool_calls` whose `function.arguments` JSON string becomes an object, HF's documented
convention; `reasoning_content` or `reasoning`; role `tool` with `tool_call_id` / `name`; per-message `weight` /
`loss_weight`), ShareGPT `conversations` (from human/gpt/system/function_call/observation; a function_call value is
JSON {"name", "arguments"} or a list of them -> an assistant message with content "" and those calls), Alpaca
(instruction, input, output, system, history), and top-level `tools` (a list or a JSON string) and `system`.

Choices where a reading is needed (sftprep may legitimately differ): text parts join with "", reasoning parts
(and a reasoning field before them) with "\n"; a parts list without text parts gives content ""; null/absent
content stays absent (transformers drops None-valued keys; no content is invented); Alpaca's input follows the
instruction after a blank line; tools are passed as given (glaive's bare function schemas are not wrapped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
SHAREGPT_ROLES |= {"system": "system", "observation": "tool", "tool": "tool", "function": "tool"}


class NotConvertible(ValueError):
    """A record this converter does not read as a conversation (sftprep should reject it)."""


@dataclass
class HFRecord:
    messages: list[dict[str, Any]]
    tools: list[Any] | None = None
    weights: list[float | None] = field(default_factory=list)  # per message; None = default (trained)

    def assistant_turns(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant"]

    def trainable_turns(self) -> list[int]:
        return [i for i in self.assistant_turns() if self.weights[i] != 0]

    @property
    def agentic(self) -> bool:
        """Tools, tool calls, tool results or reasoning anywhere: the conversations issue #18 is about."""
        return bool(self.tools) or any(
            m.get("tool_calls") or m["role"] == "tool" or m.get("reasoning_content") is not None for m in self.messages
        )


def _parse_args(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _call(obj: Any) -> dict[str, Any]:
    """{"name", "arguments"} or OpenAI {"id", "type", "function": {...}} -> HF's tool-call dict."""
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except ValueError as e:
            raise NotConvertible(f"tool call is not JSON: {obj[:80]!r}") from e
    if not isinstance(obj, dict):
        raise NotConvertible(f"tool call is not an object: {obj!r:.80}")
    fn = obj.get("function", obj)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise NotConvertible(f"tool call without a name: {obj!r:.80}")
    function = {"name": fn["name"], "arguments": _parse_args(fn.get("arguments", {}))}
    out: dict[str, Any] = {"type": "function", "function": function}
    if isinstance(obj.get("id"), str):
        out["id"] = obj["id"]
    return out


def _calls(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise NotConvertible(f"function_call value is not JSON: {value[:80]!r}") from e
    return [_call(c) for c in (value if isinstance(value, list) else [value])]


def _weight(item: dict[str, Any]) -> float | None:
    for key in ("weight", "loss_weight"):
        if item.get(key) is not None:
            return float(item[key])
    return None


def _openai_message(item: Any) -> tuple[dict[str, Any], float | None]:
    if not isinstance(item, dict) or not isinstance(item.get("role"), str):
        raise NotConvertible(f"not a message: {item!r:.80}")
    msg: dict[str, Any] = {"role": item["role"]}
    content, calls = item.get("content"), [_call(c) for c in item.get("tool_calls") or []]
    reasoning = [item[k] for k in ("reasoning_content", "reasoning") if isinstance(item.get(k), str)][:1]
    if isinstance(content, list):
        texts = []
        for part in content:
            kind, value = part.get("type"), part.get("text", part.get("value"))
            if kind == "text":
                texts.append(value)
            elif kind == "reasoning":
                reasoning.append(value)
            elif kind == "tool_call":
                calls += _calls(value)
            else:
                raise NotConvertible(f"content part of type {kind!r}")
        content = "".join(texts)
    elif content is not None and not isinstance(content, str):
        raise NotConvertible(f"content is {type(content).__name__}")
    if content is not None:
        msg["content"] = content
    if calls:
        msg["tool_calls"] = calls
    if reasoning:
        msg["reasoning_content"] = "\n".join(reasoning)
    for key in ("name", "tool_call_id"):
        if isinstance(item.get(key), str):
            msg[key] = item[key]
    return msg, _weight(item)


def _sharegpt_message(item: Any) -> tuple[dict[str, Any], float | None]:
    source = item.get("from") if isinstance(item, dict) else None
    if source == "function_call":
        return {"role": "assistant", "content": "", "tool_calls": _calls(item.get("value"))}, _weight(item)
    if source not in SHAREGPT_ROLES or not isinstance(item.get("value"), str):
        raise NotConvertible(f"not a ShareGPT message: {item!r:.80}")
    return {"role": SHAREGPT_ROLES[source], "content": item["value"]}, _weight(item)


def _tools(record: dict[str, Any]) -> list[Any] | None:
    tools = record.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools) if tools.strip() else None
    if tools is not None and not isinstance(tools, list):
        raise NotConvertible("tools is not a list")
    return tools or None


def to_hf(record: Any) -> HFRecord:
    """The record as HF messages + tools + per-message weights; NotConvertible for shapes not read here."""
    if not isinstance(record, dict):
        raise NotConvertible(f"record is {type(record).__name__}")
    pairs: list[tuple[dict[str, Any], float | None]] = []
    if isinstance(record.get("system"), str) and record["system"]:
        pairs.append(({"role": "system", "content": record["system"]}, None))
    chat = record.get("messages", record.get("conversations"))
    if isinstance(chat, list) and chat:
        sharegpt = isinstance(chat[0], dict) and "from" in chat[0]
        pairs += [(_sharegpt_message if sharegpt else _openai_message)(item) for item in chat]
    elif isinstance(record.get("instruction"), str) and isinstance(record.get("output"), str):
        for q, a in record.get("history") or []:
            pairs += [({"role": "user", "content": q}, None), ({"role": "assistant", "content": a}, None)]
        text = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        pairs += [({"role": "user", "content": text}, None), ({"role": "assistant", "content": record["output"]}, None)]
    else:
        raise NotConvertible("no messages, conversations or instruction/output")
    return HFRecord([m for m, _ in pairs], _tools(record), [w for _, w in pairs])
