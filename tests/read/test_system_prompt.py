"""--system-prompt policies and @file loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftprep.errors import ConfigError, InputError
from sftprep.preparation.options import PrepareOptions
from sftprep.read.system_prompt import POLICIES, load_system_prompt, maybe_add_system_prompt
from sftprep.types import Conversation, Message

U = Message("user", "hi")
A = Message("assistant", "hello")
S = Message("system", "old", weight=0.0)


def conv(*messages: Message) -> Conversation:
    return Conversation(messages=messages, source_file="f.jsonl", source_line=3, tools=({"name": "t"},))


@pytest.mark.parametrize(
    ("policy", "with_system", "expected"),
    [
        ("if-missing", False, (Message("system", "NEW"), U, A)),
        ("if-missing", True, (S, U, A)),
        ("always", False, (Message("system", "NEW"), U, A)),
        ("always", True, (Message("system", "NEW\n\nold", weight=0.0), U, A)),
        ("replace", False, (Message("system", "NEW"), U, A)),
        ("replace", True, (Message("system", "NEW", weight=0.0), U, A)),
        ("never", False, (U, A)),
        ("never", True, (U, A)),
    ],
)
def test_policies(policy: str, with_system: bool, expected: tuple[Message, ...]) -> None:
    original = conv(S, U, A) if with_system else conv(U, A)
    result = maybe_add_system_prompt(original, "NEW", policy)
    assert result.messages == expected
    assert (result.source_file, result.source_line, result.tools) == ("f.jsonl", 3, ({"name": "t"},))


def test_always_with_empty_existing_system_has_no_dangling_separator() -> None:
    result = maybe_add_system_prompt(conv(Message("system", ""), U, A), "NEW", "always")
    assert result.messages[0] == Message("system", "NEW")


@pytest.mark.parametrize("policy", ["if-missing", "always", "replace"])
def test_no_prompt_leaves_conversation_unchanged(policy: str) -> None:
    original = conv(S, U, A)
    assert maybe_add_system_prompt(original, None, policy) is original


def test_never_without_prompt_still_removes_system() -> None:
    assert maybe_add_system_prompt(conv(S, U, A), None, "never").messages == (U, A)
    unchanged = conv(U, A)
    assert maybe_add_system_prompt(unchanged, None, "never") is unchanged


def test_unchanged_when_nothing_to_do_returns_same_object() -> None:
    original = conv(S, U, A)
    assert maybe_add_system_prompt(original, "NEW", "if-missing") is original


def test_unknown_policy_is_refused_at_the_edge() -> None:
    assert POLICIES == ("if-missing", "always", "replace", "never")
    with pytest.raises(ConfigError, match="--system-policy 'sometimes'"):
        PrepareOptions(inputs=["x.jsonl"], system_policy="sometimes").validate()  # type: ignore[arg-type]


def test_load_system_prompt_literal_and_escape() -> None:
    assert load_system_prompt("You are helpful.") == "You are helpful."
    assert load_system_prompt("@@handle") == "@handle"
    assert load_system_prompt("") == ""


def test_load_system_prompt_from_file(tmp_path: Path) -> None:
    p = tmp_path / "sys.txt"
    p.write_bytes("\ufeffLine 1\nLine 2 ✓\n".encode())
    assert load_system_prompt(f"@{p}") == "Line 1\nLine 2 ✓"
    p.write_bytes(b"crlf\r\n")
    assert load_system_prompt(f"@{p}") == "crlf"
    p.write_bytes(b"keep inner\n\n")
    assert load_system_prompt(f"@{p}") == "keep inner\n"


def test_load_system_prompt_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_system_prompt(f"@{tmp_path / 'nope.txt'}")
    msg = str(info.value)
    assert "nope.txt" in msg and "missing" in msg and "fix:" in msg
    assert info.value.exit_code == 2
    with pytest.raises(InputError, match="a directory"):
        load_system_prompt(f"@{tmp_path}")


def test_load_system_prompt_bad_encoding(tmp_path: Path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"caf\xe9")
    with pytest.raises(InputError, match="cannot be read"):
        load_system_prompt(f"@{p}")
