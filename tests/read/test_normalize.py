"""RawRecord -> Conversation | Reject: every format, every reject reason, and the real datasets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from normalize_helpers import FILE, LINE, A, U, chat, norm, ok, rejected  # noqa: F401

from sftprep.templates.hf_messages import message_to_hf
from sftprep.types import Message, ToolCall

# ---------------------------------------------------------------------------- "messages" format


def test_messages_plain_strings() -> None:
    conv = ok(chat(("system", "be nice"), ("user", "hi"), ("assistant", "hello")))
    assert conv.messages == (Message("system", "be nice"), U, A)
    assert conv.source_format == "messages"
    assert conv.tools is None and conv.raw_prompt is None and conv.raw_completion is None


def test_conversations_key_with_roles_is_messages_format() -> None:
    conv = ok({"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    assert conv.messages == (U, A)
    assert conv.source_format == "messages"


def test_text_is_kept_verbatim() -> None:
    conv = ok(chat(("user", "  hi \n"), ("assistant", "\n hello  ")))
    assert [m.content for m in conv.messages] == ["  hi \n", "\n hello  "]


def test_content_parts_openai_and_llama_factory() -> None:
    conv = ok(
        chat(
            ("user", [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
            (
                "assistant",
                [
                    {"type": "reasoning", "value": "think 1"},
                    {"type": "reasoning", "value": "think 2"},
                    {"type": "text", "value": "answer"},
                ],
            ),
        )
    )
    assert conv.messages == (
        Message("user", "ab"),
        Message("assistant", "answer", reasoning="think 1\nthink 2"),
    )


def test_tool_call_parts_string_and_object() -> None:
    conv = ok(
        chat(
            ("user", "go"),
            (
                "assistant",
                [
                    {"type": "tool_call", "value": '{"name": "f", "arguments": {"x": 1}}'},
                    {"type": "tool_call", "value": {"name": "g", "arguments": "{}"}},
                ],
            ),
            ("tool", "1"),
            ("tool", "2"),
            ("assistant", "done"),
        )
    )
    assert conv.messages[1] == Message("assistant", "", tool_calls=(ToolCall("f", {"x": 1}), ToolCall("g", "{}")))
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "tool", "assistant"]


def test_openai_tool_calls_and_tool_message() -> None:
    data = {
        "messages": [
            {"role": "user", "content": "fly"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "takeoff", "arguments": '{"h": 100}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "takeoff", "content": "ok"},
            {"role": "assistant", "content": "up", "reasoning_content": "it worked"},
        ],
        "tools": [{"type": "function", "function": {"name": "takeoff"}}],
    }
    conv = ok(data)
    calls = (ToolCall("takeoff", '{"h": 100}', "call_1"),)
    assert conv.messages[1] == Message("assistant", "", tool_calls=calls, content_null=True)  # no key, as transformers
    assert conv.messages[2] == Message("tool", "ok", name="takeoff", tool_call_id="call_1")
    assert conv.messages[3] == Message("assistant", "up", reasoning="it worked")
    assert conv.tools == ({"type": "function", "function": {"name": "takeoff"}},)


def test_missing_content_with_tool_calls_is_no_content() -> None:
    data = {
        "messages": [
            {"role": "user", "content": "fly"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        ]
    }
    msg = ok(data).messages[1]
    assert msg == Message("assistant", "", tool_calls=(ToolCall("f", "{}"),), content_null=True)
    assert "content" not in message_to_hf(msg)  # transformers drops a None content: templates see no key


def test_reasoning_key() -> None:
    data = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "reasoning": "r"},
        ]
    }
    assert ok(data).messages[1].reasoning == "r"


def test_weights() -> None:
    data = {
        "messages": [
            {"role": "user", "content": "q", "loss_weight": 0.0},
            {"role": "assistant", "content": "a", "loss_weight": 1.0},
            {"role": "user", "content": "q2", "weight": 0},
            {"role": "assistant", "content": "a2", "weight": 1},
            {"role": "user", "content": "q3"},
            {"role": "assistant", "content": "a3", "weight": 1, "loss_weight": 1.0},
        ]
    }
    weights = [m.weight for m in ok(data).messages]
    assert weights == [0.0, 1.0, 0.0, 1.0, None, 1.0]
    assert all(type(w) is float for w in weights if w is not None)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"weight": 0.5}, "weight"),
        ({"weight": True}, "weight"),
        ({"loss_weight": "1"}, "loss_weight"),
        ({"weight": 1, "loss_weight": 0.0}, "loss_weight"),
    ],
)
def test_invalid_weights(extra: dict[str, Any], field: str) -> None:
    data = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", **extra}]}
    rejected(data, "invalid_weight", f"messages[1].{field}")


def test_tools_as_json_string() -> None:
    tools = [{"name": "f", "parameters": {}}]
    assert ok(chat(("user", "q"), ("assistant", "a"), tools=json.dumps(tools))).tools == tuple(tools)
    assert ok(chat(("user", "q"), ("assistant", "a"), tools="")).tools is None
    assert ok(chat(("user", "q"), ("assistant", "a"), tools="[]")).tools is None


@pytest.mark.parametrize(("tools", "path"), [("[{bad json", "tools"), (5, "tools"), ('["x"]', "tools[0]")])
def test_invalid_tools(tools: Any, path: str) -> None:
    rejected(chat(("user", "q"), ("assistant", "a"), tools=tools), "invalid_tools", path)


def test_null_content_without_tool_calls() -> None:
    r = rejected(chat(("user", None), ("assistant", "a")), "null_content", "messages[0].content")
    assert "got null" in r.message
    r = rejected({"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}, "null_content")
    assert "messages[1].content" in r.message


def test_wrong_type_content_names_path_and_type() -> None:
    r = rejected(chat(("user", "q"), ("assistant", 42)), "wrong_type", "messages[1].content")
    assert "expected a string or a list of content parts, got number" in r.message


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": "q"}, "a"]}, "messages[1]"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": 3, "content": "a"}]}, "messages[1].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages[0].content[0].text",
        ),
        ({"messages": [{"role": "user", "content": ["a"]}]}, "messages[0].content[0]"),
    ],
)
def test_wrong_types(data: Any, path: str) -> None:
    rejected(data, "wrong_type", path)


def test_missing_role() -> None:
    rejected(
        {"messages": [{"role": "user", "content": "q"}, {"content": "a"}]},
        "missing_field",
        "messages[1].role",
    )


def test_unsupported_content_part() -> None:
    data = chat(("user", [{"type": "image_url", "image_url": {"url": "x"}}]), ("assistant", "a"))
    r = rejected(data, "unsupported_content", "messages[0].content[0].type")
    assert "'image_url'" in r.message


def test_reasoning_on_user_message_is_rejected() -> None:
    data = chat(("user", [{"type": "reasoning", "value": "r"}]), ("assistant", "a"))
    rejected(data, "unsupported_content", "messages[0].content[0]")


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "q", "tool_calls": [{"name": "f"}]},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "messages[0].tool_calls",
        ),
        (
            chat(("user", "q"), ("assistant", [{"type": "tool_call", "value": "{nope"}])),
            "messages[1].content[0].value",
        ),
        (
            chat(("user", "q"), ("assistant", [{"type": "tool_call", "value": '{"arguments": {}}'}])),
            "messages[1].content[0].value.name",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": None, "tool_calls": "f"},
                ]
            },
            "messages[1].tool_calls",
        ),
    ],
)
def test_invalid_tool_calls(data: Any, path: str) -> None:
    rejected(data, "invalid_tool_call", path)


def test_empty_messages() -> None:
    rejected({"messages": []}, "empty_messages", "messages")
    rejected({"conversations": []}, "empty_messages", "conversations")


def test_unknown_role_and_role_map() -> None:
    data = chat(("human", "q"), ("bot", "a"))
    r = rejected(data, "unknown_role", "messages[0].role")
    assert "'human'" in r.message and "--role-map OLD=NEW" in r.message
    conv = ok(data, role_map={"human": "user", "bot": "assistant"})
    assert conv.messages == (Message("user", "q"), Message("assistant", "a"))


def test_consecutive_roles_rejected_by_default() -> None:
    data = chat(("user", "a"), ("user", "b"), ("assistant", "c"))
    r = rejected(data, "consecutive_roles", "messages[1]")
    assert "--merge-consecutive" in r.message


def test_consecutive_roles_merged_when_asked() -> None:
    data = chat(
        ("system", "s1"),
        ("system", "s2"),
        ("user", "a"),
        ("user", "b"),
        ("assistant", "c"),
        ("assistant", "d"),
    )
    conv = ok(data, merge_consecutive=True)
    assert conv.messages == (
        Message("system", "s1\n\ns2"),
        Message("user", "a\n\nb"),
        Message("assistant", "c\n\nd"),
    )


def test_merge_keeps_tool_calls_and_skips_empty_content() -> None:
    data = {
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "assistant", "content": "text"},
        ]
    }
    rejected(data, "consecutive_roles")
    merged = ok(data, merge_consecutive=True).messages[1]
    assert merged == Message("assistant", "text", tool_calls=(ToolCall("f", "{}"),))


def test_merge_refuses_different_weights() -> None:
    data = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "weight": 0},
            {"role": "assistant", "content": "b", "weight": 1},
        ]
    }
    rejected(data, "consecutive_roles", "messages[2]", merge_consecutive=True)


def test_consecutive_tool_messages_are_fine() -> None:
    data = chat(("user", "q"), ("assistant", "a"), ("tool", "1"), ("tool", "2"), ("assistant", "b"))
    expected = (
        Message("user", "q"),
        Message("assistant", "a"),
        Message("tool", "1"),
        Message("tool", "2"),
        Message("assistant", "b"),
    )
    assert ok(data).messages == expected
    assert ok(data, merge_consecutive=True).messages == expected  # tool results are never merged


def test_misplaced_system() -> None:
    r = rejected(chat(("user", "q"), ("system", "s"), ("assistant", "a")), "misplaced_system", "messages[1]")
    assert "first message" in r.message


def test_no_assistant_turn() -> None:
    r = rejected(chat(("system", "s"), ("user", "q")), "no_assistant_turn", "record")
    assert "[system, user]" in r.message


def test_no_user_turn_is_kept_unless_required() -> None:
    conv = ok(chat(("system", "s"), ("assistant", "a")))  # valid in OpenAI's format; templates render it
    assert [m.role for m in conv.messages] == ["system", "assistant"]
    rejected(chat(("system", "s"), ("assistant", "a")), "no_user_turn", "record", require_user_turn=True)
