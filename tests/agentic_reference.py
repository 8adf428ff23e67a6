"""The reference for issue #18: what transformers renders for one assistant turn, and where it stops.

For assistant message i of HF messages `msgs` under template variables V:
    P_i = apply_chat_template(msgs[:i], tools, add_generation_prompt=True, **V)     (invariant 2: the prompt)
    R_i = apply_chat_template(msgs[:i+1], tools, add_generation_prompt=False, **V)  must start with P_i
    T_i = R_i[len(P_i):] cut after the first stop marker (agentic_stops.STOPS)      (invariant 1: the trained text)
Next-header templates (GLM-4) append the next message's header token instead (or the turn type's, at the end);
templates without any marker take what they render for the turn in the middle of a conversation.

Also: `fitted_tokenizer` (as tests/templates/test_templates_shared.py, cached by content) and `trl_spans`, the
text TRL's `*_training.jinja` variant marks with {% generation %} (transformers' return_assistant_tokens_mask).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentic_stops import Stop

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPECIAL_LOOKING = re.compile(
    r"<\|[^<>|\s]{1,40}\|>|<｜[^<>｜]{1,40}｜>|\[\|[^\[\]|\s]{1,40}\|\]|</?[a-z_]{1,30}>|<[a-z_]+\|>"
)


def base_tokenizer(source: str) -> str:
    if "<|eot_id|>" in source:
        return "llama3"
    if "<|end|>" in source and "<|assistant|>" in source:
        return "phi-3-mini"
    return "qwen2.5"


def fitted_tokenizer(template: Path, cache_dir: Path) -> Path:
    """A base tokenizer from ../shared plus the template's special-looking markers as special tokens, eos/bos
    set (the approach of tests/templates/test_templates_shared.py); templates needing the same tokenizer share
    one dir."""
    from tokenizers import AddedToken, Tokenizer

    source = template.read_text(encoding="utf-8")
    base = SHARED / "tokenizers" / base_tokenizer(source)
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    cfg = json.loads((base / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg.pop("chat_template", None)
    cfg.pop("added_tokens_decoder", None)
    markers = sorted(set(SPECIAL_LOOKING.findall(source)) - {"<think>", "</think>", "<image>", "<br>"})
    markers = [m for m in markers if tok.token_to_id(m) is None or m in ("</s>", "<s>")]
    if base.name == "qwen2.5":
        eoses = ("<|END_OF_TURN_TOKEN|>", "<｜end▁of▁sentence｜>", "<|endoftext|>")
        eos = next((m for m in eoses if m in source), "</s>")
        cfg.update(bos_token="<s>", eos_token=eos if eos in source else "</s>")
    key = hashlib.sha256(json.dumps([base.name, markers, cfg], sort_keys=True).encode()).hexdigest()[:16]
    out = cache_dir / f"tok-{base.name}-{key}"
    if not (out / "tokenizer_config.json").exists():
        tok.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in [*markers, "<s>", "</s>"]])
        tmp = cache_dir / f".tmp-{key}-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
        with contextlib.suppress(OSError):  # another process made it first
            tmp.rename(out)
    return out


@lru_cache(maxsize=32)
def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class RefError(Exception):
    """The reference has no trained text for this turn. kind: render (the template raised), prefix (R_i does not
    start with P_i: not inference-consistent under V), no_stop (no stop marker where the table says)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


@dataclass(frozen=True)
class TurnRef:
    prompt: str  # P_i
    text: str  # T_i: what the model generates after P_i, through the token it stops on
    after: str = ""  # the rest of R_i (text the template adds after the stop, e.g. at the end of a conversation)


def snippet(text: str, width: int = 160) -> str:
    return repr(text) if len(text) <= width else f"{text[: width // 2]!r}...{text[-width // 2 :]!r} (len {len(text)})"


