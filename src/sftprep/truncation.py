"""Stage 6: `--max-length N` with `--truncation drop|right|history`.

drop: an example longer than N is rejected ("too_long").
right: keep the first N tokens (a turn cut mid-way keeps its trained part, without its marker).
history: drop the oldest exchanges (keeping the system message) and render again, until it fits.
An example left with no trainable token is never emitted.
"""

from __future__ import annotations

from dataclasses import replace

from sftprep.build_loss_labels import Encoded
from sftprep.types import Conversation

TRUNCATION_MODES: tuple[str, ...] = ("drop", "right", "history")


def truncate_right(e: Encoded, max_length: int) -> Encoded:
    return replace(e, input_ids=e.input_ids[:max_length], labels=e.labels[:max_length], trainable=-1)


def drop_oldest_exchange(conv: Conversation) -> Conversation | None:
    """Remove everything after the system message through the first assistant turn that is followed by
    another assistant turn. None when only the last exchange is left."""
    msgs = conv.messages
    first = 1 if msgs and msgs[0].role == "system" else 0
    assistants = [i for i, m in enumerate(msgs) if m.role == "assistant"]
    if len(assistants) < 2:
        return None
    cut = assistants[0] + 1
    while cut < len(msgs) and msgs[cut].role == "tool":
        cut += 1
    rest = msgs[cut:]
    if not any(m.role == "assistant" for m in rest):
        return None
    return replace(conv, messages=msgs[:first] + rest)
