"""Per-format parsers: one record (a dict) -> a list of `Message`s plus record-level fields.

Parsers raise `Invalid` for bad data; `normalize_conversations` turns it into a `Reject`.
Every message also gets a field path (e.g. ``messages[2]``) so later checks can name it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from sftprep.read.records import json_type_name, may_hold_big_integer
from sftprep.types import ROLES, Message, ToolCall

_ROLE_SET = frozenset(ROLES)
SHAREGPT_ROLES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
_ROLE_FIX = "map it with --role-map OLD=NEW (NEW one of system, user, assistant, tool)"


class Invalid(Exception):
    """Bad data in one record: a reject `reason` key, the field `path`, and the human `detail`."""

    def __init__(self, reason: str, path: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.path = path
        self.detail = detail


def invalid(reason: str, path: str, expected: str, got: str, fix: str = "correct the record") -> Invalid:
    return Invalid(reason, path, f"expected {expected}, got {got}; fix: {fix}")


def wrong_type(path: str, expected: str, value: Any, fix: str = "give the field the expected type") -> Invalid:
    return invalid("wrong_type", path, expected, json_type_name(value), fix)


def _not_json(reason: str, path: str, expected: str, exc: ValueError) -> Invalid:
    return invalid(reason, path, expected, f"a string that is not valid JSON ({exc})", "fix the JSON")


def _assistant_only(reason: str, path: str, what: str, role: str) -> Invalid:
    return invalid(reason, path, f"{what} only on assistant messages", f"{what} on a {role} message")


def _null(path: str, item: Mapping[str, Any], key: str, fix: str) -> Invalid:
    return invalid("null_content", path, "a string", "null" if key in item else "nothing", fix)


class Parsed(NamedTuple):
    messages: list[Message]
    paths: list[str]
    tools: tuple[Any, ...] | None = None
    raw_prompt: str | None = None
    raw_completion: str | None = None


# ---------------------------------------------------------------------------- shared pieces


def chat_list(data: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The `messages` (or `conversations`) list of a chat record, checked to be a non-empty list."""
    key = "messages" if data.get("messages") is not None else "conversations"
    items = data.get(key)
    if not isinstance(items, list):
        if items is None:
            raise invalid("empty_messages", key, "a list of messages", "nothing", "add the conversation")
        raise wrong_type(key, "a list of messages", items)
    if not items:
        raise invalid("empty_messages", key, "a non-empty list of messages", "an empty list", "drop it")
    return key, items


