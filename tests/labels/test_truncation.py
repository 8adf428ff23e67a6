"""labels/truncation.py: --truncation right (keep the first N tokens) and the conversation edits behind
--truncation history (drop the oldest whole exchange) and per-turn examples (only_turn)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from dummy_tokenizer import MARKER_IDS, build_dummy_tokenizer, hand_ids
from hand_render import chatml

from sftprep.labels.build_loss_labels import encode_and_label
from sftprep.labels.truncation import drop_oldest_exchange, only_turn, truncate_right
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import Conversation, Message, ToolCall

IGNORE = -100
IM_END = MARKER_IDS["<|im_end|>"]


def conv(*messages: Message, tools: tuple[dict[str, str], ...] | None = None) -> Conversation:
    return Conversation(tuple(messages), "t.jsonl", 9, tools=tools)


S = Message("system", "sys")
U1, A1 = Message("user", "u1"), Message("assistant", "a1")
U2, A2 = Message("user", "u2"), Message("assistant", "a2")
U3, A3 = Message("user", "u3"), Message("assistant", "a3")
CALL = Message("assistant", "", tool_calls=(ToolCall("f", "{}", "c1"),), content_null=True)
RESULT = Message("tool", "42", tool_call_id="c1")


def roles_and_contents(c: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in c.messages]


# -- truncate_right ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dummy() -> BPETokenizer:
    return BPETokenizer(build_dummy_tokenizer(), "dummy", "0")


def test_right_keeps_the_first_tokens_and_recounts(dummy: BPETokenizer) -> None:
    r = chatml(("user", "Hi"), ("assistant", "Yo"), ("user", "Q"), ("assistant", "Abc"))
    (e,) = encode_and_label([r], dummy)
    n = len(hand_ids(r.text.split("Abc")[0])) + 2  # through "Ab" of the last turn: "c" and its marker cut off
    cut = truncate_right(e, n)
    assert cut.input_ids.tolist() == hand_ids(r.text)[:n]
    assert cut.labels.tolist() == e.labels.tolist()[:n]
    assert [int(x) for x in cut.labels if x != IGNORE] == [ord("Y"), ord("o"), IM_END, ord("A"), ord("b")]
    assert cut.num_trainable == 5
    assert e.num_trainable == 7 and len(e.input_ids) == len(hand_ids(r.text))  # the original is unchanged


def test_right_with_room_to_spare_changes_nothing(dummy: BPETokenizer) -> None:
    (e,) = encode_and_label([chatml(("user", "Hi"), ("assistant", "Yo"))], dummy)
    same = truncate_right(e, 10_000)
    assert same.input_ids.tolist() == e.input_ids.tolist() and same.labels.tolist() == e.labels.tolist()


def test_right_can_leave_no_trainable_token(dummy: BPETokenizer) -> None:
    (e,) = encode_and_label([chatml(("user", "Hi"), ("assistant", "Yo"))], dummy)
    assert truncate_right(e, 3).num_trainable == 0


# -- drop_oldest_exchange ------------------------------------------------------------------------------------


def test_the_oldest_exchange_goes_and_the_system_message_stays() -> None:
    shorter, dropped = drop_oldest_exchange(conv(S, U1, A1, U2, A2, U3, A3)) or (None, 0)
    assert shorter is not None and dropped == 2
    assert roles_and_contents(shorter) == [
        ("system", "sys"),
        ("user", "u2"),
        ("assistant", "a2"),
        ("user", "u3"),
        ("assistant", "a3"),
    ]


def test_without_a_system_message() -> None:
    found = drop_oldest_exchange(conv(U1, A1, U2, A2))
    assert found is not None
    assert roles_and_contents(found[0]) == [("user", "u2"), ("assistant", "a2")] and found[1] == 2


def test_an_exchange_is_everything_up_to_the_next_user_message() -> None:
    """A tool call, its result and the reply after it go with their user message: the context never starts
    with an assistant reply or a tool result."""
    found = drop_oldest_exchange(conv(S, U1, CALL, RESULT, A1, U2, A2))
    assert found is not None
    assert roles_and_contents(found[0]) == [("system", "sys"), ("user", "u2"), ("assistant", "a2")]
    assert found[1] == 4


def test_an_assistant_message_before_the_first_user_goes_with_it() -> None:
    found = drop_oldest_exchange(conv(A1, U2, A2, U3, A3))
    assert found is not None
    assert roles_and_contents(found[0]) == [("user", "u3"), ("assistant", "a3")] and found[1] == 3


@pytest.mark.parametrize(
    "messages",
    [(S, U1, A1), (U1, CALL, RESULT, A1), (U1, A1, U2), (S, U1, A1, U2, Message("user", "again"))],
    ids=["one-exchange", "one-exchange-with-tools", "no-assistant-after-the-next-user", "trailing-users"],
)
def test_none_when_only_the_last_exchange_is_left(messages: tuple[Message, ...]) -> None:
    assert drop_oldest_exchange(conv(*messages)) is None


def test_repeated_drops_end_at_the_last_exchange() -> None:
    c: Conversation | None = conv(S, U1, A1, U2, A2, U3, A3)
    seen = []
    while c is not None:
        seen.append([m.content for m in c.messages if m.role == "user"])
        found = drop_oldest_exchange(c)
        c = found[0] if found else None
    assert seen == [["u1", "u2", "u3"], ["u2", "u3"], ["u3"]]


def test_where_it_came_from_is_kept() -> None:
    tools = ({"type": "function"},)
    found = drop_oldest_exchange(conv(U1, A1, U2, A2, tools=tools))
    assert found is not None
    assert (found[0].source_file, found[0].source_line, found[0].tools) == ("t.jsonl", 9, tools)


# -- only_turn -----------------------------------------------------------------------------------------------


def test_only_turn_keeps_the_conversation_through_that_turn() -> None:
    found = only_turn(conv(S, U1, A1, U2, A2, U3, A3), 1)
    assert found is not None
    shorter, idx = found
    assert idx == 4
    assert roles_and_contents(shorter) == [
        ("system", "sys"),
        ("user", "u1"),
        ("assistant", "a1"),
        ("user", "u2"),
        ("assistant", "a2"),
    ]
    assert [m.weight for m in shorter.messages] == [None, None, 0, None, None]  # the earlier turn untrained


def test_only_turn_keeps_the_turns_own_weight() -> None:
    found = only_turn(conv(U1, A1, U2, replace(A2, weight=1)), 1)
    assert found is not None and found[0].messages[-1].weight == 1 and found[0].messages[1].weight == 0


def test_only_the_first_turn() -> None:
    found = only_turn(conv(U1, A1, U2, A2), 0)
    assert found is not None
    assert found[0].messages == (U1, A1) and found[1] == 1


def test_only_turn_past_the_last_is_none() -> None:
    assert only_turn(conv(U1, A1, U2, A2), 2) is None
    assert only_turn(conv(U1), 0) is None
