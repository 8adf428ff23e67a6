"""What every chat template provides to the render stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from sftprep.types import Conversation, Message, ReasoningMode, Reject, RenderedConversation


@dataclass(frozen=True)
class RenderOptions:
    """Options of the render stage. Token strings come from the tokenizer."""

    bos_token: str = ""
    eos_token: str = ""
    train_on_eos: bool = True
    train_reasoning: bool = True
    train_tool_calls: bool = True
    template_vars: dict[str, Any] = field(default_factory=dict)
    # the tokenizer's named special tokens (bos_token, eos_token, pad_token, ...) as transformers passes them
    # to a template; empty: bos_token and eos_token above
    special_tokens_map: tuple[tuple[str, str], ...] = ()
    reasoning_mode: ReasoningMode = "auto"
    train_marker_only: bool = False
    render_timeout: float = 10.0
    max_chars: int = 8_000_000

    def token_variables(self) -> dict[str, Any]:
        if self.special_tokens_map:
            return dict(self.special_tokens_map)
        return {"bos_token": self.bos_token, "eos_token": self.eos_token}


class ChatTemplate(Protocol):
    name: str
    source_text: str

    def render(self, conv: Conversation, opts: RenderOptions) -> list[RenderedConversation] | Reject:
        """Render a conversation: one RenderedConversation holding every assistant turn's span, or,
        when the template does not preserve prefixes for this conversation, one per assistant turn
        (each rendered exactly as at inference: history + generation prompt, then that turn)."""
        ...

    def end_of_turn(self, opts: RenderOptions) -> str | None:
        """The marker that ends an assistant turn (trained with --train-on-eos); None if there is none."""
        ...

    def markers(self, opts: RenderOptions) -> list[str]:
        """The template's structural markers (special tokens when training a tokenizer)."""
        ...


def template_sha256(template: ChatTemplate) -> str:
    return hashlib.sha256(template.source_text.encode("utf-8")).hexdigest()


def tool_call_json(name: str, arguments: Any) -> str:
    """Hermes-style tool call body: {"name": ..., "arguments": {...}} (arguments parsed when JSON)."""
    args = arguments
    if isinstance(args, str):
        with contextlib.suppress(ValueError):
            args = json.loads(args)
    return json.dumps({"name": name, "arguments": args}, ensure_ascii=False)


def unsupported(conv: Conversation, template: str, what: str, fix: str) -> Reject:
    return Reject(
        source_file=conv.source_file,
        line=conv.source_line,
        reason="template_unsupported",
        message=f"{conv.source_file}:{conv.source_line}: template '{template}' cannot render {what}; fix: {fix}",
    )


def is_trainable_assistant(msg: Message) -> bool:
    return msg.role == "assistant" and msg.weight != 0
