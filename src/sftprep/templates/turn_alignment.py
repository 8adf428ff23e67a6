"""Where an assistant turn's generated text starts and ends in a rendered conversation.

P is the prompt at inference (history + generation prompt), T a render that ends with the turn.
The completion is the text the model must produce after P: the turn's rendering from the end of its
generation prompt through the end-of-turn marker.
"""

from __future__ import annotations

import re

from sftprep.types import Span

MIN_ANCHOR = 4  # shortest suffix of P accepted as an anchor in T (case c)


def common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def completion_start(prompt: str, turn_render: str, history: str | None, content_at: int) -> int | None:
    """Where the completion starts in `turn_render`.

    a) turn_render starts with the prompt: right after it;
    b) history (rendered without generation prompt) starts both: after the turn's own header, found from
       the generation prompt G: their common prefix when the rest of G is whitespace or text the final
       render lacks (Gemma 4 opens an empty thought channel only at inference), else G's text as an anchor
       (templates that indent the header differently);
    c) otherwise: after the longest suffix of the prompt found before the content (Mistral v3 moves the
       system text to the last user turn). None when nothing aligns.
    Whitespace the prompt already ends with is not generated again.
    """
    if turn_render.startswith(prompt):
        return len(prompt)
    limit = content_at if content_at >= 0 else len(turn_render)
    if history is not None and prompt.startswith(history) and turn_render.startswith(history):
        # the history renders the same: only the generation prompt and the turn's header can differ
        return _after_generation_prompt(prompt[len(history) :], turn_render, len(history), limit)
    anchor = prompt.rstrip()
    for m in range(min(len(anchor), limit), MIN_ANCHOR - 1, -1):
        j = turn_render.rfind(anchor[-m:], 0, limit)
        if j >= 0:
            return _skip_given_whitespace(prompt, turn_render, j + m, limit)
    return None


def _after_generation_prompt(gen: str, text: str, offset: int, limit: int) -> int | None:
    lcp = common_prefix_len(gen, text[offset:])
    if not gen[lcp:].strip():
        return _skip_given_whitespace(gen, text, offset + lcp, limit)
    anchor = gen.strip()
    at = text.find(anchor, offset, limit)
    if at >= 0:
        return _skip_given_whitespace(gen, text, at + len(anchor), limit)
    if offset + lcp > limit or text[offset + lcp : limit].strip():
        return None  # the prompt pre-fills text (an empty think block) that this turn contradicts
    if gen[lcp:].strip() in text[offset + lcp :]:
        return None  # the turn renders the pre-filled text, differently ("<think>\n \n</think>")
    return offset + lcp


def _skip_given_whitespace(prompt: str, text: str, pos: int, limit: int) -> int:
    """When the prompt ends in whitespace, the turn's own whitespace at `pos` is already given."""
    if prompt[-1:].isspace():
        while pos < limit and text[pos].isspace():
            pos += 1
    return pos


def turn_end(text: str, start: int, content: str, marker: str | None, train_on_eos: bool) -> tuple[int, Span, bool]:
    """(end of the trainable region, content span, whether the marker was found) for a turn at `start`."""
    at = text.find(content, start) if content else -1
    span = Span(at, at + len(content)) if at >= 0 else Span(start, start)
    if marker:
        m = text.find(marker, span.end)
        if m >= 0:
            return (m + len(marker) if train_on_eos else m), span, True
    return (span.end if at >= 0 else len(text)), span, False


SPECIAL_LOOKING = re.compile(r"<\|[^<>|\s]{1,40}\|>|<｜[^<>｜]{1,40}｜>|\[\|[^\[\]|\s]{1,40}\|\]|</?[^<>\s|]{1,40}\|?>")


def marker_between(between: str, special_tokens: tuple[str, ...], eos: str) -> str | None:
    """The end-of-turn marker from the text between a reply and the next turn: through the eos token when
    it is there, else through the first special token (the tokenizer's, or, when the tokenizer does not
    know the template's markers, the first special-looking `<|...|>`, `</s>`, `[|...|]`). None: no marker."""
    if eos and eos in between:
        return between[: between.index(eos) + len(eos)]
    best, best_tok = -1, ""
    for tok in special_tokens:
        at = between.find(tok) if tok else -1
        if at >= 0 and (best < 0 or at < best or (at == best and len(tok) > len(best_tok))):
            best, best_tok = at, tok
    if best >= 0:
        return between[: best + len(best_tok)]
    m = SPECIAL_LOOKING.search(between)
    return between[: m.end()] if m else None
