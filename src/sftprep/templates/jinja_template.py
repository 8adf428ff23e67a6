"""A Hugging Face Jinja chat template as a ChatTemplate: exact trainable spans without generation tags.

For each assistant turn i the text the model sees at inference is P_i = render(history, generation
prompt). When every P_i is a prefix of the full render, the conversation is one example and turn i's
trainable region is the full text from len(P_i) through the end-of-turn marker. Otherwise each turn is
rendered on its own (history + generation prompt, then the turn), exactly as at inference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jinja2

from sftprep.templates.base import RenderOptions, is_trainable_assistant
from sftprep.templates.hf_jinja import TemplateRaised, compile_template, has_generation_tags, render
from sftprep.templates.spec import render_verbatim
from sftprep.types import Conversation, Message, Reject, RenderedConversation, Span, TurnSpan

PROBE_USER = "Hello sftprep probe"
PROBE_REPLY = "SFTPREP_PROBE_REPLY_7f3a"


def message_to_hf(msg: Message) -> dict[str, Any]:
    """The dict shape HF chat templates expect (tool-call arguments as objects, reasoning_content)."""
    d: dict[str, Any] = {"role": msg.role, "content": msg.full_content}
    if msg.tool_calls:
        d["tool_calls"] = [
            {
                "type": "function",
                "id": c.id,
                "function": {"name": c.name, "arguments": _as_object(c.arguments)},
            }
            for c in msg.tool_calls
        ]
    if msg.reasoning is not None:
        d["reasoning_content"] = msg.reasoning
    if msg.name is not None:
        d["name"] = msg.name
    if msg.tool_call_id is not None:
        d["tool_call_id"] = msg.tool_call_id
    return d


def _as_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


@dataclass
class _Turn:
    index: int
    start: int
    end: int
    content: Span


class JinjaTemplate:
    """A ChatTemplate backed by HF Jinja source."""

    def __init__(self, source: str, name: str = "jinja", special_tokens: tuple[str, ...] = ()) -> None:
        self.source_text = source
        self.name = name
        self.special_tokens = special_tokens
        self._compiled: jinja2.Template = compile_template(source)
        self.has_generation_tags = has_generation_tags(source)
        self._marker_cache: dict[tuple[str, str], str | None] = {}

    # -- rendering ------------------------------------------------------------------------------
    def variables(
        self, messages: list[dict[str, Any]], conv: Conversation, gen: bool, opts: RenderOptions
    ) -> dict[str, Any]:
        v: dict[str, Any] = {
            "bos_token": opts.bos_token,
            "eos_token": opts.eos_token,
            **opts.template_vars,
            "messages": messages,
            "add_generation_prompt": gen,
        }
        if conv.tools:
            v["tools"] = list(conv.tools)
        return v

    def render_messages(
        self, messages: list[dict[str, Any]], conv: Conversation, gen: bool, opts: RenderOptions
    ) -> str:
        return render(self._compiled, self.variables(messages, conv, gen, opts))[0]

    def markers(self, opts: RenderOptions) -> list[str]:
        marker = self.end_of_turn(opts)
        return [marker] if marker else []

    def end_of_turn(self, opts: RenderOptions) -> str | None:
        """The end-of-turn marker: the text after a probe reply up to the first special token."""
        key = (opts.bos_token, opts.eos_token)
        if key not in self._marker_cache:
            self._marker_cache[key] = self._probe_marker(opts)
        return self._marker_cache[key]

    def _probe_marker(self, opts: RenderOptions) -> str | None:
        probe = Conversation(messages=(), source_file="<probe>", source_line=0)
        convs = [
            [{"role": "user", "content": PROBE_USER}, {"role": "assistant", "content": PROBE_REPLY}],
            [
                {"role": "system", "content": "S"},
                {"role": "user", "content": PROBE_USER},
                {"role": "assistant", "content": PROBE_REPLY},
            ],
        ]
        for messages in convs:
            try:
                text = self.render_messages(messages, probe, False, opts)
            except (TemplateRaised, jinja2.TemplateError, TypeError, ValueError):
                continue
            at = text.find(PROBE_REPLY)
            if at >= 0:
                return find_marker(text[at + len(PROBE_REPLY) :], self.special_tokens, opts.eos_token)
        return None

    def render(self, conv: Conversation, opts: RenderOptions) -> list[RenderedConversation] | Reject:
        if conv.raw_prompt is not None and conv.raw_completion is not None:
            return [render_verbatim(conv, opts)]
        messages = [message_to_hf(m) for m in conv.messages]
        try:
            return self._render(conv, messages, opts)
        except TemplateRaised as e:
            return _reject(conv, "template_raised", f"the chat template raised: {e}")
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as e:
            return _reject(conv, "template_error", f"the chat template failed: {type(e).__name__}: {e}")

    def _render(
        self, conv: Conversation, messages: list[dict[str, Any]], opts: RenderOptions
    ) -> list[RenderedConversation] | Reject:
        marker = self.end_of_turn(opts)
        full = self.render_messages(messages, conv, False, opts)
        positions = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        prompts = [self.render_messages(messages[:i], conv, True, opts) for i in positions]
        append_eos = marker is None and opts.train_on_eos and bool(opts.eos_token)
        if not append_eos and all(full.startswith(p) for p in prompts):
            turns = [self._locate(full, i, len(p), marker, conv.messages[i], opts) for i, p in zip(positions, prompts)]
            return [self._rendered(full, conv, turns, opts)]
        return self._render_per_turn(conv, messages, positions, prompts, marker, opts)

    def _render_per_turn(
        self,
        conv: Conversation,
        messages: list[dict[str, Any]],
        positions: list[int],
        prompts: list[str],
        marker: str | None,
        opts: RenderOptions,
    ) -> list[RenderedConversation] | Reject:
        out: list[RenderedConversation] = []
        for nth, (i, prompt) in enumerate(zip(positions, prompts)):
            text = self.render_messages(messages[: i + 1], conv, False, opts)
            if not text.startswith(prompt):
                return _reject(
                    conv,
                    "generation_prompt_mismatch",
                    f"messages[{i}]: the template renders this assistant turn in a way that does "
                    "not start with its own generation prompt, so no exact prompt exists for it",
                )
            turn = self._locate(text, i, len(prompt), marker, conv.messages[i], opts)
            if marker is None and opts.train_on_eos and opts.eos_token:
                text = text[: turn.end] + opts.eos_token
                turn = _Turn(i, turn.start, len(text), turn.content)
            r = self._rendered(text[: turn.end], conv, [turn], opts, nth_offset=nth)
            r.turn = nth
            out.append(r)
        return out

    def _locate(
        self, text: str, index: int, start: int, marker: str | None, msg: Message, opts: RenderOptions
    ) -> _Turn:
        """Turn `index` begins at `start`; find its content and the end-of-turn marker after it."""
        content = msg.full_content.strip()
        at = text.find(content, start) if content else -1
        content_span = Span(at, at + len(content)) if at >= 0 else Span(start, start)
        search_from = content_span.end
        if marker:
            m = text.find(marker, search_from)
            if m >= 0:
                return _Turn(index, start, m + len(marker) if opts.train_on_eos else m, content_span)
        end = content_span.end if at >= 0 else len(text)
        return _Turn(index, start, end, content_span)

    def _rendered(
        self, text: str, conv: Conversation, turns: list[_Turn], opts: RenderOptions, nth_offset: int = 0
    ) -> RenderedConversation:
        spans = _find_message_spans(text, conv.messages)
        out_turns = []
        for k, t in enumerate(turns):
            msg = conv.messages[t.index]
            trained = is_trainable_assistant(msg) and (opts.train_tool_calls or not msg.tool_calls)
            out_turns.append(TurnSpan(t.index, k + nth_offset, t.start, t.end, t.content, trained))
        return RenderedConversation(text=text, message_spans=spans, turns=out_turns, conversation=conv)


def find_marker(tail: str, special_tokens: tuple[str, ...], eos: str) -> str | None:
    """The shortest prefix of `tail` that ends with a special token (or the eos string)."""
    best = -1
    best_tok = ""
    for tok in (*special_tokens, eos):
        if not tok:
            continue
        at = tail.find(tok)
        if at >= 0 and (best < 0 or at < best or (at == best and len(tok) > len(best_tok))):
            best, best_tok = at, tok
    if best < 0:
        return None
    return tail[: best + len(best_tok)]


def _find_message_spans(text: str, messages: tuple[Message, ...]) -> list[Span | None]:
    """Best-effort character span of each message's content, searched in order."""
    spans: list[Span | None] = []
    cursor = 0
    for m in messages:
        content = m.full_content.strip()
        at = text.find(content, cursor) if content else -1
        if at < 0:
            spans.append(None)
            continue
        spans.append(Span(at, at + len(content)))
        cursor = at + len(content)
    return spans


def _reject(conv: Conversation, reason: str, detail: str) -> Reject:
    return Reject(conv.source_file, conv.source_line, reason, f"{conv.source_file}:{conv.source_line}: {detail}")
