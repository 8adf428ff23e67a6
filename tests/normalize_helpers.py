"""Shared helpers of the normalize tests: build a RawRecord, assert a Conversation or a Reject."""

from __future__ import annotations

from typing import Any

from sftprep.read.normalize_conversations import REASONS, normalize_conversations
from sftprep.types import Conversation, Message, RawRecord, Reject

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
