"""The --system-prompt option: add, prepend, replace or remove a conversation's system message."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sftprep.errors import InputError
from sftprep.types import SYSTEM_POLICIES, Conversation, Message, SystemPolicy

POLICIES = SYSTEM_POLICIES  # validated at the edge (PrepareOptions)


def load_system_prompt(value: str) -> str:
    """The prompt text: `value` itself, or the contents of a file given as `@path`.

    A file is read as UTF-8 (a BOM and one trailing newline are dropped). `@@text` is the literal `@text`.
    """
    if value.startswith("@@"):
        return value[1:]
    if not value.startswith("@"):
        return value
    given = value[1:]
    path = Path(given)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        raise InputError(
            f"system prompt file {given!r} is {what}; expected a UTF-8 text file (--system-prompt @PATH); "
            "fix: check the path, or drop the leading @ to pass the prompt text itself"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"system prompt file {given!r} cannot be read ({exc}); expected a UTF-8 text file; "
            "fix: check its permissions and encoding"
        ) from None
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def maybe_add_system_prompt(conv: Conversation, system_prompt: str | None, policy: SystemPolicy) -> Conversation:
    """Apply `policy` with `system_prompt` to the conversation's (leading) system message.

    - if-missing: add a leading system message when there is none;
    - always: prepend the prompt to the existing system message (joined by a blank line), or add one;
    - replace: replace the existing system message's content, or add one;
    - never: remove every system message (with or without a prompt).
    Without a prompt, every policy but "never" returns `conv` unchanged.
    """
    messages = conv.messages
    if policy == "never":
        if not any(m.role == "system" for m in messages):
            return conv
        return dataclasses.replace(conv, messages=tuple(m for m in messages if m.role != "system"))
    if system_prompt is None:
        return conv
    existing = messages[0] if messages and messages[0].role == "system" else None
    if existing is None:
        return dataclasses.replace(conv, messages=(Message("system", system_prompt), *messages))
    if policy == "if-missing":
        return conv
    content = system_prompt if policy == "replace" or not existing.content else f"{system_prompt}\n\n{existing.content}"
    return dataclasses.replace(conv, messages=(dataclasses.replace(existing, content=content), *messages[1:]))