def common_prefix_len(a: Any, b: Any) -> int:
    return next((n for n, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


class Reference:
    """Renders with transformers (tok.apply_chat_template) and cuts turns with the hand-made stop table."""

    def __init__(self, tok: Any, source: str | None, stop: Stop) -> None:
        self.tok, self.source, self.stop = tok, source, stop
        self.eos = str(tok.eos_token) if tok.eos_token else None
        added = [t.content for t in tok.added_tokens_decoder.values() if t.special and t.content]
        self.special_re = re.compile("|".join(map(re.escape, sorted(added, key=len, reverse=True)))) if added else None
        self._cache: dict[tuple[str, bool, str], str] = {}

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def render(self, msgs: list[dict[str, Any]], tools: list[Any] | None, gen: bool, v: dict[str, Any]) -> str:
        key = (json.dumps([msgs, tools], sort_keys=True, ensure_ascii=False), gen, json.dumps(v, sort_keys=True))
        if key not in self._cache:
            try:
                self._cache[key] = str(
                    self.tok.apply_chat_template(
                        msgs, tools=tools, add_generation_prompt=gen, tokenize=False, chat_template=self.source, **v
                    )
                )
            except Exception as e:  # the template raised (raise_exception, undefined, type errors)
                raise RefError("render", f"{type(e).__name__}: {str(e)[:200]}") from e
        return self._cache[key]

    def spells_special(self, msgs: list[dict[str, Any]]) -> bool:
        """A system/user/tool message whose text spells a special token (sftprep encodes it as plain text)."""
        if self.special_re is None:
            return False
        return any(
            m["role"] != "assistant" and isinstance(m.get("content"), str) and self.special_re.search(m["content"])
            for m in msgs
        )

    def turn(self, msgs: list[dict[str, Any]], tools: list[Any] | None, i: int, v: dict[str, Any]) -> TurnRef:
        prompt = self.render(msgs[:i], tools, True, v)
        full = self.render(msgs[: i + 1], tools, False, v)
        start = len(prompt) if full.startswith(prompt) else _same_but_whitespace(prompt, full)
        if start is None:
            start = _same_header(msgs, i, prompt, full)
        if start is None:
            at = max(0, common_prefix_len(prompt, full) - 30)
            raise RefError("prefix", f"P_i {snippet(prompt[at : at + 90])} vs R_i {snippet(full[at : at + 90])}")
        tail, tool_turn = full[start:], bool(msgs[i].get("tool_calls"))
        if self.stop.next_header:
            nxt = msgs[i + 1]["role"] if i + 1 < len(msgs) else None
            header = self.stop.header(nxt, tool_turn)
            if not header:
                raise RefError("no_stop", f"no header token for a {nxt} message after the turn")
            after = self.render(msgs[: i + 2], tools, False, v) if nxt is not None else prompt + header
            if header not in after[common_prefix_len(prompt, after) :]:  # (history may be rewritten: no prefix)
                raise RefError("no_stop", f"the template renders no {header!r} after the turn")
            end = self.stop.end_of_conversation.replace("{eos}", self.eos or "")
            if end and tail.endswith(end):
                tail = tail[: -len(end)]
            return TurnRef(prompt, tail + header, end)
        markers = self.stop.markers(tool_turn, self.eos)
        if markers:
            hits = [(tail.find(m), m) for m in markers if m in tail]
            if not hits:
                raise RefError("no_stop", f"none of {markers} in {snippet(tail)}")
            at, marker = min(hits)
            return TurnRef(prompt, tail[: at + len(marker)], tail[at + len(marker) :])
        # No marker at all: the turn is what the template renders for it with a message after it.
        after = msgs[: i + 2] if i + 1 < len(msgs) else [*msgs[: i + 1], {"role": "user", "content": "Thanks."}]
        try:
            cont = self.render(after, tools, False, v)
        except RefError:
            return TurnRef(prompt, tail)
        if not cont.startswith(prompt):
            return TurnRef(prompt, tail)
        cut = common_prefix_len(tail, cont[len(prompt) :])
        return TurnRef(prompt, tail[:cut], tail[cut:])


def _same_but_whitespace(prompt: str, full: str) -> int | None:
    """Where the turn starts in R_i when R_i renders P_i's text otherwise only in whitespace (a header indented
    differently): after P_i's last non-whitespace character's counterpart, past the whitespace P_i ends with."""
    squeeze = re.compile(r"\s+")
    want = squeeze.sub("", prompt)
    if not want:
        return None
    seen = 0
    for k, ch in enumerate(full):
        if ch.isspace():
            continue
        if seen == len(want) or ch != want[seen]:
            return None
        seen += 1
        if seen == len(want):
            end = k + 1
            if prompt[-1:].isspace():
                end += len(full[end:]) - len(full[end:].lstrip())
            return end
    return None


def _same_header(msgs: list[dict[str, Any]], i: int, prompt: str, full: str) -> int | None:
    """Where the turn starts in R_i when only the history renders otherwise at inference (Mistral writes the system
    text into the prompt's last user message only): P_i's text from the last message content before the turn
    (that content and the header after it) is found in R_i right before the turn's content."""
    texts = [m.get("content") for m in msgs[:i]]
    prev = next((t for t in reversed(texts) if isinstance(t, str) and t.strip()), None)
    if prev is None or prompt.rfind(prev) < 0:
        return None
    anchor = prompt[prompt.rfind(prev) :]
    own = msgs[i].get("content")
    limit = full.rfind(own.strip()) if isinstance(own, str) and own.strip() else len(full)
    at = full.rfind(anchor, 0, limit + len(anchor)) if limit >= 0 else -1
    return at + len(anchor) if at >= 0 and at + len(anchor) <= limit else None


def training_template(template: Path | None) -> Path | None:
    """TRL's `<stem>_training.jinja` beside an inference template, if any."""
    if template is None or template.suffix != ".jinja":
        return None
    path = template.with_name(f"{template.stem}_training.jinja")
    return path if path.exists() else None


def trl_spans(ref: Reference, source: str, msgs: list[dict[str, Any]], tools: list[Any] | None) -> list[str]:
    """The texts transformers' assistant mask marks on a {% generation %} template: runs of assistant_masks == 1,
    decoded."""
    out = ref.tok.apply_chat_template(
        msgs, tools=tools, chat_template=source, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    spans, start = [], None
    for k, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = k
        elif not bit and start is not None:
            spans.append(ref.decode(ids[start:k]))
            start = None
    return spans