def loads_as_json(text: str) -> Any:
    """`json.loads(text)`, by orjson where it gives the same value (2x faster on tool lists, the check below
    included): not for text with 19 digits in a row (orjson makes integers over 64 bits floats); what orjson
    refuses (NaN, lone surrogates, 1e400, bad JSON) json reads or refuses with its own message."""
    if not may_hold_big_integer(text.encode("utf-8", "surrogatepass")):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def parse_tools(data: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Record-level `tools`: a list of objects, or a JSON string holding one (LLaMA-Factory)."""
    tools = data.get("tools")
    if tools is None:
        return None
    if isinstance(tools, str):
        if not tools.strip():
            return None
        try:
            tools = loads_as_json(tools)
        except ValueError as exc:
            raise _not_json("invalid_tools", "tools", "a JSON string holding a list of tools", exc) from None
    if not isinstance(tools, list):
        raise invalid("invalid_tools", "tools", "a list of tool objects", json_type_name(tools))
    for k, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid("invalid_tools", f"tools[{k}]", "a tool object", json_type_name(tool))
    return tuple(tools) if tools else None


def parse_weight(item: Mapping[str, Any], path: str) -> float | None:
    """`weight` (0/1) or LLaMA-Factory `loss_weight` (0.0/1.0) -> 0.0, 1.0 or None."""
    w = item.get("weight")
    lw = item.get("loss_weight")
    if w is None and lw is None:
        return None
    result: float | None = None
    for key, value in (("weight", w), ("loss_weight", lw)):
        if value is None:
            continue
        if type(value) not in (int, float) or value not in (0, 1):
            got = repr(value) if type(value) in (int, float, bool) else json_type_name(value)
            raise invalid("invalid_weight", f"{path}.{key}", "0 or 1", got, "use 0 (don't train) or 1 (train)")
        if result is not None and result != float(value):
            expected = f"the same value as weight ({result:g})"
            raise invalid("invalid_weight", f"{path}.loss_weight", expected, repr(value), "keep only one")
        result = float(value)
    return result


def _tool_call_object(obj: Any, path: str) -> ToolCall:
    expected = "an object with name and arguments"
    if not isinstance(obj, dict):
        raise invalid("invalid_tool_call", path, expected, json_type_name(obj), "fix the tool call")
    fn = obj.get("function")
    fn = fn if isinstance(fn, dict) else obj
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        got = "an empty name" if name == "" else f"name of type {json_type_name(name)}"
        raise invalid("invalid_tool_call", f"{path}.name", expected, got, "give the tool call a name")
    call_id = obj.get("id")
    return ToolCall(name, fn.get("arguments", {}), call_id if isinstance(call_id, str) else None)


def parse_tool_call_value(value: Any, path: str) -> list[ToolCall]:
    """A tool call given as a JSON string or an object (or a list of them): {"name", "arguments"}."""
    obj = value
    if isinstance(value, str):
        try:
            obj = loads_as_json(value)
        except ValueError as exc:
            expected = 'a JSON object like {"name": ..., "arguments": {...}}'
            raise _not_json("invalid_tool_call", path, expected, exc) from None
    calls = obj if isinstance(obj, list) else [obj]
    if not calls:
        raise invalid("invalid_tool_call", path, "at least one tool call", "an empty list")
    if len(calls) == 1:
        return [_tool_call_object(calls[0], path)]
    return [_tool_call_object(c, f"{path}[{k}]") for k, c in enumerate(calls)]


def _openai_tool_calls(raw: Any, path: str) -> list[ToolCall]:
    if not isinstance(raw, list):
        raise invalid("invalid_tool_call", path, "a list of tool calls", json_type_name(raw))
    return [_tool_call_object(c, f"{path}[{k}]") for k, c in enumerate(raw)]


def _system(data: Mapping[str, Any], messages: list[Message], paths: list[str]) -> None:
    """A record-level `system` string (ShareGPT, Alpaca) -> a leading system message."""
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise wrong_type("system", "a string", system)
    if system:
        messages.append(Message("system", system))
        paths.append("system")


def _map_role(role: Any, role_map: Mapping[str, str] | None, path: str) -> str:
    if not isinstance(role, str):
        if role is None:
            raise invalid("missing_field", path, "a role string", "nothing", "add the role")
        raise wrong_type(path, "a role string", role)
    if role_map:
        role = role_map.get(role, role)
    if role not in _ROLE_SET:
        raise invalid("unknown_role", path, "one of system, user, assistant, tool", repr(role), _ROLE_FIX)
    return role


# ---------------------------------------------------------------------------- "messages" (OpenAI)


def _content_parts(parts: list[Any], path: str, role: str) -> tuple[str, str | None, list[ToolCall]]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for j, part in enumerate(parts):
        if type(part) is dict:  # the common parts first: what the checks below accept as they are
            value = part["text"] if "text" in part else part.get("value")
            if type(value) is str:
                ptype = part.get("type")
                if ptype == "text":
                    texts.append(value)
                    continue
                if ptype == "reasoning" and role == "assistant":
                    reasoning.append(value)
                    continue
        ppath = f"{path}[{j}]"
        if not isinstance(part, dict):
            raise wrong_type(ppath, 'a content part object like {"type": "text", "text": ...}', part)
        ptype = part.get("type")
        value = part.get("text") if "text" in part else part.get("value")
        if ptype == "tool_call":
            if role != "assistant":
                raise _assistant_only("invalid_tool_call", ppath, "tool calls", role)
            calls.extend(parse_tool_call_value(value, f"{ppath}.value"))
            continue
        if ptype not in ("text", "reasoning"):
            raise invalid(
                "unsupported_content",
                f"{ppath}.type",
                "a part of type text, reasoning or tool_call",
                repr(ptype),
                "sftprep prepares text-only data; remove other parts (images, audio, ...)",
            )
        if not isinstance(value, str):
            raise wrong_type(f"{ppath}.{'text' if 'text' in part else 'value'}", "a string", value)
        if ptype == "text":
            texts.append(value)
        elif role != "assistant":
            raise _assistant_only("unsupported_content", ppath, "reasoning", role)
        else:
            reasoning.append(value)
    return "".join(texts), "\n".join(reasoning) if reasoning else None, calls


REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # transformers' names, in its order


def _reasoning_field(item: Mapping[str, Any], path: str, role: str) -> tuple[str | None, str | None]:
    """(the reasoning, the record's name for it) from the first of REASONING_FIELDS that is set."""
    key = next((k for k in REASONING_FIELDS if item.get(k) is not None), None)
    if key is None:
        return None, None
    value = item[key]
    if not isinstance(value, str):
        raise wrong_type(f"{path}.{key}", "a string", value)
    if role != "assistant":
        raise _assistant_only("unsupported_content", f"{path}.{key}", "reasoning", role)
    return value, key


def _optional_str(item: Mapping[str, Any], key: str, path: str) -> str | None:
    value = item.get(key)
    if value is None or isinstance(value, str):
        return value
    raise wrong_type(f"{path}.{key}", "a string", value)


def openai_message(item: Any, path: str, role_map: Mapping[str, str] | None) -> Message:
    """One OpenAI/LLaMA-Factory style message object -> Message."""
    if not isinstance(item, dict):
        raise wrong_type(path, "a message object with role and content", item)
    role = _map_role(item.get("role"), role_map, f"{path}.role")
    content = item.get("content")
    if len(item) == 2 and type(content) is str:  # fast path: just role and content
        return Message(role, content)  # type: ignore[arg-type]
    reasoning: str | None = None
    calls: list[ToolCall] = []
    if isinstance(content, list):
        content, reasoning, calls = _content_parts(content, f"{path}.content", role)
    elif content is not None and not isinstance(content, str):
        raise wrong_type(f"{path}.content", "a string or a list of content parts", content)
    raw_calls = item.get("tool_calls")
    if raw_calls:
        if role != "assistant":
            raise _assistant_only("invalid_tool_call", f"{path}.tool_calls", "tool calls", role)
        calls = _openai_tool_calls(raw_calls, f"{path}.tool_calls") + calls
    content_null = content is None
    if content is None:
        if not calls:
            fix = "give the message content (null is allowed only with tool_calls)"
            raise _null(f"{path}.content", item, "content", fix)
        content = ""
    extra, field = _reasoning_field(item, path, role)
    if extra is not None:
        reasoning = extra if reasoning is None else f"{extra}\n{reasoning}"
    return Message(
        role,  # type: ignore[arg-type]
        content,
        parse_weight(item, path),
        tuple(calls),
        reasoning,
        _optional_str(item, "name", path),
        _optional_str(item, "tool_call_id", path),
        content_null=content_null,
        reasoning_field=field if field != "reasoning_content" else None,
    )


def parse_messages(data: Mapping[str, Any], role_map: Mapping[str, str] | None) -> Parsed:
    key, items = chat_list(data)
    paths = [f"{key}[{i}]" for i in range(len(items))]
    messages = [openai_message(item, path, role_map) for item, path in zip(items, paths, strict=True)]
    return Parsed(messages, paths, parse_tools(data))


# ---------------------------------------------------------------------------- "sharegpt"


def _sharegpt_message(item: Any, path: str, role_map: Mapping[str, str] | None) -> Message:
    if not isinstance(item, dict):
        raise wrong_type(path, "a message object with from and value", item)
    source = item.get("from")
    if not isinstance(source, str):
        if source is None:
            raise invalid("missing_field", f"{path}.from", "a role string", "nothing", "add the from field")
        raise wrong_type(f"{path}.from", "a role string", source)
    if role_map:
        source = role_map.get(source, source)
    role = SHAREGPT_ROLES.get(source)
    if role is None:
        expected = "a ShareGPT role (human, gpt, system, function_call, observation, ...)"
        raise invalid("unknown_role", f"{path}.from", expected, repr(source), _ROLE_FIX)
    value = item.get("value")
    weight = parse_weight(item, path)
    if source == "function_call":
        calls = parse_tool_call_value(value, f"{path}.value")
        return Message("assistant", "", weight, tuple(calls))
    if not isinstance(value, str):
        if value is None:
            raise _null(f"{path}.value", item, "value", "give the message a value")
        raise wrong_type(f"{path}.value", "a string", value)
    return Message(role, value, weight)  # type: ignore[arg-type]


def parse_sharegpt(data: Mapping[str, Any], role_map: Mapping[str, str] | None) -> Parsed:
    key, items = chat_list(data)
    messages: list[Message] = []
    paths: list[str] = []
    _system(data, messages, paths)
    for i, item in enumerate(items):
        path = f"{key}[{i}]"
        messages.append(_sharegpt_message(item, path, role_map))
        paths.append(path)
    return Parsed(messages, paths, parse_tools(data))


# ---------------------------------------------------------------------------- "alpaca"
