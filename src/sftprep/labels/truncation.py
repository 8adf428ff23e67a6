"""Stage 6: `--max-length N` with `--truncation drop|right|history`.

drop: an example longer than N is rejected ("too_long").
right: keep the first N tokens (a turn cut mid-way keeps its trained part, without its marker).
history: drop the oldest exchanges (a user message through the next one; the system message stays) and
  render again, until it fits; an example of one turn keeps that turn. The context never starts with an
  assistant reply or a tool result, and a conversation whose last exchange fits is never refused.
An example left with no trainable token is never emitted.
"""

from __future__ import annotations

from dataclasses import replace

from sftprep.labels.build_loss_labels import Encoded
from sftprep.types import Conversation


def truncate_right(e: Encoded, max_length: int) -> Encoded:
    return replace(e, input_ids=e.input_ids[:max_length], labels=e.labels[:max_length], trainable=-1)


def drop_oldest_exchange(conv: Conversation) -> tuple[Conversation, int] | None:
    """Remove the oldest exchange (a user message through everything before the next user message), keeping
    the system message, so the context still starts as a conversation does: with a user message, never an
    assistant reply or a tool result. Returns the shorter conversation and how many messages went; None when
    the last exchange with an assistant turn is all that is left."""
    msgs = conv.messages
    first = 1 if msgs and msgs[0].role == "system" else 0
    users = [i for i in range(first, len(msgs)) if msgs[i].role == "user"]
    if len(users) < 2:
        return None
    cut = users[1]
    rest = msgs[cut:]
    if not any(m.role == "assistant" for m in rest):
        return None
    return replace(conv, messages=msgs[:first] + rest), cut - first


def only_turn(conv: Conversation, assistant_index: int) -> tuple[Conversation, int] | None:
    """The conversation through its `assistant_index`-th assistant message, that turn alone trained (weight
    0 on the others); with the index of that message. None if there is no such turn."""
    at = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
    if assistant_index >= len(at):
        return None
    idx = at[assistant_index]
    msgs = tuple(
        replace(m, weight=0) if m.role == "assistant" and i != idx else m
        for i, m in enumerate(conv.messages[: idx + 1])
    )
    return replace(conv, messages=msgs), idx
