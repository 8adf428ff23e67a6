"""RawRecord -> canonical Conversation, or a Reject that says why (never raises on bad data).

The format is detected per record from its keys (never from the first row of a file), after the column map
(read/columns.py: --columns, --tags) renamed them: messages/conversations with from/value -> "sharegpt", with
role/content -> "messages", instruction -> "alpaca", prompt + completion -> "prompt-completion". A record of
no known shape is rejected with its keys and, where one works on it, the --columns mapping that reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sftprep.read.columns import ColumnMap, decode_json_lists, mapping_flags, suggest_columns
from sftprep.read.formats import (
    Invalid,
    Parsed,
    invalid,
    parse_messages,
    parse_sharegpt,
)
from sftprep.read.formats_instruct import parse_alpaca, parse_prompt_completion
from sftprep.types import Conversation, FormatName, Message, RawRecord, Reject

# Every reason key a Reject from this stage can carry.
REASONS: tuple[str, ...] = (
    # from the reader
    "invalid_json",
    "truncated_line",
    "nan_literal",
    "not_object",
    "bad_encoding",
    "read_error",
    "invalid_row",
    "duplicate",
    # record shape
    "unknown_format",
    "format_mismatch",
    "wrong_type",
    "missing_field",
    "empty_messages",
    "null_content",
    "unsupported_content",
    "invalid_weight",
    "invalid_tool_call",
    "invalid_tools",
    "multiple_instances",
    # conversation structure
    "unknown_role",
    "consecutive_roles",
    "misplaced_system",
    "no_assistant_turn",
    "no_user_turn",
    "internal_error",
)

_SHAPES: dict[str, str] = {
    "messages": 'a "messages" (or "conversations") list of {"role", "content"} objects',
    "sharegpt": 'a "conversations" (or "messages") list of {"from", "value"} objects',
    "alpaca": '"instruction" + "output" (optional "input", "system", "history")',
    "prompt-completion": '"prompt" + "completion"',
}
_ACCEPTED = "; ".join(f"{name}: {shape}" for name, shape in _SHAPES.items())

_READER_FIXES: dict[str, str] = {
    "invalid_json": "fix the JSON (each JSONL line must be one complete JSON object)",
    "truncated_line": "the file looks cut off; re-export or re-download it",
    "nan_literal": "write NaN/Infinity as null or a string",
    "not_object": 'make each record an object, e.g. {"messages": [...]}',
    "bad_encoding": "convert the file to UTF-8 from the encoding it was written in (the command above where "
    "its bytes read as one), or repair the line",
    "read_error": "check that the file is complete (e.g. the gzip stream is intact)",
    "invalid_row": "give the row as many fields as the header (quote fields that hold the separator)",
    "duplicate": "nothing to do: the first occurrence is kept (--dedup); drop --dedup to keep every copy",
}

_PARSERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, str] | None], Parsed]] = {
    "messages": parse_messages,
    "sharegpt": parse_sharegpt,
    "alpaca": parse_alpaca,
    "prompt-completion": parse_prompt_completion,
}


def normalize_conversations(
    raw: RawRecord,
    fmt: FormatName = "auto",
    role_map: Mapping[str, str] | None = None,
    merge_consecutive: bool = False,
    require_user_turn: bool = False,
    columns: ColumnMap | None = None,
) -> Conversation | Reject:
    """Turn one RawRecord into a Conversation, or a Reject with a stable `reason` and a readable message.
    A conversation without a user message ([system, assistant]: valid in OpenAI's format) is kept unless
    `require_user_turn`. `columns` renames the record's fields first (field paths in messages name the data's).

    `fmt` and `columns` are validated at the edge (PrepareOptions); this never raises.
    """
    where = f"{raw.source_file}:{raw.line}"
    if raw.error is not None:
        kind = raw.error_kind or "read_error"
        message = f"{where}: {raw.error}; fix: {_READER_FIXES[kind]}"
        return Reject(raw.source_file, raw.line, kind, message, raw.data, raw.raw_text)
    cmap = columns or ColumnMap()
    try:
        return _normalize(raw, fmt, role_map, merge_consecutive, require_user_turn, cmap)
    except Invalid as exc:
        detail = exc.detail
        if exc.reason == "unknown_format" and isinstance(raw.data, dict):
            detail = detail.replace(_UNKNOWN_FIX, _mapping_fix(raw, fmt, role_map, merge_consecutive, cmap))
        message = f"{where}: {cmap.source_of(exc.path)}: {detail}"
        return Reject(raw.source_file, raw.line, exc.reason, message, raw.data, raw.raw_text)
    except Exception as exc:  # never crash on data: report it
        message = (
            f"{where}: record: internal error while normalizing ({type(exc).__name__}: {exc}); "
            "fix: this is a bug in sftprep, please report it with this record"
        )
        return Reject(raw.source_file, raw.line, "internal_error", message, raw.data, raw.raw_text)


def detect_format(data: Mapping[str, Any]) -> str | None:
    """The format of one record from its keys, or None when no known shape matches."""
    kind = _chat_kind(data)
    if kind is not None:
        return "messages" if kind == "chat" else kind
    if "instruction" in data:
        return "alpaca"
    if "prompt" in data and "completion" in data:
        return "prompt-completion"
    return None


def _chat_kind(data: Mapping[str, Any]) -> str | None:
    """ "sharegpt" / "messages" from the first message; "chat" when the list cannot tell."""
    items = data.get("messages")
    if items is None:
        items = data.get("conversations")
        if items is None:
            return None
    if isinstance(items, list) and items and isinstance(items[0], dict):
        first = items[0]
        if "from" in first or "value" in first:
            return "sharegpt"
        if "role" in first:
            return "messages"
    return "chat"


def _forced_format(data: Mapping[str, Any], fmt: str) -> str:
    if fmt in ("messages", "sharegpt"):
        matches = _chat_kind(data) in (fmt, "chat")
    elif fmt == "alpaca":
        matches = "instruction" in data
    else:
        matches = "prompt" in data and "completion" in data
    if matches:
        return fmt
    detected = detect_format(data)
    got = f"a record in {detected} format" if detected else f"an object with keys {_keys(data)}"
    raise invalid(
        "format_mismatch",
        "record",
        f"{_SHAPES[fmt]} because --format {fmt} was given",
        got,
        "use --format auto to detect the format per record, or fix the data",
    )


def _keys(data: Mapping[str, Any]) -> str:
    keys = list(data)
    shown = ", ".join(map(str, keys[:20]))
    return f"[{shown}{', ...' if len(keys) > 20 else ''}]"


_UNKNOWN_FIX = "convert the records to one of these shapes, or pass --format to force one"
_FIELDS = "messages, system, tools, instruction, input, output, history, prompt, completion"


def _mapping_fix(raw: RawRecord, fmt: str, role_map: Mapping[str, str] | None, merge: bool, cmap: ColumnMap) -> str:
    """The --columns/--tags mapping that reads this record (checked on it), else how to write one."""
    data = cmap.apply(raw.data)
    for candidate in suggest_columns(data):
        trial = ColumnMap.build(candidate["columns"], candidate["tags"])
        try:
            _normalize(raw, fmt, role_map, merge, False, ColumnMap({**cmap.columns, **trial.columns}, trial.tags))
        except Invalid:
            continue
        except Exception:  # a candidate that breaks is no fix
            continue
        flags = mapping_flags(candidate)
        extra = ""
        if "instruction" in candidate["columns"]:
            q, a = candidate["columns"]["instruction"], candidate["columns"]["output"]
            extra = f" (or --columns prompt={q},completion={a}: the two texts concatenated verbatim, no template)"
        return f"pass {flags} (checked on this record; in a data config: the source's columns/tags){extra}"
    return (
        f"map the record's fields with --columns FIELD=COLUMN ({_FIELDS}) and the keys of its messages with "
        "--tags role_tag=KEY,content_tag=KEY,user_tag=VALUE,assistant_tag=VALUE, pass --format to force a shape, "
        "or convert the records"
    )


def _normalize(
    raw: RawRecord,
    fmt: str,
    role_map: Mapping[str, str] | None,
    merge_consecutive: bool,
    require_user_turn: bool,
    cmap: ColumnMap,
) -> Conversation:
    data = raw.data
    if not isinstance(data, dict):
        raise invalid("not_object", "record", "a JSON object", type(data).__name__, _READER_FIXES["not_object"])
    data = cmap.apply(data) if cmap else decode_json_lists(data)
    if fmt == "auto":
        detected = detect_format(data)
        if detected is None:
            raise invalid(
                "unknown_format",
                "record",
                f"one of these shapes: {_ACCEPTED}",
                f"an object with keys {_keys(data)}",
                _UNKNOWN_FIX,
            )
    else:
        detected = _forced_format(data, fmt)
    parsed = _PARSERS[detected](data, role_map)
    messages = check_roles(parsed.messages, parsed.paths, merge_consecutive, require_user_turn)
    return Conversation(
        messages=tuple(messages),
        source_file=raw.source_file,
        source_line=raw.line,
        tools=parsed.tools,
        source_format=detected,
        raw_prompt=parsed.raw_prompt,
        raw_completion=parsed.raw_completion,
    )


# ---------------------------------------------------------------------------- structure checks


def check_roles(
    messages: list[Message], paths: list[str], merge_consecutive: bool, require_user_turn: bool = False
) -> list[Message]:
    """Check the role sequence; merge consecutive same-role messages when asked. Raises Invalid."""
    if not messages:
        raise invalid("empty_messages", "record", "at least one message", "none", "drop the record")
    out: list[Message] = []
    has_user = has_assistant = False
    for message, path in zip(messages, paths, strict=True):
        role = message.role
        if out and role == out[-1].role and role != "tool":
            if not merge_consecutive:
                raise invalid(
                    "consecutive_roles",
                    path,
                    "a different role than the previous message (roles alternate)",
                    f"a second {role} message in a row",
                    "pass --merge-consecutive to join them with a blank line, or fix the data",
                )
            out[-1] = _merge(out[-1], message, path)
            continue
        if role == "system" and out:
            raise invalid(
                "misplaced_system",
                path,
                "a system message only as the first message",
                f"one at position {len(out)}",
                "move it to the start or drop it",
            )
        has_user = has_user or role == "user"
        has_assistant = has_assistant or role == "assistant"
        out.append(message)
    if not has_assistant:
        raise invalid(
            "no_assistant_turn",
            "record",
            "at least one assistant message to train on",
            f"roles {_roles(out)}",
            "add the assistant's answer, or drop the record",
        )
    if require_user_turn and not has_user:
        raise invalid(
            "no_user_turn",
            "record",
            "at least one user message (--require-user-turn)",
            f"roles {_roles(out)}",
            "add the user's turn, map a role to user with --role-map OLD=user, or drop --require-user-turn",
        )
    return out


def _roles(messages: list[Message]) -> str:
    roles = [m.role for m in messages[:12]]
    return "[" + ", ".join(roles) + (", ...]" if len(messages) > 12 else "]")


def _merge(a: Message, b: Message, path: str) -> Message:
    if a.weight != b.weight:
        raise invalid(
            "consecutive_roles",
            path,
            f"consecutive {a.role} messages with the same weight to merge them",
            f"weights {a.weight} and {b.weight}",
            "fix the data",
        )
    content = "\n\n".join(text for text in (a.full_content, b.full_content) if text)
    reasoning = "\n".join(r for r in (a.reasoning, b.reasoning) if r) or None
    return Message(
        a.role,
        content,
        a.weight,
        a.tool_calls + b.tool_calls,
        reasoning,
        a.name or b.name,
        a.tool_call_id or b.tool_call_id,
    )
