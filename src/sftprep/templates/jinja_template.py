"""A Hugging Face Jinja chat template as a ChatTemplate: exact trainable spans without generation tags.

For each assistant turn i the text the model sees at inference is P_i = render(history, generation
prompt). When every P_i is a prefix of the full render, the conversation is one example and turn i's
trainable region is the full text from len(P_i) through the end-of-turn marker. Otherwise each turn is
rendered on its own (history + generation prompt, then the turn), exactly as at inference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import jinja2

from sftprep.templates.base import RenderOptions, is_trainable_assistant
from sftprep.templates.hf_jinja import (
    TemplateRaised,
    compile_template,
    has_generation_tags,
    render,
    template_variables,
)
from sftprep.templates.opacity import content_opaque
from sftprep.templates.skeleton import (
    Skeleton,
    build_skeleton,
    fill,
    rendered_from_skeleton,
    sentinel_conversation,
    shape_key,
)
from sftprep.templates.spec import render_verbatim
from sftprep.templates.turn_alignment import common_prefix_len, completion_start, marker_between, turn_end
from sftprep.types import Conversation, Message, Reject, RenderedConversation, Span, TurnSpan

PROBE_USER = "Hello sftprep probe"
PROBE_REPLY = "SFTPREP_PROBE_REPLY_7f3a"
MAX_SKELETONS = 4096  # distinct conversation shapes cached per template
PROBE_ERRORS = (TemplateRaised, jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError)


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


@dataclass
class _Aligned:
    """Turn `index`: the prompt at inference and the completion the model must generate after it."""

    index: int
    prompt: str
    completion: str
    content: Span  # in prompt + completion coordinates


class JinjaTemplate:
    """A ChatTemplate backed by HF Jinja source."""

    def __init__(self, source: str, name: str = "jinja", special_tokens: tuple[str, ...] = ()) -> None:
        self.source_text = source
        self.name = name
        self.special_tokens = special_tokens
        self._compiled: jinja2.Template = compile_template(source)
        self.has_generation_tags = has_generation_tags(source)
        self._marker_cache: dict[tuple[str, str], str | None] = {}
        self._skeletons: dict[tuple[object, ...], Skeleton | None] = {}
        self.variables_read = template_variables(source)

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
        """The end-of-turn marker, found by rendering probe conversations (never from model names)."""
        key = (opts.bos_token, opts.eos_token)
        if key not in self._marker_cache:
            self._marker_cache[key] = self._probe_marker(opts)
        return self._marker_cache[key]

    def _probe_marker(self, opts: RenderOptions) -> str | None:
        probe = Conversation(messages=(), source_file="<probe>", source_line=0)
        user, reply = {"role": "user", "content": PROBE_USER}, {"role": "assistant", "content": PROBE_REPLY}
        follow = {"role": "user", "content": PROBE_USER + " again"}
        for head in ([], [{"role": "system", "content": "S"}]):
            try:
                two = self.render_messages([*head, user, reply], probe, False, opts)
            except PROBE_ERRORS:
                continue
            at = two.find(PROBE_REPLY)
            if at < 0:
                continue
            between = two[at + len(PROBE_REPLY) :]
            try:
                three = self.render_messages([*head, user, reply, follow], probe, False, opts)
            except PROBE_ERRORS:
                three = ""
            at3 = three.find(PROBE_REPLY)
            if at3 >= 0:  # what follows the reply both as last turn and before another turn
                tail3 = three[at3 + len(PROBE_REPLY) :]
                between = between[: common_prefix_len(between, tail3)]
            return marker_between(between, self.special_tokens, opts.eos_token)
        return None

    def render(self, conv: Conversation, opts: RenderOptions) -> list[RenderedConversation] | Reject:
        if conv.raw_prompt is not None and conv.raw_completion is not None:
            return [render_verbatim(conv, opts)]
        try:
            fast = self._render_from_skeleton(conv, opts)
            if fast is not None:
                return fast
            return self._render(conv, [message_to_hf(m) for m in conv.messages], opts)
        except TemplateRaised as e:
            return _reject(conv, "template_raised", f"the chat template raised: {e}")
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
            return _reject(conv, "template_error", f"the chat template failed: {type(e).__name__}: {e}")

    def _render_from_skeleton(self, conv: Conversation, opts: RenderOptions) -> list[RenderedConversation] | None:
        """The shape's skeleton filled with the record's contents, when it reproduces the record's render
        exactly: always, for a shape whose template was shown never to look inside contents (opacity.py);
        otherwise checked by one render of the record. None: take the exact path."""
        key = shape_key(conv)
        if key is None:
            return None
        cache_key = (key, opts.bos_token, opts.eos_token, opts.train_on_eos, repr(sorted(opts.template_vars.items())))
        if cache_key not in self._skeletons:
            if len(self._skeletons) >= MAX_SKELETONS:
                return None
            self._skeletons[cache_key] = self._build_skeleton(conv, opts)
        skel = self._skeletons[cache_key]
        if skel is None:
            return None
        text, starts, contents = fill(skel, conv)
        if not skel.opaque and self._render_differs(conv, opts, text):
            return None
        trained = [is_trainable_assistant(conv.messages[t.message_index]) for t in skel.turns]
        return [rendered_from_skeleton(skel, conv, text, starts, contents, trained)]

    def _render_differs(self, conv: Conversation, opts: RenderOptions, text: str) -> bool:
        """The record's own render is not `text` (the template reads inside contents)."""
        return self.render_messages([message_to_hf(m) for m in conv.messages], conv, False, opts) != text

    def _build_skeleton(self, conv: Conversation, opts: RenderOptions) -> Skeleton | None:
        sentinel = sentinel_conversation(conv)
        messages = [message_to_hf(m) for m in sentinel.messages]
        try:
            rendered = self._render(sentinel, messages, opts)
        except PROBE_ERRORS:
            return None
        if isinstance(rendered, Reject) or len(rendered) != 1 or rendered[0].turn >= 0:
            return None
        skel = build_skeleton(rendered[0])
        if skel is None:
            return None
        variables = self.variables(messages, sentinel, False, opts)
        return replace(skel, opaque=content_opaque(self.source_text, variables, rendered[0].text))

    def _render(
        self, conv: Conversation, messages: list[dict[str, Any]], opts: RenderOptions
    ) -> list[RenderedConversation] | Reject:
        marker = self.end_of_turn(opts)
        full, ranges = render(self._compiled, self.variables(messages, conv, False, opts), self.has_generation_tags)
        turns: list[_Turn] = []
        for i, msg in enumerate(conv.messages):
            if msg.role != "assistant":
                continue
            prompt = self.render_messages(messages[:i], conv, True, opts)
            own = full if i == len(messages) - 1 else self.render_messages(messages[: i + 1], conv, False, opts)
            turn = self._align(conv, messages, i, prompt, own, marker, opts)
            if isinstance(turn, Reject):
                return turn
            turns.append(turn)
        append_eos = marker is None and opts.train_on_eos and bool(opts.eos_token)
        if not append_eos and all(full.startswith(t.prompt + t.completion) for t in turns):
            spans = [_Turn(t.index, len(t.prompt), len(t.prompt) + len(t.completion), t.content) for t in turns]
            rendered = _rendered_from(full, conv, spans, opts)
            rendered.tag_disagreements = apply_generation_ranges(rendered, ranges)
            return [rendered]
        out = []
        for nth, t in enumerate(turns):
            text = t.prompt + t.completion + (opts.eos_token if append_eos else "")
            r = _rendered_from(text, conv, [_Turn(t.index, len(t.prompt), len(text), t.content)], opts, nth)
            r.turn = nth
            out.append(r)
        return out

    def _align(
        self,
        conv: Conversation,
        messages: list[dict[str, Any]],
        i: int,
        prompt: str,
        own: str,
        marker: str | None,
        opts: RenderOptions,
    ) -> _Aligned | Reject:
        content = conv.messages[i].full_content.strip()
        history = None
        if not own.startswith(prompt):
            history = self.render_messages(messages[:i], conv, False, opts)
        at = own.rfind(content) if content else -1
        start = completion_start(prompt, own, history, at)
        if start is None:
            cut = common_prefix_len(prompt, own)
            return _reject(
                conv,
                "generation_prompt_mismatch",
                f"messages[{i}]: the generation prompt continues with {prompt[cut : cut + 40]!r} where the template "
                f"renders this assistant turn as {own[cut : cut + 60]!r}, so no prompt exists from which the model "
                "would produce it; fix: a template variable may switch this (this template reads: "
                f"{', '.join(self.variables_read) or 'no extra variables'}; e.g. --template-var enable_thinking=true)",
            )
        end, span, _ = turn_end(own, start, content, marker, opts.train_on_eos)
        shift = len(prompt) - start
        return _Aligned(i, prompt, own[start:end], Span(span.start + shift, span.end + shift))


def _rendered_from(
    text: str, conv: Conversation, turns: list[_Turn], opts: RenderOptions, nth_offset: int = 0
) -> RenderedConversation:
    spans = _find_message_spans(text, conv.messages)
    out_turns = []
    for k, t in enumerate(turns):
        msg = conv.messages[t.index]
        trained = is_trainable_assistant(msg) and (opts.train_tool_calls or not msg.tool_calls)
        out_turns.append(TurnSpan(t.index, k + nth_offset, t.start, t.end, t.content, trained))
    return RenderedConversation(text=text, message_spans=spans, turns=out_turns, conversation=conv)


def apply_generation_ranges(r: RenderedConversation, ranges: list[tuple[int, int]]) -> int:
    """Cross-check derived turn spans against `{% generation %}` ranges; the number that disagree."""
    if not ranges:
        return 0
    disagreements = 0
    for t in r.turns:
        hits = [(a, b) for a, b in ranges if a < t.end and b > t.start]
        if not hits or (min(a for a, _ in hits), max(b for _, b in hits)) != (t.start, t.end):
            disagreements += 1
    return disagreements


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
