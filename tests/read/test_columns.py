"""Column and role mapping (issue #13): --columns renames fields before the shape is detected, --tags maps the
keys and role values of messages as LLaMA-Factory's tags do, JSON-encoded lists are decoded, and a record of
unknown shape is refused with its keys and a mapping checked on it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sftprep.errors import ConfigError
from sftprep.read.columns import ColumnMap, parse_pairs
from sftprep.read.normalize_conversations import normalize_conversations
from sftprep.types import Conversation, RawRecord, Reject


def norm(data: dict[str, Any], columns: dict[str, str] | None = None, tags: dict[str, str] | None = None,
         fmt: str = "auto") -> Conversation | Reject:  # fmt: skip
    cmap = ColumnMap.build(columns, tags)
    return normalize_conversations(RawRecord("d.jsonl", 4, data=data), fmt, columns=cmap)  # type: ignore[arg-type]


def roles(c: Conversation | Reject) -> list[tuple[str, str]]:
    assert isinstance(c, Conversation), c
    return [(m.role, m.content) for m in c.messages]


def test_messages_tools_and_system_from_other_columns() -> None:
    data = {
        "dialog": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        "functions": '[{"name": "f"}]',
        "messages": "ignored: the map says dialog",
    }
    c = norm(data, {"messages": "dialog", "tools": "functions"})
    assert roles(c) == [("user", "hi"), ("assistant", "yo")]
    assert isinstance(c, Conversation) and c.tools == ({"name": "f"},)
    c = norm({"sys": "be kind", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
             {"system": "sys"})  # fmt: skip
    assert roles(c) == [("system", "be kind"), ("user", "q"), ("assistant", "a")]


def test_instruction_and_prompt_completion_shapes() -> None:
    qa = {"question": "2+2?", "answer": "4", "context": "math"}
    c = norm(qa, {"instruction": "question", "output": "answer", "input": "context"})
    assert isinstance(c, Conversation) and c.source_format == "alpaca" and c.messages[0].input == "math"
    c = norm(qa, {"prompt": "question", "completion": "answer"})
    assert isinstance(c, Conversation) and (c.raw_prompt, c.raw_completion) == ("2+2?", "4")
    c = norm({"q": "x", "r": "y"}, {"query": "q", "instruction": "q", "response": "r"})  # LLaMA-Factory aliases
    assert isinstance(c, Conversation) and c.messages[-1].content == "y"


def test_tags_map_message_keys_and_role_values() -> None:
    data = {"chat": [{"speaker": "A", "text": "hi"}, {"speaker": "B", "text": "yo"}, {"speaker": "T", "text": "42"}]}
    tags = {"role_tag": "speaker", "content_tag": "text", "user_tag": "A", "assistant_tag": "B", "observation_tag": "T"}
    c = norm(data, {"messages": "chat"}, tags)
    assert roles(c) == [("user", "hi"), ("assistant", "yo"), ("tool", "42")]


def test_json_encoded_lists_are_decoded() -> None:
    msgs = '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]'
    assert roles(norm({"messages": msgs})) == [("user", "hi"), ("assistant", "yo")]
    hist = '[["q0", "a0"]]'
    c = norm({"instruction": "q1", "output": "a1", "history": hist})
    assert roles(c)[:2] == [("user", "q0"), ("assistant", "a0")]
    bad = norm({"messages": "[not json"})
    assert isinstance(bad, Reject) and bad.reason == "wrong_type"


def test_errors_name_the_data_columns() -> None:
    r = norm({"dialog": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}, {"messages": "dialog"})
    assert isinstance(r, Reject) and r.reason == "unknown_role" and ": dialog[1].role: " in r.message


@pytest.mark.parametrize(
    ("record", "fix"),
    [
        ({"question": "2+2?", "answer": "4"}, "--columns instruction=question,output=answer"),
        ({"dialog": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
         "--columns messages=dialog"),
        ({"turns": [{"speaker": "human", "text": "a"}, {"speaker": "bot", "text": "b"}]},
         "--columns messages=turns --tags role_tag=speaker,content_tag=text,user_tag=human,assistant_tag=bot"),
    ],
)  # fmt: skip
def test_unknown_shape_names_a_mapping_that_works(record: dict[str, Any], fix: str) -> None:
    r = norm(record)
    assert isinstance(r, Reject) and r.reason == "unknown_format"
    assert f"fix: pass {fix} (checked on this record" in r.message
    assert f"keys [{', '.join(record)}]" in r.message
    flags = dict(re.findall(r"--(columns|tags) (\S+)", r.message.split("fix: ")[1].split(" (")[0]))
    c = norm(record, parse_pairs(flags["columns"], "--columns"), parse_pairs(flags.get("tags", ""), "--tags"))
    assert isinstance(c, Conversation)  # the suggested flags do read it


def test_no_suggestion_when_nothing_fits() -> None:
    r = norm({"id": 3, "score": 0.5})
    assert isinstance(r, Reject) and "map the record's fields with --columns FIELD=COLUMN" in r.message


@pytest.mark.parametrize(
    ("columns", "tags", "says"),
    [
        ({"dialogue": "x"}, None, "--columns 'dialogue': not a field sftprep reads"),
        ({"messages": ""}, None, "--columns messages: expected a column name"),
        (None, {"speaker_tag": "x"}, "--tags 'speaker_tag': expected one of role_tag"),
    ],
)
def test_bad_maps_are_refused(columns: Any, tags: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        ColumnMap.build(columns, tags)


def test_parse_pairs() -> None:
    assert parse_pairs("messages=dialog, tools=functions,", "--columns") == {"messages": "dialog", "tools": "functions"}
    with pytest.raises(ConfigError, match="expected FIELD=COLUMN pairs"):
        parse_pairs("messages", "--columns")


def test_only_mapped_columns_read() -> None:
    cmap = ColumnMap.build({"instruction": "instruction", "output": "output"}, None, only_mapped=True)
    data = {"instruction": "q", "output": "a", "system": "ignored as LLaMA-Factory ignores it"}
    c = normalize_conversations(RawRecord("d", 1, data=data), columns=cmap)
    assert roles(c) == [("user", "q"), ("assistant", "a")]
