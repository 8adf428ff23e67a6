"""Per trained assistant turn of a Jinja-rendered conversation: its prompt and its completion.

`Derivation.turn(i)` finds the setting (modes.py) under which the turn renders after its own prompt, cuts
the completion at the stop the model emits (turns.py) and checks it before it can become an example:
nothing of another message is trained, and a turn whose content the template drops entirely (only its end
marker would be trained) is left out unless asked. assemble.py then makes the examples.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sftprep.templates.hf_messages import edited
from sftprep.templates.modes import DEFAULT, PROBE_REPLY, PROBE_USER, Setting
from sftprep.templates.turns import (
    Specials,
    Stop,
    common_prefix_len,
    ends_with_marker,
    next_header,
    whitespace_aligned,
    without_trailer,
)
from sftprep.types import Conversation, Message, Reject, Span


class TurnTemplate(Protocol):
    """What a derivation needs of its template (jinja_template.JinjaTemplate)."""

    has_generation_tags: bool

    def render_messages(
        self, messages: list[dict[str, Any]], conv: Conversation, gen: bool, opts: Any, setting: Setting = ...
    ) -> str: ...

    def generation_ranges(self, messages: list[dict[str, Any]], conv: Conversation, opts: Any) -> list[Any]: ...

    def settings(self, opts: Any) -> list[Setting]: ...

    def probe(self, opts: Any, setting: Setting, role: str) -> Stop | None: ...

    def specials(self, opts: Any) -> Specials: ...

    def mismatch_hint(self, d: Derivation, i: int) -> str: ...


PROBE_RESULT = "SFTPREP_PROBE_RESULT_19e2"
PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "sftprep_probe",
        "description": "probe",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}
PROBE_CALL = {"type": "function", "id": "call_probe1", "function": {"name": "sftprep_probe", "arguments": {"q": "x"}}}
ProbeFn = Callable[[list[dict[str, Any]], bool, Setting], str]
Edit = tuple[int, str] | None  # (message index, "drop"): the turn without its reasoning (what a hint checks)


def probe_stop(fn: Callable[..., str], s: Setting, role: str, specials: Specials, markers: bool = True) -> Stop | None:
    """How a probe assistant turn ends when a `role` message follows it ('user' after a reply, 'tool' after
    a tool call): its marker, the next header, or no stop (Stop.how == 'none'). None: no probe renders.
    `markers` False: the template ends no plain turn with a marker, so a special token closing the turn's
    own rendering (GLM-4's `</tool_call>`) is not its stop."""
    user = {"role": "user", "content": PROBE_USER}
    if role == "tool":
        reply = {"role": "assistant", "content": "", "tool_calls": [PROBE_CALL]}
        follow = {"role": "tool", "content": PROBE_RESULT, "tool_call_id": "call_probe1", "name": "sftprep_probe"}
    else:
        reply = {"role": "assistant", "content": PROBE_REPLY}
        follow = {"role": "user", "content": PROBE_USER + " again"}
    tools = [PROBE_TOOL] if role == "tool" else None
    try:
        prompt, own = fn([user], True, s, tools), fn([user, reply], False, s, tools)
    except Exception:
        return None
    try:
        later: str | None = fn([user, reply, follow], False, s, tools)
    except Exception:
        later = None
    if not own.startswith(prompt):
        return None
    body = without_trailer(prompt, own, later, specials)
    trailer = len(body) < len(own) - len(prompt)  # the template writes text after the last message
    stop = ends_with_marker(body, specials) if markers else None
    if stop is not None:
        return replace(stop, trailer=trailer)
    end = len(prompt) + len(body)
    if later is not None and later.startswith(own[:end]):
        stop = next_header(body, later[end:], specials)
        if stop is not None:
            return replace(stop, trailer=trailer)
    return Stop(body, "", how="none", trailer=trailer)


@dataclass
class TurnResult:
    """Assistant message `index`: the prompt at inference, the completion text after it and how many of its
    characters are trained (the stop is left out with --no-train-on-eos)."""

    index: int
    setting: Setting
    edit: str  # "" (the turn as it is), "drop" (without its reasoning: the hint checks it)
    prompt: str
    text: str
    trained_len: int
    stop: Stop
    aligned: bool
    content: Span  # in `text`


class Derivation:
    """One record's renders (cached) and its turns."""

    def __init__(self, tmpl: TurnTemplate, conv: Conversation, messages: list[dict[str, Any]], opts: Any) -> None:
        self.t, self.conv, self.msgs, self.opts = tmpl, conv, messages, opts
        self.specials = tmpl.specials(opts)
        self._renders: dict[tuple[object, ...], str] = {}
        self.log: list[tuple[list[dict[str, Any]], bool, Setting, str]] | None = None  # every render, if a list

    def render(self, upto: int, gen: bool, s: Setting = DEFAULT, edit: Edit = None, follow: Any = None) -> str:
        key = (upto, gen, s, edit, id(follow))
        if key not in self._renders:
            msgs = [edited(m, edit[1]) if edit and k == edit[0] else m for k, m in enumerate(self.msgs[:upto])]
            if follow is not None:
                msgs.append(follow)
            self._renders[key] = self._render_messages(msgs, gen, s)
        return self._renders[key]

    def _render_messages(self, msgs: list[dict[str, Any]], gen: bool, s: Setting) -> str:
        text = self.t.render_messages(msgs, self.conv, gen, self.opts, s)
        if self.log is not None:
            self.log.append((msgs, gen, s, text))
        return text

    def full(self, s: Setting = DEFAULT, edit: Edit = None) -> str:
        return self.render(len(self.msgs), False, s, edit)

    def assistant_index(self, i: int) -> int:
        return sum(1 for m in self.conv.messages[:i] if m.role == "assistant")

    # -- one turn ---------------------------------------------------------------------------------
    def turn(self, i: int) -> TurnResult | Reject:
        if i == 0:
            return self._drop(i, "no_prompt", "the conversation starts with this assistant message: no prompt")
        for s in self.t.settings(self.opts):  # the turn as it is (non-thinking mode left all reasoning out)
            try:
                prompt, own = self.render(i, True, s), self.render(i + 1, False, s)
            except Exception:  # the render stage's caller turns a template failure into a reject
                if s is DEFAULT:
                    raise
                continue
            if own.startswith(prompt):
                return self._complete(i, s, None, prompt, own, len(prompt), aligned=False)
        aligned = self._aligned(i)
        if aligned is not None:
            return aligned
        return self._mismatch(i)

    def _aligned(self, i: int) -> TurnResult | Reject | None:
        """A turn whose rendering differs from its prompt only in whitespace (chujiezheng's indented templates
        write the header otherwise than the generation prompt), or only in the history before the turn's header
        (Mistral): the completion is what follows the prompt's header in the turn's rendering."""
        for s in self.t.settings(self.opts):
            try:
                prompt, own = self.render(i, True, s), self.render(i + 1, False, s)
            except Exception:
                continue
            start = whitespace_aligned(prompt, own)
            if start is None:
                start = self._after_same_header(i, prompt, own)
            if start is not None:
                return self._complete(i, s, None, prompt, own, start, aligned=True)
        return None

    def _after_same_header(self, i: int, prompt: str, own: str) -> int | None:
        """Where the turn starts in `own` when the history renders otherwise at inference (Mistral writes the
        system message into the last user message of the prompt only) but the turn's header is the same: the
        prompt's text after the last message before the turn (its content, then the header) is found in `own`
        right before the turn's own content."""
        prev = next((m.full_content for m in reversed(self.conv.messages[:i]) if m.full_content.strip()), "")
        at = prompt.rfind(prev) if prev else -1
        if at < 0:
            return None
        anchor = prev + prompt[at + len(prev) :]  # the last content and everything the prompt writes after it
        content = self.conv.messages[i].full_content.strip()
        limit = own.rfind(content) if content else len(own)
        found = own.rfind(anchor, 0, max(0, limit) + len(anchor))
        if found < 0 or (content and found + len(anchor) > limit):
            return None
        return found + len(anchor)

    def _complete(
        self, i: int, s: Setting, edit: Edit, prompt: str, own: str, start: int, aligned: bool
    ) -> TurnResult | Reject:
        stop = self._stop_without_later(i, s, own[start:])
        if stop is None:
            later = self._later(i, s, edit)
            body = without_trailer(own[:start], own, later, self.specials)
            stop = self._stop(i, s, own[:start] + body, body, later)
        msg = self.conv.messages[i]
        text = stop.text if self.opts.train_on_eos else stop.text[: len(stop.text) - len(stop.added)]
        trained_len = len(text) if self.opts.train_on_eos or stop.added else len(text) - len(stop.stop)
        content = msg.full_content.strip()
        body_end = len(text) - len(stop.stop) if stop.stop and text.endswith(stop.stop) else len(text)
        at = text.rfind(content, 0, body_end) if content else -1  # not inside the stop ('x' of '<|eot|>')
        span = Span(at, at + len(content)) if at >= 0 else Span(0, 0)
        r = TurnResult(i, s, edit[1] if edit else "", prompt, text, trained_len, stop, aligned, span)
        if not self.opts.train_reasoning and msg.reasoning and edit is None:
            r = _untrain_reasoning(r, msg)
        return self._check(r)

    def _later(self, i: int, s: Setting, edit: Edit) -> str | None:
        """A render that goes on after message i: the conversation's own, or one with a probe follow-up."""
        if i < len(self.msgs) - 1:
            try:
                return self.full(s, edit)
            except Exception:
                return None
        own = self.render(i + 1, False, s, edit)
        later = None
        for role in ("tool", "user") if self.conv.messages[i].tool_calls else ("user",):
            try:
                later = self.render(i + 1, False, s, edit, follow=_FOLLOW[role])
            except Exception:
                continue
            if later != own:  # a template that renders no tool message: the user follow-up shows the trailer
                return later
        return later

    def _stop_without_later(self, i: int, s: Setting, body: str) -> Stop | None:
        """The last turn's stop with no render beyond it, where the probes show the template ends turns with a
        marker and writes nothing after the last message (its rendering ends with its own marker)."""
        if i < len(self.msgs) - 1:
            return None  # the conversation's own render goes on after the turn: it is rendered already
        role = "tool" if self.conv.messages[i].tool_calls else "user"
        plain, probe = self.t.probe(self.opts, s, "user"), self.t.probe(self.opts, s, role)
        if plain is None or probe is None or plain.how != "marker" or probe.how != "marker":
            return None
        if plain.trailer or probe.trailer:
            return None
        return ends_with_marker(body, self.specials)

    def _stop(self, i: int, s: Setting, rendered: str, body: str, later: str | None) -> Stop:
        nxt = self.conv.messages[i + 1].role if i + 1 < len(self.msgs) else None
        role = "tool" if (nxt == "tool" or (nxt is None and self.conv.messages[i].tool_calls)) else "user"
        plain = self.t.probe(self.opts, s, "user")
        if plain is None or plain.how == "marker":
            stop = ends_with_marker(body, self.specials)
            if stop is not None:
                return stop
        if later is not None and later.startswith(rendered):
            stop = next_header(body, later[len(rendered) :], self.specials)
            if stop is not None:
                return stop
        probe = self.t.probe(self.opts, s, role)
        if probe is not None and probe.how == "next_header":
            return Stop(body + probe.added, probe.stop, probe.added, probe.known, "next_header")
        return Stop(body, "", how="none")  # the template renders no stop: none is made up (counted, warned)

    def _check(self, r: TurnResult) -> TurnResult | Reject:
        """Nothing of another message is trained; a turn with nothing of its own to train is left out."""
        i, msg = r.index, self.conv.messages[r.index]
        trained = r.text[: r.trained_len]
        own = _own_texts(self.msgs[i])
        for j, other in enumerate(self.conv.messages[:i]):
            c = other.full_content.strip()
            if c and c in trained and not any(c in o for o in own) and self._renders_inside(r, j):
                return self._drop(
                    i,
                    "other_message_trained",
                    f"the text the model would generate for this turn holds messages[{j}] ({other.role}) "
                    f"{_clip(c)}; the template does not render the turn apart from it",
                )
        body = r.text[: len(r.text) - len(r.stop.stop)] if r.text.endswith(r.stop.stop) else r.text
        if (not body.strip() or self.specials.only_specials(body)) and not self.opts.train_marker_only:
            what = "its content, tool calls and reasoning" if (msg.full_content or msg.tool_calls) else "anything"
            left = f"only its end marker {r.stop.stop!r} would be trained" if r.stop.stop else "nothing is left"
            return self._drop(
                i,
                "nothing_to_train",
                f"the template renders none of {what} for this turn: {left}; fix: use a template that renders it"
                + (", or pass --train-marker-only" if r.stop.stop else ""),
            )
        return r

    def _renders_inside(self, r: TurnResult, j: int) -> bool:
        """Message j's content is part of turn r's completion: the completion changes with it (a short text
        can equally be the template's own: 'json' in a tool call's fence)."""
        sentinel = "\ue010SFTPREP_OTHER\ue011"
        msgs = [dict(m, content=sentinel) if k == j else m for k, m in enumerate(self.msgs[: r.index + 1])]
        try:
            prompt = self._render_messages(msgs[:-1], True, r.setting)
            own = self._render_messages(msgs, False, r.setting)
        except Exception:
            return True
        if r.aligned:  # the turn's text is the end of its own render
            return sentinel in own[max(0, len(own) - len(r.text) - len(sentinel)) :]
        return not own.startswith(prompt) or sentinel in own[len(prompt) :]

    def _drop(self, i: int, reason: str, detail: str) -> Reject:
        c = self.conv
        where = f"{c.source_file}:{c.source_line}"
        return Reject(
            c.source_file, c.source_line, reason, f"{where}: messages[{i}]: {detail}", turn=self.assistant_index(i)
        )

    def _mismatch(self, i: int) -> Reject:
        prompt, own = self.render(i, True), self.render(i + 1, False)
        cut = common_prefix_len(prompt, own)
        return self._drop(
            i,
            "generation_prompt_mismatch",
            f"the generation prompt continues with {prompt[cut : cut + 40]!r} where the template renders this "
            f"assistant turn as {own[cut : cut + 60]!r}, so no prompt exists from which the model would produce "
            f"it; {self.t.mismatch_hint(self, i)}",
        )


_FOLLOW = {
    "user": {"role": "user", "content": PROBE_USER},
    "tool": {"role": "tool", "content": PROBE_RESULT, "tool_call_id": "call_probe1"},
}


def _own_texts(m: dict[str, Any]) -> list[str]:
    texts = [str(m.get("content") or ""), str(m.get("reasoning_content") or "")]
    texts += [json.dumps(c, ensure_ascii=False) + str(c) for c in m.get("tool_calls") or []]
    return texts


def _clip(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def _untrain_reasoning(r: TurnResult, msg: Message) -> TurnResult:
    """--no-train-reasoning: the reasoning and what precedes the answer become context."""
    reasoning = (msg.reasoning or "").strip()
    at = r.text.find(reasoning) if reasoning else -1
    if at < 0:
        return r
    after = at + len(reasoning)
    content = msg.full_content.strip()
    begin = r.text.find(content, after) if content else -1
    cut = begin if begin >= 0 else after
    content = Span(max(0, r.content.start - cut), max(0, r.content.end - cut))
    return replace(
        r, prompt=r.prompt + r.text[:cut], text=r.text[cut:], trained_len=r.trained_len - cut, content=content
    )
