"""RawRecord -> Conversation | Reject: every format, every reject reason, and the real datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from normalize_helpers import FILE, LINE, A, U, chat, norm, ok, rejected  # noqa: F401

from sftprep.errors import ConfigError
from sftprep.read import normalize_conversations as nc_module
from sftprep.read.normalize_conversations import REASONS, detect_format, normalize_conversations
from sftprep.read.records import read_records
from sftprep.types import Conversation, Message, Reject, ToolCall

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


def test_unknown_fmt_value_is_a_config_error_at_the_edge() -> None:
    from sftprep.preparation.options import PrepareOptions

    with pytest.raises(ConfigError, match="--format 'csv': expected one of auto, messages"):
        PrepareOptions(inputs=["x.jsonl"], format="csv").validate()  # type: ignore[arg-type]


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
