"""RawRecord -> Conversation | Reject: every format, every reject reason, and the real datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_DIR
from normalize_helpers import FILE, LINE, A, U, chat, norm, ok, rejected  # noqa: F401

from sftprep.read.normalize_conversations import REASONS, normalize_conversations
from sftprep.read.records import read_records
from sftprep.types import Conversation, Message, Reject, ToolCall

# ---------------------------------------------------------------------------- real datasets

DATA = SHARED_DIR / "data"


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
    assert rejects == {}  # line 4 is system + assistant, no user: valid, kept (--require-user-turn refuses it)
    assert [m.role for m in _conversations(results)[3].messages] == ["system", "assistant"]
    assert len(_conversations(results)) == 5


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
    calls = (ToolCall("takeoff_drone", '{"altitude": 100}', "call_id"),)
    assert msg == Message("assistant", "", tool_calls=calls, content_null=True)
    assert convs[0].tools and convs[0].tools[0]["type"] == "function"
