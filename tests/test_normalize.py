"""RawRecord -> Conversation | Reject: every format, every reject reason, and the real datasets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sftprep import normalize_conversations as nc_module
from sftprep.errors import ConfigError
from sftprep.normalize_conversations import REASONS, detect_format, normalize_conversations
from sftprep.records import read_records
from sftprep.types import Conversation, Message, RawRecord, Reject, ToolCall

FILE = "data/train.jsonl"
LINE = 7


def norm(data: Any, **kwargs: Any) -> Conversation | Reject:
    return normalize_conversations(RawRecord(FILE, LINE, data=data), **kwargs)


def ok(data: Any, **kwargs: Any) -> Conversation:
    result = norm(data, **kwargs)
    assert isinstance(result, Conversation), result
    assert result.source_file == FILE and result.source_line == LINE
    return result


def rejected(data: Any, reason: str, path: str | None = None, **kwargs: Any) -> Reject:
    result = norm(data, **kwargs)
    assert isinstance(result, Reject), result
    assert result.reason == reason, result.message
    assert result.reason in REASONS
    assert (result.source_file, result.line) == (FILE, LINE)
    assert result.message.startswith(f"{FILE}:{LINE}: "), result.message
    if path is not None:
        assert result.message.startswith(f"{FILE}:{LINE}: {path}: "), result.message
    assert "fix:" in result.message
    assert result.record is data
    return result


def chat(*pairs: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in pairs], **extra}


U = Message("user", "hi")
A = Message("assistant", "hello")

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
    assert conv.messages[1] == Message("assistant", "", tool_calls=(ToolCall("takeoff", '{"h": 100}', "call_1"),))
    assert conv.messages[2] == Message("tool", "ok", name="takeoff", tool_call_id="call_1")
    assert conv.messages[3] == Message("assistant", "up", reasoning="it worked")
    assert conv.tools == ({"type": "function", "function": {"name": "takeoff"}},)


def test_missing_content_with_tool_calls_is_empty_string() -> None:
    data = {
        "messages": [
            {"role": "user", "content": "fly"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        ]
    }
    assert ok(data).messages[1] == Message("assistant", "", tool_calls=(ToolCall("f", "{}"),))


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
    assert len(ok(data).messages) == 5
    assert len(ok(data, merge_consecutive=True).messages) == 5


def test_misplaced_system() -> None:
    r = rejected(chat(("user", "q"), ("system", "s"), ("assistant", "a")), "misplaced_system", "messages[1]")
    assert "first message" in r.message


def test_no_assistant_turn() -> None:
    r = rejected(chat(("system", "s"), ("user", "q")), "no_assistant_turn", "record")
    assert "[system, user]" in r.message


def test_no_user_turn() -> None:
    rejected(chat(("system", "s"), ("assistant", "a")), "no_user_turn", "record")


# ---------------------------------------------------------------------------- sharegpt


def test_sharegpt_roles_system_tools_and_function_calls() -> None:
    data = {
        "system": "sys",
        "tools": '[{"name": "f"}]',
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": '{"name": "f", "arguments": {"a": 1}}'},
            {"from": "observation", "value": "42"},
            {"from": "gpt", "value": "it is 42"},
            {"from": "user", "value": "and?"},
            {"from": "model", "value": "m"},
        ],
    }
    conv = ok(data)
    assert conv.source_format == "sharegpt"
    assert conv.tools == ({"name": "f"},)
    assert conv.messages == (
        Message("system", "sys"),
        Message("user", "q"),
        Message("assistant", "", tool_calls=(ToolCall("f", {"a": 1}),)),
        Message("tool", "42"),
        Message("assistant", "it is 42"),
        Message("user", "and?"),
        Message("assistant", "m"),
    )


@pytest.mark.parametrize("name", ["gpt", "assistant", "model", "chatgpt", "bing", "bard"])
def test_sharegpt_assistant_aliases(name: str) -> None:
    conv = ok({"conversations": [{"from": "human", "value": "q"}, {"from": name, "value": "a"}]})
    assert conv.messages[1] == Message("assistant", "a")


@pytest.mark.parametrize("name", ["observation", "tool", "function"])
def test_sharegpt_tool_aliases(name: str) -> None:
    conv = ok(
        {
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": name, "value": "x"},
                {"from": "gpt", "value": "a"},
            ]
        }
    )
    assert conv.messages[1] == Message("tool", "x")


def test_sharegpt_in_messages_key_and_weights() -> None:
    conv = ok({"messages": [{"from": "human", "value": "q", "loss_weight": 0.0}, {"from": "gpt", "value": "a"}]})
    assert conv.messages == (Message("user", "q", weight=0.0), Message("assistant", "a"))
    assert conv.source_format == "sharegpt"


def test_sharegpt_bad_function_call() -> None:
    data = {
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": "call f please"},
        ]
    }
    r = rejected(data, "invalid_tool_call", "conversations[1].value")
    assert "not valid JSON" in r.message


def test_sharegpt_unknown_from_and_role_map() -> None:
    data = {"conversations": [{"from": "customer", "value": "q"}, {"from": "gpt", "value": "a"}]}
    r = rejected(data, "unknown_role", "conversations[0].from")
    assert "--role-map" in r.message
    assert ok(data, role_map={"customer": "human"}).messages[0] == Message("user", "q")


def test_sharegpt_null_value_and_wrong_system() -> None:
    rejected({"conversations": [{"from": "human", "value": None}, {"from": "gpt", "value": "a"}]}, "null_content")
    data = {
        "system": ["x"],
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
    }
    rejected(data, "wrong_type", "system")


# ---------------------------------------------------------------------------- alpaca


def test_alpaca_with_input() -> None:
    conv = ok({"instruction": "Translate", "input": "bonjour", "output": "hello "})
    assert conv.messages == (Message("user", "Translate", input="bonjour"), Message("assistant", "hello "))
    assert conv.messages[0].full_content == "Translate\n\nbonjour"
    assert conv.source_format == "alpaca"


@pytest.mark.parametrize("extra", [{"input": ""}, {}, {"input": None}])
def test_alpaca_without_input(extra: dict[str, Any]) -> None:
    conv = ok({"instruction": "Say hi", "output": "hi", **extra})
    assert conv.messages == (Message("user", "Say hi"), Message("assistant", "hi"))


def test_alpaca_system_and_history() -> None:
    data = {"instruction": "q3", "output": "a3", "system": "sys", "history": [["q1", "a1"], ["q2", "a2"]]}
    assert ok(data).messages == (
        Message("system", "sys"),
        Message("user", "q1"),
        Message("assistant", "a1"),
        Message("user", "q2"),
        Message("assistant", "a2"),
        Message("user", "q3"),
        Message("assistant", "a3"),
    )


def test_alpaca_seed_task_one_instance() -> None:
    data = {"id": "t", "instruction": "Antonym?", "instances": [{"input": "hot", "output": "cold"}]}
    assert ok(data).messages == (Message("user", "Antonym?", input="hot"), Message("assistant", "cold"))


def test_alpaca_seed_task_many_instances() -> None:
    data = {"instruction": "x", "instances": [{"input": "", "output": "a"}, {"input": "", "output": "b"}]}
    r = rejected(data, "multiple_instances", "instances")
    assert "2 instances" in r.message and "one record per instance" in r.message


@pytest.mark.parametrize(
    ("data", "reason", "path"),
    [
        ({"instruction": "x"}, "no_assistant_turn", "output"),
        ({"instruction": "x", "instances": []}, "no_assistant_turn", "instances"),
        ({"instruction": 3, "output": "y"}, "wrong_type", "instruction"),
        ({"instruction": "x", "output": ["y"]}, "wrong_type", "output"),
        ({"instruction": "x", "input": 5, "output": "y"}, "wrong_type", "input"),
        ({"instruction": "x", "output": "y", "history": [["q"]]}, "wrong_type", "history[0]"),
        ({"instruction": "x", "output": "y", "history": [["q", 1]]}, "wrong_type", "history[0][1]"),
        ({"instruction": "x", "instances": [{"input": "i"}]}, "no_assistant_turn", "instances[0].output"),
    ],
)
def test_alpaca_rejects(data: Any, reason: str, path: str) -> None:
    rejected(data, reason, path)


# ---------------------------------------------------------------------------- prompt-completion


def test_prompt_completion_strings_are_raw() -> None:
    conv = ok({"prompt": "2+2=", "completion": " 4"})
    assert conv.raw_prompt == "2+2=" and conv.raw_completion == " 4"
    assert conv.messages == (Message("user", "2+2="), Message("assistant", " 4"))
    assert conv.source_format == "prompt-completion"


def test_prompt_completion_message_lists() -> None:
    data = {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
    }
    conv = ok(data)
    assert conv.messages == (Message("system", "s"), Message("user", "q"), Message("assistant", "a"))
    assert conv.raw_prompt is None


def test_prompt_completion_rejects() -> None:
    data = {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "user", "content": "a"}]}
    rejected(data, "no_assistant_turn", "completion")
    rejected({"prompt": "q", "completion": [{"role": "assistant", "content": "a"}]}, "wrong_type", "prompt")
    bad = {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": 1}]}
    rejected(bad, "wrong_type", "completion[0].content")


# ---------------------------------------------------------------------------- detection and forcing


def test_detection_is_per_record() -> None:
    records = [
        {"instruction": "a", "output": "b"},
        chat(("user", "q"), ("assistant", "a")),
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        {"prompt": "p", "completion": "c"},
    ]
    formats = [ok(r).source_format for r in records]
    assert formats == ["alpaca", "messages", "sharegpt", "prompt-completion"]
    assert [detect_format(r) for r in records] == formats
    assert detect_format({"question": 1}) is None


def test_unknown_format_lists_keys_shapes_and_flag() -> None:
    r = rejected({"question_id": 81, "turns": ["a"]}, "unknown_format", "record")
    assert "[question_id, turns]" in r.message
    assert "--format" in r.message
    for shape in ("messages", "sharegpt", "alpaca", "prompt-completion"):
        assert shape in r.message


def test_forced_format() -> None:
    alpaca = {"instruction": "a", "output": "b"}
    assert ok(alpaca, fmt="alpaca").source_format == "alpaca"
    r = rejected(alpaca, "format_mismatch", "record", fmt="messages")
    assert "--format messages" in r.message and "alpaca" in r.message
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    rejected(sharegpt, "format_mismatch", fmt="messages")
    assert ok(sharegpt, fmt="sharegpt").source_format == "sharegpt"
    rejected({"conversations": []}, "empty_messages", fmt="sharegpt")
    rejected({"x": 1}, "format_mismatch", fmt="prompt-completion")


def test_unknown_fmt_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown --format"):
        norm({"instruction": "a", "output": "b"}, fmt="csv")


# ---------------------------------------------------------------------------- reader errors and robustness


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"a": 1,,}\n', "invalid_json"),
        (b'{"a": 1', "truncated_line"),
        (b'{"a": NaN}\n', "nan_literal"),
        (b"[1]\n", "not_object"),
        (b'"x"\n', "not_object"),
        (b'{"a": "\xff"}\n', "bad_encoding"),
    ],
)
def test_reader_errors_become_rejects(tmp_path: Path, content: bytes, reason: str) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"instruction": "a", "output": "b"}\n' + content)
    results = [normalize_conversations(r) for r in read_records(p)]
    assert isinstance(results[0], Conversation)
    bad = results[1]
    assert isinstance(bad, Reject)
    assert bad.reason == reason
    assert bad.line == 2 and bad.source_file == str(p)
    assert bad.message.startswith(f"{p}:2: ") and "fix:" in bad.message
    assert bad.raw_text is not None and bad.record is None


def test_internal_error_becomes_a_reject(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(data: Any, role_map: Any) -> Any:
        raise RuntimeError("kaboom")

    monkeypatch.setitem(nc_module._PARSERS, "alpaca", boom)
    r = norm({"instruction": "a", "output": "b"})
    assert isinstance(r, Reject)
    assert r.reason == "internal_error" and "kaboom" in r.message and r.message.startswith(f"{FILE}:{LINE}: ")


@pytest.mark.parametrize(
    "data", [None, [], "x", {"messages": [None]}, {"messages": [{}]}, {"prompt": None, "completion": None}]
)
def test_odd_data_never_raises(data: Any) -> None:
    result = norm(data)
    assert isinstance(result, Reject)
    assert result.reason in REASONS and result.reason != "internal_error"


# ---------------------------------------------------------------------------- real datasets

DATA = Path(__file__).parents[2] / "shared" / "data"


def _data_file(rel: str) -> Path:
    path = DATA / rel
    if not path.is_file():
        pytest.skip(f"real dataset {path} not present (the ../shared/data checkout is optional)")
    return path


def _normalize_file(rel: str) -> list[Conversation | Reject]:
    return [normalize_conversations(r) for r in read_records(_data_file(rel))]


def _conversations(results: list[Conversation | Reject]) -> list[Conversation]:
    return [r for r in results if isinstance(r, Conversation)]


@pytest.mark.shared
def test_every_real_record_normalizes_or_has_a_known_reason() -> None:
    if not DATA.is_dir():
        pytest.skip(f"real datasets not present at {DATA} (the ../shared/data checkout is optional)")
    files = sorted(p for p in DATA.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".gz"))
    assert files
    for path in files:
        counts: Counter[str] = Counter()
        for raw in read_records(path):
            result = normalize_conversations(raw)
            if isinstance(result, Reject):
                assert result.reason in REASONS and result.reason != "internal_error", result.message
                assert result.message.startswith(f"{path}:{raw.line}: ")
            counts[result.reason if isinstance(result, Reject) else "ok"] += 1
        assert counts, path


@pytest.mark.shared
def test_glaive_toolcall_function_calls_and_observations() -> None:
    results = _normalize_file("llama_factory/glaive_toolcall_en_demo.json")
    convs = _conversations(results)
    assert len(convs) == len(results) == 300
    first = convs[0]
    assert first.source_format == "sharegpt"
    assert first.tools is not None and first.tools[0]["name"] == "search_recipes"
    assert first.messages[3] == Message(
        "assistant",
        "",
        tool_calls=(ToolCall("search_recipes", {"ingredients": ["chicken", "bell peppers", "rice"]}),),
    )
    assert first.messages[4].role == "tool" and first.messages[4].content.startswith('{"recipes": ')
    assert sum(1 for c in convs for m in c.messages if m.tool_calls) > 100


@pytest.mark.shared
def test_v1_sft_demo_loss_weights() -> None:
    convs = _conversations(_normalize_file("llama_factory/v1_sft_demo.jsonl"))
    assert len(convs) == 500
    assert convs[0].messages[0] == Message("user", "hi", weight=0.0)
    for conv in convs:
        for m in conv.messages:
            assert m.weight == (0.0 if m.role == "user" else 1.0)


@pytest.mark.shared
def test_reason_tool_use_has_reasoning_and_tool_calls() -> None:
    results = _normalize_file("llama_factory/reason_tool_use_demo_50.jsonl")
    convs = _conversations(results)
    assert len(convs) == len(results) == 50
    assistants = [m for c in convs for m in c.messages if m.role == "assistant"]
    assert all(m.reasoning for m in assistants)
    calls = [tc for m in assistants for tc in m.tool_calls]
    assert calls and all(isinstance(tc.name, str) and isinstance(tc.arguments, dict) for tc in calls)
    second = convs[1]
    assert second.messages[2].tool_calls == (ToolCall("get_movie_details", {"title": "Inception"}),)
    assert second.messages[2].content == ""
    assert second.messages[3].role == "tool"
    assert sum(1 for c in convs if c.tools) > 25


@pytest.mark.shared
def test_mt_bench_questions_are_not_training_data() -> None:
    results = _normalize_file("fastchat/mt_bench_question.jsonl")
    assert results and all(isinstance(r, Reject) and r.reason == "unknown_format" for r in results)
    assert "turns" in results[0].message  # type: ignore[union-attr]


@pytest.mark.shared
def test_toy_chat_bad_rows_rejected_rest_normalize() -> None:
    results = _normalize_file("openai_cookbook/toy_chat_fine_tuning.jsonl")
    assert len(results) == 5
    rejects = {r.line: r.reason for r in results if isinstance(r, Reject)}
    assert rejects == {4: "no_user_turn"}  # system + assistant, no user
    assert len(_conversations(results)) == 4


@pytest.mark.shared
def test_seed_tasks_normalize_via_instances() -> None:
    results = _normalize_file("stanford_alpaca/seed_tasks.jsonl")
    convs = _conversations(results)
    assert len(convs) == len(results) == 175
    assert convs[1].messages == (
        Message("user", "What is the relation between the given pairs?", input="Night : Day :: Right : Left"),
        Message("assistant", "The relation between the given pairs is that they are opposites."),
    )


@pytest.mark.shared
def test_drone_training_tool_calls() -> None:
    convs = _conversations(_normalize_file("openai_cookbook/drone_training.jsonl"))
    assert len(convs) == 103
    msg = convs[0].messages[2]
    assert msg == Message("assistant", "", tool_calls=(ToolCall("takeoff_drone", '{"altitude": 100}', "call_id"),))
    assert convs[0].tools and convs[0].tools[0]["type"] == "function"
