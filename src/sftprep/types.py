"""Typed data objects passed between the pipeline stages (data flows one way).

records -> RawRecord -> Conversation -> RenderedConversation -> Example
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

IGNORE_INDEX = -100

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = get_args(Role)

# The modes of `prepare`, validated once at the edge (PrepareOptions.validate); stages take them as typed.
FormatName = Literal["auto", "messages", "sharegpt", "alpaca", "prompt-completion"]
SystemPolicy = Literal["if-missing", "always", "replace", "never"]
MaskMode = Literal["assistant", "last-turn", "split-turns", "none"]
TruncationMode = Literal["drop", "right", "history"]
ReasoningMode = Literal["auto", "thinking", "non-thinking", "reject"]
FORMATS: tuple[str, ...] = get_args(FormatName)
SYSTEM_POLICIES: tuple[str, ...] = get_args(SystemPolicy)
MASKS: tuple[str, ...] = get_args(MaskMode)
TRUNCATIONS: tuple[str, ...] = get_args(TruncationMode)
REASONING_MODES: tuple[str, ...] = get_args(ReasoningMode)


@dataclass(frozen=True)
class RawRecord:
    """One record as read from an input file, before any interpretation.

    `line` is the 1-based line of a JSONL file or the 1-based index in a JSON array.
    Exactly one of `data` and `error` is set: `error` (what went wrong) when the record could not even be
    parsed, with `error_kind` its stable reason (read/records.py ERROR_KINDS).
    """

    source_file: str
    line: int
    data: Any = None
    error: str | None = None
    error_kind: str | None = None
    raw_text: str | None = None
    size: int = field(default=0, compare=False)  # bytes of input it came from, where known (bounds batches)


@dataclass(frozen=True)
class ToolCall:
    """An assistant tool call. `arguments` keeps what the data had (a JSON string or an object)."""

    name: str
    arguments: Any
    id: str | None = None


@dataclass(frozen=True)
class Message:
    """One canonical message.

    `weight` is 1 (train) or 0 (don't); None means "the mask mode decides".
    `input` is set only for Alpaca records (the optional `input` field), so templates that
    have a with-input variant can render it; for all other templates the user text is
    `full_content` (content, blank line, input).
    `content_null`: the record's content was null or absent (a tool-call message): templates see no
    content key, as transformers passes it. `reasoning_field`: the record's name for the reasoning when
    it was not `reasoning_content` (transformers passes that name too).
    """

    role: Role
    content: str
    weight: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    name: str | None = None
    tool_call_id: str | None = None
    input: str | None = None
    content_null: bool = False
    reasoning_field: str | None = None

    @property
    def full_content(self) -> str:
        if self.input:
            return f"{self.content}\n\n{self.input}"
        return self.content


@dataclass(frozen=True)
class Conversation:
    """A canonical conversation, with where it came from."""

    messages: tuple[Message, ...]
    source_file: str
    source_line: int
    tools: tuple[Any, ...] | None = None
    source_format: str = "messages"
    # Verbatim prompt/completion records: render as prompt + completion with no template.
    raw_prompt: str | None = None
    raw_completion: str | None = None


@dataclass(frozen=True)
class Reject:
    """A record that did not become an example, and why."""

    source_file: str
    line: int
    reason: str  # short machine-readable key, e.g. "invalid_json", "no_assistant_turn"
    message: str  # human sentence: field path, what was expected, the fix or flag
    record: Any = None
    raw_text: str | None = None
    turn: int | None = None  # set when one assistant turn is dropped, not the record

    def location(self) -> str:
        return f"{self.source_file}:{self.line}"


@dataclass(frozen=True)
class Span:
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class TurnSpan:
    """A trainable region of the rendered text: what the model generates for one assistant turn.

    `start` is where the generation prompt ends (the end of the text the model sees at inference),
    `end` is after the end-of-turn marker. `content` is the message's own content inside it.
    `trained` is False for assistant turns that the mask mode or the message weight excludes.
    """

    message_index: int
    assistant_index: int
    start: int
    end: int
    content: Span
    trained: bool = True


@dataclass
class RenderedConversation:
    """The rendered text plus the character spans of every message and every trainable region."""

    text: str
    message_spans: list[Span | None]
    turns: list[TurnSpan]
    conversation: Conversation
    # character positions where a special-token string appears inside message content
    # (encoded as plain text, never as the special token)
    special_in_content: list[Span] = field(default_factory=list)
    # the assistant turn this text was rendered for (one example per turn), -1 for the whole conversation
    turn: int = -1
    # trained turns whose derived span differs from the template's {% generation %} ranges
    tag_disagreements: int = 0
    # template variables beyond the defaults this text was rendered with (the user's and a chosen reasoning
    # switch): anyone rebuilds the exact prompt with them
    template_vars: dict[str, Any] = field(default_factory=dict)
    # what happened to this example's turns (manifest counters: modes, content a template drops, ...)
    counts: dict[str, int] = field(default_factory=dict)
    # trained turns left out of this conversation, and why (written to rejects.jsonl with their turn)
    dropped_turns: list[Reject] = field(default_factory=list)

    @property
    def trained_turns(self) -> list[TurnSpan]:
        return [t for t in self.turns if t.trained]


@dataclass
class Example:
    """One training example, ready to write."""

    input_ids: list[int]
    labels: list[int]
    source_file: str
    source_line: int
    turn: int = -1

    @property
    def num_trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)
