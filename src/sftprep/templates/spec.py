"""Declarative chat templates (templates/builtin.json) and their exact, span-tracking renderer.

A spec renders every message independently and concatenates, so it preserves prefixes by
construction: the text before an assistant turn's trained region is exactly the history rendered
with the generation prompt (`assistant_header`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

from sftprep.templates.base import RenderOptions, is_trainable_assistant, tool_call_json, unsupported
from sftprep.types import Conversation, Message, Reject, RenderedConversation, Span, TurnSpan


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    description: str = ""
    bos: str = ""
    system: str | None = None
    system_in_first_user: str | None = None
    default_system: str | None = None
    default_system_with_input: str | None = None
    user: str = "{content}"
    user_with_input: str | None = None
    tool: str | None = None
    assistant_header: str = ""
    assistant: str = "{content}"
    end_of_turn: str = ""
    after_turn: str = ""
    reasoning: str | None = None
    tool_call: str | None = None
    tool_call_separator: str = ""
    tools: str | None = None
    markers: tuple[str, ...] = ()


@cache
def builtin_specs() -> dict[str, TemplateSpec]:
    raw = json.loads(resources.files("sftprep.templates").joinpath("builtin.json").read_text("utf-8"))
    known = {f.name for f in fields(TemplateSpec)}
    specs = {}
    for name, body in raw.items():
        if name.startswith("_"):
            continue
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"builtin.json: template {name!r} has unknown fields {sorted(unknown)}")
        body = {**body, "markers": tuple(body.get("markers", ()))}
        specs[name] = TemplateSpec(name=name, **body)
    return specs


_PLACEHOLDER = re.compile(r"\{(content|input|system|bos|eos|reasoning|call|tools)\}")


def _sub(fmt: str, **values: str) -> str:
    """Fill placeholders in one pass, so substituted text is never expanded again."""
    if "{" not in fmt:
        return fmt
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), fmt)


class _Builder:
    """Concatenates rendered parts while tracking character positions."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0

    def add(self, text: str) -> None:
        if text:
            self.parts.append(text)
            self.pos += len(text)

    def add_around(self, fmt: str, content: str, prefix: str = "", **values: str) -> Span:
        """Render `fmt` whose {content} is `prefix` + `content`; return the content's span."""
        before, _, after = fmt.partition("{content}")
        self.add(_sub(before, **values))
        self.add(prefix)
        start = self.pos
        self.add(content)
        span = Span(start, self.pos)
        self.add(_sub(after, **values))
        return span

    def text(self) -> str:
        return "".join(self.parts)


