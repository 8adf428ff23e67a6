"""A Hugging Face Jinja chat template as a ChatTemplate: exact trainable spans without generation tags.

The rule, for every trained assistant turn i (derived by rendering, never from model names):
  P_i = render(messages[:i], add_generation_prompt=True)   the prompt the model sees at inference
  R_i = render(messages[:i+1])                              the conversation through the turn
R_i must start with P_i (else another setting of the template's reasoning switch is tried: modes.py); what
the model generates is R_i's rest through the token the engine stops at (turns.py). When every P_i + turn
is a prefix of the conversation's full render, the conversation is one example; otherwise each turn is its
own example: P_i followed by its completion, exactly as at inference.

Messages are passed as transformers passes them (hf_messages.py): no content key where the
record's content is null, reasoning under `reasoning_content` and `thinking`, `tools=None` without tools.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import jinja2

from sftprep.templates.assemble import TEXT_COUNTS, to_rendered
from sftprep.templates.base import RenderOptions, is_trainable_assistant
from sftprep.templates.derive import Derivation, TurnResult, probe_stop
from sftprep.templates.hf_jinja import (
    TemplateRaised,
    TemplateTimeout,
    compile_template,
    has_generation_tags,
    render,
    render_budget,
    template_variables,
)
from sftprep.templates.hf_messages import message_to_hf, without_reasoning
from sftprep.templates.modes import (
    DEFAULT,
    PROBE_USER,
    Setting,
    candidates,
    discover_switches,
    renders_reasoning,
)
from sftprep.templates.opacity import content_placements
from sftprep.templates.skeleton import (
    Skeleton,
    build_skeleton,
    fill,
    record_counts,
    rendered_from_skeleton,
    sentinel_conversation,
    sentinels_only_in_contents,
    shape_key,
)
from sftprep.templates.spec import render_verbatim
from sftprep.templates.turns import Specials
from sftprep.types import Conversation, Reject, RenderedConversation

MAX_SKELETONS = 4096  # distinct conversation shapes cached per template
RENDER_ERRORS = (
    TemplateRaised,
    jinja2.TemplateError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    RecursionError,
    OverflowError,
    ZeroDivisionError,
    MemoryError,
)

__all__ = ["JinjaTemplate", "message_to_hf"]


class JinjaTemplate:
    """A ChatTemplate backed by HF Jinja source."""

    def __init__(self, source: str, name: str = "jinja", special_tokens: tuple[str, ...] = ()) -> None:
        self.source_text = source
        self.name = name
        self.special_tokens = special_tokens
        self._compiled: jinja2.Template = compile_template(source)
        self.has_generation_tags = has_generation_tags(source)
        self.variables_read = template_variables(source)
        self._switch_candidates = template_variables(source, include_assigned=True)
        self._skeletons: dict[tuple[object, ...], Skeleton | None] = {}
        self._cache: dict[tuple[object, ...], Any] = {}
        self._last_opts_key: tuple[RenderOptions, tuple[object, ...]] | None = None

    # -- rendering ------------------------------------------------------------------------------
    def variables(
        self,
        messages: list[dict[str, Any]],
        conv: Conversation,
        gen: bool,
        opts: RenderOptions,
        setting: Setting = DEFAULT,
    ) -> dict[str, Any]:
        """What transformers' apply_chat_template passes: the tokenizer's named special tokens, the user's
        variables, messages, tools (None without tools), documents (None), add_generation_prompt."""
        return {
            **opts.token_variables(),
            **opts.template_vars,
            **setting.vars,
            "messages": messages,
            "tools": list(conv.tools) if conv.tools else None,
            "documents": None,
            "add_generation_prompt": gen,
        }

    def render_messages(
        self,
        messages: list[dict[str, Any]],
        conv: Conversation,
        gen: bool,
        opts: RenderOptions,
        setting: Setting = DEFAULT,
    ) -> str:
        return render(self._compiled, self.variables(messages, conv, gen, opts, setting))[0]

    def generation_ranges(self, messages: list[dict[str, Any]], conv: Conversation, opts: RenderOptions) -> list[Any]:
        """The `{% generation %}` ranges of the full render (a cross-check of the derived spans)."""
        return render(self._compiled, self.variables(messages, conv, False, opts), True)[1]

    def specials(self, opts: RenderOptions) -> Specials:
        return self._cached(("specials", *self._opts_key(opts)), lambda: self._specials(opts))

    def _specials(self, opts: RenderOptions) -> Specials:
        plain = Specials.of(self.special_tokens, opts.eos_token)
        try:  # the header opener: the first special token of a rendered conversation after bos
            with render_budget(opts.render_timeout, opts.max_chars):
                text = self._probe_render(opts)([{"role": "user", "content": PROBE_USER}], False, DEFAULT)
        except (*RENDER_ERRORS, TemplateTimeout):
            return plain
        if opts.bos_token and text.startswith(opts.bos_token):
            text = text[len(opts.bos_token) :]
        lead = plain.leading(text)
        opener = lead[0].strip() if lead is not None and lead[1] else ""
        return Specials.of(self.special_tokens, opts.eos_token, opener)

    def _cached(self, key: tuple[object, ...], make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _opts_key(self, opts: RenderOptions) -> tuple[object, ...]:
        last = self._last_opts_key
        if last is not None and last[0] is opts:  # asked per record: the same options object all run long
            return last[1]
        key = (opts.bos_token, opts.eos_token, opts.special_tokens_map, repr(sorted(opts.template_vars.items())))
        self._last_opts_key = (opts, key)
        return key

    def _probe_render(self, opts: RenderOptions) -> Any:
        def fn(msgs: list[dict[str, Any]], gen: bool, s: Setting, tools: list[Any] | None = None) -> str:
            probe = Conversation((), "<probe>", 0, tools=tuple(tools) if tools else None)
            return self.render_messages(msgs, probe, gen, opts, s)

        return fn

    def settings(self, opts: RenderOptions) -> list[Setting]:
        """The settings `opts.reasoning_mode` tries, in order (switches found by rendering probes)."""

        def make() -> list[Setting]:
            fn = self._probe_render(opts)
            with render_budget(opts.render_timeout, opts.max_chars):
                switches = discover_switches(fn, self._switch_candidates, opts.template_vars)
                reasoning = {s: renders_reasoning(fn, s) for s in [DEFAULT, *switches]}
            return candidates(opts.reasoning_mode, switches, reasoning.__getitem__)

        return self._cached(("settings", opts.reasoning_mode, *self._opts_key(opts)), make)

    def all_settings(self, opts: RenderOptions) -> list[Setting]:
        return self._cached(("all", *self._opts_key(opts)), lambda: self.settings(replace(opts, reasoning_mode="auto")))

    def reasoning_settings(self, opts: RenderOptions) -> dict[Setting, bool]:
        def make() -> dict[Setting, bool]:
            fn = self._probe_render(opts)
            with render_budget(opts.render_timeout, opts.max_chars):
                return {s: renders_reasoning(fn, s) for s in self.all_settings(opts)}

        return self._cached(("reasoning", *self._opts_key(opts)), make)

    def probe(self, opts: RenderOptions, setting: Setting, role: str) -> Any:
        """How a plain probe turn (role 'user' follows) or a tool-call turn (role 'tool') ends under `setting`."""

        def make() -> Any:
            plain = None if role == "user" else self.probe(opts, setting, "user")
            markers = plain is None or plain.how == "marker"
            with render_budget(opts.render_timeout, opts.max_chars):
                return probe_stop(self._probe_render(opts), setting, role, self.specials(opts), markers)

        return self._cached(("probe", role, setting, *self._opts_key(opts)), make)

    def markers(self, opts: RenderOptions) -> list[str]:
        marker = self.end_of_turn(opts)
        return [marker] if marker else []

    def end_of_turn(self, opts: RenderOptions) -> str | None:
        """The token a plain turn ends with (its end-of-turn marker, or the next header's token), found by
        rendering probe conversations; None when the template renders no stop (eos is appended)."""
        stop = self.probe(opts, DEFAULT, "user")
        return stop.stop if stop is not None and stop.how in ("marker", "next_header") else None

    def mismatch_hint(self, d: Derivation, i: int) -> str:
        """A fix for a turn no tried setting renders after its own prompt, verified by rendering."""
        has_reasoning = d.conv.messages[i].reasoning is not None
        for edit in [None, (i, "drop")] if has_reasoning else [None]:
            for s in self.all_settings(d.opts):
                try:
                    consistent = d.render(i + 1, False, s, edit).startswith(d.render(i, True, s, edit))
                except RENDER_ERRORS:
                    continue
                if not consistent:
                    continue
                if edit is not None:
                    return (
                        "no setting renders it with its reasoning; fix: --reasoning-mode non-thinking trains it "
                        f"without (verified: it renders after its prompt with {s.describe()})"
                    )
                if d.opts.reasoning_mode == "reject":
                    return f"fix: pass {s.describe()} (verified: the turn renders after its prompt with it)"
                return (
                    f"fix: --reasoning-mode auto (verified: it renders the turn after its prompt with {s.describe()})"
                )
        names = ", ".join(sorted({k for s in self.all_settings(d.opts) for k, _ in s.extra})) or "none"
        return (
            f"no setting of this template's variables ({names}) renders the turn after its own prompt; fix: use a "
            "template whose generation prompt matches its turns, or give this turn weight 0"
        )

    # -- a record -------------------------------------------------------------------------------
    def render(self, conv: Conversation, opts: RenderOptions) -> list[RenderedConversation] | Reject:
        if conv.raw_prompt is not None and conv.raw_completion is not None:
            return [render_verbatim(conv, opts)]
        try:
            with render_budget(opts.render_timeout, opts.max_chars):
                fast = self._render_from_skeleton(conv, opts)
                if fast is not None:
                    return fast
                return self._render(conv, [message_to_hf(m) for m in conv.messages], opts)
        except TemplateTimeout as e:
            return _reject(
                conv, "template_timeout", f"{e}; fix: raise --render-timeout or --max-chars, or fix the template"
            )
        except TemplateRaised as e:
            return _reject(conv, "template_raised", f"the chat template raised: {e}")
        except RENDER_ERRORS as e:
            return _reject(conv, "template_error", f"the chat template failed: {type(e).__name__}: {e}")

    def _render(
        self, conv: Conversation, messages: list[dict[str, Any]], opts: RenderOptions
    ) -> list[RenderedConversation] | Reject:
        return to_rendered(*self._derive(conv, messages, opts))

    def _derive(
        self, conv: Conversation, messages: list[dict[str, Any]], opts: RenderOptions, log: bool = False
    ) -> tuple[Derivation, list[TurnResult | Reject]]:
        if opts.reasoning_mode == "non-thinking":  # reasoning is never generated: leave it out everywhere
            messages = [without_reasoning(m) for m in messages]
        d = Derivation(self, conv, messages, opts)
        if log:
            d.log = []
        results: list[TurnResult | Reject] = []
        for i, msg in enumerate(conv.messages):
            if is_trainable_assistant(msg) and (opts.train_tool_calls or not msg.tool_calls):
                results.append(d.turn(i))
        return d, results

    def _render_from_skeleton(
        self, conv: Conversation, opts: RenderOptions
    ) -> list[RenderedConversation] | Reject | None:
        """The record as its shape's skeleton filled with its contents (its turns left out for the shape, or
        the record left out whole, as the shape's derivation left them out). None: take the exact path."""
        key = shape_key(conv)
        if key is None:
            return None
        trainable = tuple(is_trainable_assistant(m) for m in conv.messages)
        cache_key = (
            key,
            trainable,
            opts.train_on_eos,
            opts.reasoning_mode,
            opts.train_marker_only,
            opts.train_reasoning,
            opts.train_tool_calls,
            *self._opts_key(opts),
        )
        if cache_key not in self._skeletons:
            if len(self._skeletons) >= MAX_SKELETONS:
                return None
            self._skeletons[cache_key] = self._build_skeleton(conv, opts)
        skel = self._skeletons[cache_key]
        if skel is None:
            return None
        specials = self.specials(opts)
        if any(m.role == "assistant" and specials.only_specials(m.full_content) for m in conv.messages):
            return None  # a turn of special-token strings only: the exact path decides whether it trains
        where = f"{conv.source_file}:{conv.source_line}"
        if skel.rejected is not None:
            return Reject(conv.source_file, conv.source_line, skel.rejected[0], where + skel.rejected[1])
        filled = fill(skel, conv)
        if filled is None:
            return None
        text, starts, contents = filled
        trained = [True] * len(skel.turns)
        r = rendered_from_skeleton(skel, conv, text, starts, contents, trained)
        r.template_vars = dict(skel.template_vars)
        r.counts = record_counts(skel, conv, text, starts)
        r.dropped_turns = [
            Reject(conv.source_file, conv.source_line, reason, where + detail, turn=turn)
            for reason, detail, turn in skel.dropped
        ]
        return [r]

    def _build_skeleton(self, conv: Conversation, opts: RenderOptions) -> Skeleton | None:
        """The shape's skeleton from the exact derivation of its sentinel conversation, where every render the
        derivation made is shown to place contents only (opacity.py; trimmed or not, each content alike in all
        of them): turns left out with nothing to train, a record left out whole, and tools, tool calls,
        reasoning and names (sealed: never read) are then the shape's too. None: the exact path (a template
        that reads contents; one full render equal to the filled skeleton would not show its prompts are)."""
        if not sentinels_only_in_contents(conv):
            return None
        sentinel = sentinel_conversation(conv)
        messages = [message_to_hf(m) for m in sentinel.messages]
        try:
            d, results = self._derive(sentinel, messages, opts, log=True)
            rendered = to_rendered(d, results)
            full = d.full()
        except (TemplateTimeout, *RENDER_ERRORS):
            return None
        dropped = [r for r in results if isinstance(r, Reject)]
        where = f"{sentinel.source_file}:{sentinel.source_line}"
        if any(r.reason != "nothing_to_train" or not r.message.startswith(where) for r in dropped):
            return None  # other reasons quote the record's text
        trims = self._placements(d, sentinel, opts)
        if trims is None:
            return None
        if isinstance(rendered, Reject):
            return Skeleton((), (), (), rejected=(rendered.reason, rendered.message[len(where) :]))
        if len(rendered) != 1 or rendered[0].turn >= 0:
            return None
        r = rendered[0]
        if r.template_vars != opts.template_vars or not r.text.startswith(full):
            return None
        ok = [x for x in results if isinstance(x, TurnResult)]
        skel = build_skeleton(r, [len(x.prompt) + len(x.text) for x in ok])
        if skel is None:
            return None
        if [c for c, _ in trims] != [sentinel.messages[i].content for i in skel.slots]:
            return None
        flags = tuple(t for _, t in trims)
        return replace(
            skel,
            trimmed=flags if any(flags) else (),
            appended=r.text[len(full) :],
            template_vars=tuple(r.template_vars.items()),
            counts=tuple((k, v) for k, v in r.counts.items() if k not in TEXT_COUNTS),
            dropped=tuple((x.reason, x.message[len(where) :], x.turn) for x in dropped),
        )

    def _placements(
        self, d: Derivation, sentinel: Conversation, opts: RenderOptions
    ) -> tuple[tuple[str, bool], ...] | None:
        """The contents the full render writes, in order, and whether trimmed; None unless every render of the
        derivation only places contents, each content trimmed in all of them or in none."""
        assert d.log is not None
        trimmed: dict[str, bool] = {}
        full: tuple[tuple[str, bool], ...] | None = None
        for msgs, gen, s, text in [*d.log, (d.msgs, False, DEFAULT, d.full())]:
            placed = content_placements(self.source_text, self.variables(msgs, sentinel, gen, opts, s), text)
            if placed is None:
                return None
            for content, flag in placed:
                if trimmed.setdefault(content, flag) != flag:
                    return None
            full = placed
        return full


def _reject(conv: Conversation, reason: str, detail: str) -> Reject:
    return Reject(conv.source_file, conv.source_line, reason, f"{conv.source_file}:{conv.source_line}: {detail}")
