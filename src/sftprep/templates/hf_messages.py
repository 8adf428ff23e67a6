"""Records' messages as transformers hands them to a chat template (its `_normalize_chat_messages` and
`_alias_reasoning_fields`), and the message edits the reasoning modes try."""

from __future__ import annotations

import json
from typing import Any

from sftprep.types import Message


def message_to_hf(msg: Message) -> dict[str, Any]:
    """The message as transformers hands it to a template: None-valued keys dropped (a null content is no
    content key), tool-call arguments as objects, reasoning also under `thinking` (and the record's name)."""
    d: dict[str, Any] = {}
    if msg.reasoning is not None:
        d["thinking"] = msg.reasoning
    d["role"] = msg.role
    if not msg.content_null:
        d["content"] = msg.full_content
    if msg.tool_calls:
        d["tool_calls"] = [
            {
                "type": "function",
                **({"id": c.id} if c.id is not None else {}),
                "function": {"name": c.name, "arguments": _as_object(c.arguments)},
            }
            for c in msg.tool_calls
        ]
    if msg.reasoning is not None:
        if msg.reasoning_field:
            d[msg.reasoning_field] = msg.reasoning
        d["reasoning_content"] = msg.reasoning
    if msg.name is not None:
        d["name"] = msg.name
    if msg.tool_call_id is not None:
        d["tool_call_id"] = msg.tool_call_id
    return d


def _as_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def without_reasoning(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in ("thinking", "reasoning_content", "reasoning")}


def edited(m: dict[str, Any], kind: str) -> dict[str, Any]:
    """Message `m` edited as a reasoning mode tries it: "drop" leaves its reasoning out."""
    assert kind == "drop", kind
    return without_reasoning(m)
