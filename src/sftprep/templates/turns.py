"""Where an assistant turn's generated text ends, derived from renders (never from model names).

For assistant message i, P is the conversation so far rendered with the generation prompt and R the
conversation through message i (no generation prompt). When R starts with P, the text the model generates
after P is R's rest up to the token the inference engine stops at:
  * the template's end-of-turn marker: R's rest ends (after whitespace the model never generates) with a
    special token (`<|im_end|>`, `<|eot_id|>`, a tool call's `<|tool_response>`, eos where the template
    writes it after every turn);
  * or, where the template ends no turn with a marker (GLM-4's turns end where the next message's header
    begins), the next header's special token, as the template renders it after this turn: `<|user|>` after a
    reply, `<|observation|>` after tool calls.
Text a template writes only at the very end of a conversation (an eos after the last message) is not part
of any turn: it is what R has and a render that goes on after message i lacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

# Strings that look like special tokens, for templates whose markers the tokenizer lacks
SPECIAL_LOOKING = re.compile(
    r"<\|[^<>|\s]{1,40}\|>|<｜[^<>｜]{1,40}｜>|\[\|[^\[\]|\s]{1,40}\|\]|</?[^<>\s|]{1,40}\|?>|<\|[^<>|\s]{1,40}>"
)


def common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Specials:
    """The strings that end turns: the tokenizer's added tokens (and eos); `looking` also accepts
    special-looking text the tokenizer does not know (reported: generation would never stop on it)."""

    tokens: tuple[str, ...]
    looking: bool = True
    # the token every message's header starts with (Cohere's <|START_OF_TURN_TOKEN|>, chatml's <|im_start|>):
    # it opens the next message, it never ends a turn, even where a template writes it after the last one
    opener: str = ""

    @classmethod
    def of(cls, tokens: Iterable[str], eos: str = "", opener: str = "") -> Specials:
        return cls(tuple(sorted({t for t in (*tokens, eos) if t}, key=len, reverse=True)), opener=opener)

    @cached_property
    def _lengths(self) -> tuple[tuple[int, frozenset[str]], ...]:
        """The tokens by length, longest first: a lookup per length (a tokenizer can have hundreds of them,
        Llama 3's all ending in "|>")."""
        by: dict[int, set[str]] = {}
        for t in self.tokens:
            by.setdefault(len(t), set()).add(t)
        return tuple((n, frozenset(ts)) for n, ts in sorted(by.items(), reverse=True))

    @cached_property
    def _first_chars(self) -> frozenset[str]:
        """Characters a special token (or, with `looking`, special-looking text: "<", "[") can start with."""
        return frozenset({t[0] for t in self.tokens} | ({"<", "["} if self.looking else set()))

    def at_end(self, text: str) -> tuple[str, bool] | None:
        """The special token `text` ends with (longest), and whether the tokenizer knows it."""
        for n, ts in self._lengths:
            if n <= len(text) and text[-n:] in ts:
                return text[-n:], True
        if self.looking:
            found = _special_looking_suffix(text)
            if found is not None:
                return found, False
        return None

    def leading(self, text: str) -> tuple[str, bool] | None:
        """`text` up to and including a special token it starts with after whitespace only."""
        stripped = text.lstrip()
        gap = len(text) - len(stripped)
        for n, ts in self._lengths:
            if stripped[:n] in ts:
                return text[: gap + n], True
        if self.looking:
            m = SPECIAL_LOOKING.match(stripped)
            if m is not None:
                return text[: gap + m.end()], False
        return None

    def only_specials(self, text: str) -> bool:
        """`text` is nothing but special tokens and whitespace (and has at least one token)."""
        rest = text.strip()
        if not rest or rest[0] not in self._first_chars:  # no token starts there (the common case, cheaply)
            return False
        while rest:
            lead = self.leading(rest)
            if lead is None:
                return False
            rest = rest[len(lead[0]) :].lstrip()
        return True


def _special_looking_suffix(text: str) -> str | None:
    tail = text[-64:]
    last = None
    for m in SPECIAL_LOOKING.finditer(tail):
        last = m
    return last.group() if last is not None and last.end() == len(tail) else None


def without_trailer(prompt: str, own: str, later: str | None, specials: Specials) -> str:
    """The turn's rendering in `own` (= prompt + turn [+ end-of-conversation trailer]) without the trailer:
    text at the end of `own` that a render going on after the turn (`later`) does not have there, when it is
    only special tokens (an eos written after the last message)."""
    body = own[len(prompt) :]
    if later is None:
        return body
    cut = common_prefix_len(own, later)
    if cut >= len(own):
        return body
    for k in range(cut, max(len(prompt), cut - 64) - 1, -1):  # back to the start of a token cut in two
        if specials.only_specials(own[k:]):
            return own[len(prompt) : k]
    return body


@dataclass(frozen=True)
class Stop:
    """How a turn's completion ends: `text` is the completion (through the stop), `stop` its stop token text
    ('' when none), `added` the part the template's render of the turn lacks (a next header, an eos)."""

    text: str
    stop: str
    added: str = ""
    known: bool = True  # the stop is a token of the tokenizer (not only special-looking text)
    how: str = "marker"  # marker | next_header | none
    trailer: bool = False  # (probes) the template writes text after a conversation's last message


def ends_with_marker(body: str, specials: Specials) -> Stop | None:
    """The completion when the turn's rendering ends with a special token (whitespace after it is not
    generated)."""
    core = body.rstrip()
    while specials.opener and core.endswith(specials.opener):  # a header the template writes after the turn
        core = core[: -len(specials.opener)].rstrip()
    found = specials.at_end(core)
    if found is None:
        return None
    return Stop(core, found[0], known=found[1])


def next_header(body: str, after: str, specials: Specials) -> Stop | None:
    """The completion when the turn is ended by the next message's header: `after` is what the template
    renders after the turn; its leading special token (after whitespace) is the stop."""
    lead = specials.leading(after)
    if lead is None:
        return None
    return Stop(body + lead[0], lead[0].lstrip(), added=lead[0], known=lead[1], how="next_header")


def whitespace_aligned(prompt: str, own: str) -> int | None:
    """Where the completion starts in `own` when it renders the prompt's text differently only in whitespace
    (a header indented or spaced otherwise than the generation prompt): the position after the prompt's last
    non-whitespace character, past whitespace the prompt already ends with. None when they differ otherwise."""
    p = j = 0
    while True:
        while p < len(prompt) and prompt[p].isspace():
            p += 1
        if p == len(prompt):
            break
        while j < len(own) and own[j].isspace():
            j += 1
        if j == len(own) or own[j] != prompt[p]:
            return None
        p += 1
        j += 1
    if prompt[-1:].isspace():
        while j < len(own) and own[j].isspace():
            j += 1
    return j