class SpecTemplate:
    """A ChatTemplate backed by a TemplateSpec."""

    def __init__(self, spec: TemplateSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.source_text = json.dumps(spec.__dict__, sort_keys=True, ensure_ascii=False)

    def end_of_turn(self, opts: RenderOptions) -> str | None:
        return _sub(self.spec.end_of_turn, bos=opts.bos_token, eos=opts.eos_token) or None

    def markers(self, opts: RenderOptions) -> list[str]:
        return [m for m in (_sub(x, bos=opts.bos_token, eos=opts.eos_token) for x in self.spec.markers) if m]

    def render(self, conv: Conversation, opts: RenderOptions) -> list[RenderedConversation] | Reject:
        if conv.raw_prompt is not None and conv.raw_completion is not None:
            return [render_verbatim(conv, opts)]
        problem = self._check_supported(conv)
        if problem:
            return problem
        return [self._render(conv, opts)]

    def _check_supported(self, conv: Conversation) -> Reject | None:
        spec, name = self.spec, self.spec.name
        roles = {m.role for m in conv.messages}
        fix = "a template that renders them (HINT)"  # the pipeline names one verified with this tokenizer
        if "tool" in roles and spec.tool is None:
            return unsupported(conv, name, "tool messages", fix)
        if any(m.tool_calls for m in conv.messages) and spec.tool_call is None:
            return unsupported(conv, name, "assistant tool_calls", fix)
        if conv.tools and spec.tools is None:
            return unsupported(conv, name, "tool definitions", fix)
        has_system = bool(conv.messages) and conv.messages[0].role == "system"
        if has_system and spec.system is None:
            if spec.system_in_first_user is None:
                return unsupported(conv, name, "a system message", "--system-policy never")
            if len(conv.messages) < 2 or conv.messages[1].role != "user":
                return unsupported(conv, name, "a system message not followed by a user turn", "fix the data")
        return None

    def _render(self, conv: Conversation, opts: RenderOptions) -> RenderedConversation:
        spec = self.spec
        vals = {"bos": opts.bos_token, "eos": opts.eos_token}
        b = _Builder()
        b.add(_sub(spec.bos, **vals))
        messages = list(conv.messages)
        spans: list[Span | None] = [None] * len(messages)
        folded_system: str | None = None
        system_text = self._system_text(conv)
        if messages and messages[0].role == "system":
            if spec.system is None:
                folded_system = system_text
            else:
                spans[0] = b.add_around(spec.system, system_text or "", **vals)
        elif system_text is not None and spec.system is not None:
            b.add_around(spec.system, system_text, **vals)
        turns: list[TurnSpan] = []
        for i, msg in enumerate(messages):
            if msg.role == "system":
                continue
            if msg.role == "assistant":
                spans[i], turn = self._render_assistant(b, msg, i, len(turns), opts, vals)
                turns.append(turn)
            elif msg.role == "tool":
                spans[i] = b.add_around(spec.tool or "{content}", msg.content, **vals)
            else:
                spans[i] = self._render_user(b, msg, folded_system, vals)
                folded_system = None
        return RenderedConversation(text=b.text(), message_spans=spans, turns=turns, conversation=conv)

    def _system_text(self, conv: Conversation) -> str | None:
        spec = self.spec
        text = None
        if conv.messages and conv.messages[0].role == "system":
            text = conv.messages[0].content
        elif spec.default_system is not None:
            with_input = any(m.input for m in conv.messages if m.role == "user")
            text = (spec.default_system_with_input if with_input else None) or spec.default_system
        if conv.tools and spec.tools is not None:
            tools = "\n".join(json.dumps(t, ensure_ascii=False) for t in conv.tools)
            text = (text or "") + _sub(spec.tools, tools=tools)
        return text

    def _render_user(self, b: _Builder, msg: Message, system: str | None, vals: dict[str, str]) -> Span:
        spec = self.spec
        if msg.input and spec.user_with_input:
            fmt, content, vals = spec.user_with_input, msg.content, {**vals, "input": msg.input}
        else:
            fmt, content = spec.user, msg.full_content
        prefix = ""
        if system is not None and spec.system_in_first_user:
            # the fold format is "<before>{content}" with the system text in <before>
            prefix = _sub(spec.system_in_first_user.partition("{content}")[0], system=system)
        return b.add_around(fmt, content, prefix=prefix, **vals)

    def _render_assistant(
        self, b: _Builder, msg: Message, index: int, nth: int, opts: RenderOptions, vals: dict[str, str]
    ) -> tuple[Span, TurnSpan]:
        spec = self.spec
        b.add(_sub(spec.assistant_header, **vals))
        start = b.pos
        before, _, after = spec.assistant.partition("{content}")
        b.add(_sub(before, **vals))
        if msg.reasoning is not None and spec.reasoning is not None:
            b.add(_sub(spec.reasoning, reasoning=msg.reasoning))
            if not opts.train_reasoning:
                start = b.pos
        content_start = b.pos
        b.add(msg.content)
        content = Span(content_start, b.pos)
        if msg.tool_calls and spec.tool_call is not None:
            calls = [_sub(spec.tool_call, call=tool_call_json(c.name, c.arguments)) for c in msg.tool_calls]
            sep = spec.tool_call_separator
            b.add((sep if msg.content else "") + sep.join(calls))
        b.add(_sub(after, **vals))
        eot_start = b.pos
        b.add(_sub(spec.end_of_turn, **vals))
        end = b.pos if opts.train_on_eos else eot_start
        b.add(_sub(spec.after_turn, **vals))
        trained = is_trainable_assistant(msg) and (opts.train_tool_calls or not msg.tool_calls)
        return content, TurnSpan(index, nth, start, end, content, trained)


def render_verbatim(conv: Conversation, opts: RenderOptions) -> RenderedConversation:
    """prompt/completion strings: concatenated verbatim, then eos; the completion (and eos) is trained."""
    prompt, completion = conv.raw_prompt or "", conv.raw_completion or ""
    text = prompt + completion + opts.eos_token
    p, c = Span(0, len(prompt)), Span(len(prompt), len(prompt) + len(completion))
    turn = TurnSpan(1, 0, len(prompt), len(text) if opts.train_on_eos else c.end, c, True)
    return RenderedConversation(text=text, message_spans=[p, c], turns=[turn], conversation=conv)


def spec_to_dict(spec: TemplateSpec) -> dict[str, Any]:
    return {k: v for k, v in spec.__dict__.items() if v not in (None, "", ())}
