"""An independent checker of sftprep's output: each example's source record is re-read, normalized (the input
stage is shared with sftprep) and rendered with transformers' `apply_chat_template`, never sftprep's renderer.
Per trained turn, invariant 2: the ids before its run == the tokenizer's encoding (add_special_tokens=False) of the
conversation so far with the generation prompt; invariant 1: the run is the template's rendering of the turn through
its end-of-turn marker (from the hand-written END_OF_TURN table), and nothing else is trainable. Message text
of a user/system/tool spelling a special token is plain text in sftprep (transformers would emit the token): there
the ids must hold exactly the template's special tokens, in place, and between them the same text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from oracle_output import iter_output, read_rejects, read_source_records, snippet
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sftprep.read.normalize_conversations import normalize_conversations
from sftprep.templates.jinja_template import message_to_hf
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import Conversation, Message, RawRecord, Reject

IGNORE = -100
# Unicode White_Space (what tokenizers' lstrip/rstrip strip; Python's str.strip also strips U+001C..U+001F)
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)

# End-of-turn markers, by tokenizer directory (own template) or built-in template; alpaca: the tokenizer's eos.
END_OF_TURN = {"qwen2.5": "<|im_end|>", "minimind": "<|im_end|>", "chatml": "<|im_end|>", "llama3": "<|eot_id|>"}
END_OF_TURN["phi-3-mini"] = "<|end|>"

# sftprep's built-in specs (templates/builtin.json) as documented, written by hand as HF Jinja.
CHATML_JINJA = """
{%- set ns = namespace(system=none) -%}
{%- if messages and messages[0].role == 'system' %}{% set ns.system = messages[0].content %}{% endif -%}
{%- if tools -%}
  {%- set ns.system = (ns.system or '') + '\\n\\n# Tools\\n\\n<tools>\\n' + (tools | map('tojson') | join('\\n'))
      + '\\n</tools>' -%}
{%- endif -%}
{%- if ns.system is not none %}{{ '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n' }}{% endif -%}
{%- for m in messages -%}
  {%- if m.role == 'assistant' %}{{ '<|im_start|>assistant\\n' }}
    {%- if m.reasoning_content is defined and m.reasoning_content is not none -%}
      {{- '<think>\\n' + m.reasoning_content + '\\n</think>\\n\\n' -}}
    {%- endif %}{{ m.content }}
    {%- if m.tool_calls and m.content %}{{ '\\n' }}{% endif -%}
    {%- for c in m.tool_calls or [] -%}
      {%- if not loop.first %}{{ '\\n' }}{% endif -%}
      {{- '<tool_call>\\n' + ({'name': c.function.name, 'arguments': c.function.arguments} | tojson) -}}
      {{- '\\n</tool_call>' -}}
    {%- endfor %}{{ '<|im_end|>\\n' }}
  {%- elif m.role != 'system' -%}
    {{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif -%}
"""
ALPACA_JINJA = """
{%- if tools %}{{ raise_exception('alpaca cannot render tools') }}{% endif -%}
{%- if messages and messages[0].role == 'system' -%}{{ messages[0].content + '\\n\\n' }}
{%- elif messages | selectattr('input', 'defined') | list -%}
  {{- 'Below is an instruction that describes a task, paired with an input that provides further context. '
      + 'Write a response that appropriately completes the request.\\n\\n' -}}
{%- else -%}
  {{- 'Below is an instruction that describes a task. '
      + 'Write a response that appropriately completes the request.\\n\\n' -}}
{%- endif -%}
{%- for m in messages -%}
  {%- if m.role == 'user' and m.input is defined -%}
    {{- '### Instruction:\\n' + m.instruction + '\\n\\n### Input:\\n' + m.input + '\\n\\n' -}}
  {%- elif m.role == 'user' %}{{ '### Instruction:\\n' + m.content + '\\n\\n' }}
  {%- elif m.role == 'assistant' %}{{ '### Response:\\n' + m.content + eos_token + '\\n\\n' }}
  {%- elif m.role != 'system' %}{{ raise_exception('alpaca cannot render ' + m.role) }}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}{{ '### Response:\\n' }}{% endif -%}
"""
BUILTIN_JINJA: dict[str, str] = {"chatml": CHATML_JINJA, "alpaca": ALPACA_JINJA}

# Message text of these roles that spells a special token is plain text in sftprep, never the token (README:
# "text typed by a user"); assistant text keeps the tokenizer's encoding, special tokens included.
PLAIN_TEXT_ROLES = frozenset({"system", "user", "tool"})


@lru_cache(maxsize=16)
def load_hf_tokenizer(path: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(path)


@contextmanager
def sftprep_loads_each_tokenizer_once() -> Iterator[None]:
    """sftprep loads its tokenizer per prepare() (1-2 s for qwen2.5/llama3): memoize that inside the block, so
    tests can afford many small runs. The pipeline itself runs unchanged."""
    cached = lru_cache(maxsize=8)(BPETokenizer.load)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BPETokenizer, "load", staticmethod(lambda path=None: cached(None if path is None else str(path))))
        yield


def make_oracle(tokenizer_dir: str | Path, template: str | None = None) -> Oracle:
    """The oracle for a tokenizer directory with its own template (None) or a built-in (chatml, alpaca)."""
    tok = load_hf_tokenizer(str(tokenizer_dir))
    marker = str(tok.eos_token) if template == "alpaca" else END_OF_TURN[template or Path(tokenizer_dir).name]
    return Oracle(tok, marker, BUILTIN_JINJA[template] if template else None)


@dataclass
class Failure:
    where: str  # file:line
    turn: int
    check: str
    expected: str
    got: str

    def __str__(self) -> str:
        return f"{self.where} turn {self.turn} [{self.check}]\n    expected: {self.expected}\n    got:      {self.got}"


@dataclass
class Report:
    examples: int = 0
    turns_checked: int = 0
    passed: int = 0
    plain_special_turns: int = 0  # turns whose messages spell a special token (checked by position + text)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.passed == self.turns_checked

    def summary(self) -> str:
        return (
            f"{self.examples} examples, {self.turns_checked} trained turns checked, {self.passed} pass, "
            f"{len(self.failures)} failures ({self.plain_special_turns} turns with special-token text in content)"
        )

    def format(self, limit: int = 15) -> str:
        more = [f"... and {len(self.failures) - limit} more"] if len(self.failures) > limit else []
        return "\n".join([self.summary(), *(str(f) for f in self.failures[:limit]), *more])


class Mismatch(Exception):
    """One failed check: (check, expected, got)."""


def common_prefix_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    return next((n for n, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def trained_runs(labels: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal [start, end) runs of labels != -100."""
    on = [False, *(v != IGNORE for v in labels), False]
    edges = [j for j in range(len(on) - 1) if on[j] != on[j + 1]]
    return list(zip(edges[::2], edges[1::2]))


class Oracle:
    """Checks invariants 1 and 2 of every example in an sftprep output directory."""

    def __init__(self, tok: PreTrainedTokenizerBase, marker: str, jinja: str | None = None) -> None:
        self.tok, self.marker, self.chat_template = tok, marker, jinja
        self.builtin = jinja in BUILTIN_JINJA.values()
        # Special tokens only: transformers never splits a non-special added token (minimind's <think>, Phi-3's
        # </s>, qwen2.5's <tool_call>), so text spelling one is that token wherever it is.
        added = {i: t.content for i, t in tok.added_tokens_decoder.items() if t.special}
        self.special_ids = frozenset(added)
        self.special_id = {content: i for i, content in added.items()}
        strings = sorted({s for s in added.values() if s}, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, strings))) if strings else None
        normalizer = getattr(getattr(tok, "backend_tokenizer", None), "normalizer", None)
        self.normalize = normalizer.normalize_str if normalizer is not None else str
        probe = "Hello\n  world, 你好 😀 <x>\t!"
        self.exact_decode = self.decode(self.encode(probe)) == probe
        self._records: dict[str, dict[int, Any]] = {}

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def spelled(self, messages: Sequence[Message]) -> int:
        """Special-token spellings in PLAIN_TEXT_ROLES message text (content, input): plain text, not the token."""
        pattern, roles = self._special_re, PLAIN_TEXT_ROLES
        return sum(len(pattern.findall(m.full_content)) for m in messages if m.role in roles) if pattern else 0

    def neutral(self, text: str) -> str:
        """`text` with each special-token spelling replaced by as many '#': same length, no special token."""
        return self._special_re.sub(lambda m: "#" * len(m.group()), text) if self._special_re else text

    def hf_messages(self, conv: Conversation, neutral: bool = False) -> list[dict[str, Any]]:
        out = []
        for m in conv.messages:
            if neutral and m.role in PLAIN_TEXT_ROLES:
                m = replace(m, content=self.neutral(m.content), input=m.input and self.neutral(m.input))
            d = message_to_hf(m)
            if self.builtin and m.input:  # the alpaca spec renders instruction and input apart
                d["instruction"], d["input"] = m.content, m.input
            out.append(d)
        return out

    def render(self, messages: list[dict[str, Any]], gen: bool, tools: list[Any] | None) -> str:
        kwargs: dict[str, Any] = {"tools": tools} if tools else {}
        kwargs |= {"tokenize": False, "add_generation_prompt": gen, "chat_template": self.chat_template}
        kwargs |= getattr(self, "vars", {})
        return str(self.tok.apply_chat_template(messages, **kwargs))

    def conversation(self, source_file: str, line: int) -> Conversation | Reject:
        if source_file not in self._records:
            self._records[source_file] = read_source_records(source_file)
        return normalize_conversations(RawRecord(source_file, line, data=self._records[source_file].get(line)))

    def check_dir(self, out_dir: str | Path, report: Report | None = None) -> Report:
        report = report or Report()
        # trained turns sftprep left out (the template renders nothing of them to train, ...): never trained
        self.left_out = {(r["source_file"], r["source_line"], r["turn"]) for r in read_rejects(out_dir) if "turn" in r}
        for ex in iter_output(out_dir):
            self.check_example(ex, report)
        return report

    def check_example(self, ex: dict[str, Any], report: Report) -> None:
        report.examples += 1
        where, turn = f"{ex['source_file']}:{ex['source_line']}", ex["turn"]
        ids, labels = list(ex["input_ids"]), list(ex["labels"])

        def fail(check: str, expected: str, got: str, k: int = turn) -> None:
            report.failures.append(Failure(where, k, check, expected, got))

        if len(ids) != len(labels) or any(lab not in (IGNORE, i) for i, lab in zip(ids, labels)):
            fail("labels aligned", "labels == input_ids or -100 at every position", "a label differs")
        conv = self.conversation(ex["source_file"], ex["source_line"])
        if isinstance(conv, Reject):
            return fail("source record", "a conversation", conv.message)
        assistants = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        left_out = getattr(self, "left_out", set())
        trained = [
            i
            for k, i in enumerate(assistants)
            if conv.messages[i].weight != 0 and (ex["source_file"], ex["source_line"], k) not in left_out
        ]
        self.vars = json.loads(ex.get("template_vars") or "{}")
        targets = assistants[turn : turn + 1] if turn >= 0 else trained
        runs = trained_runs(labels)
        report.turns_checked += len(targets)
        if len(runs) != len(targets):
            return fail("one run per trained turn", f"{len(targets)} runs (messages {targets})", f"{len(runs)} runs")
        for (start, end), i in zip(runs, targets):
            report.plain_special_turns += bool(self.spelled(conv.messages[: i + 1]))
            try:
                self.check_turn(conv, i, ids[:start], ids[start:end])
                report.passed += 1
            except Mismatch as m:
                fail(*m.args, k=assistants.index(i))

    def check_turn(self, conv: Conversation, i: int, prefix: list[int], run: list[int]) -> None:
        """Raise Mismatch unless assistant message i is trained as `run` after `prefix`."""
        n_prompt, n_turn = self.spelled(conv.messages[:i]), self.spelled(conv.messages[i : i + 1])
        if conv.raw_prompt is not None and conv.raw_completion is not None:
            eos = str(self.tok.eos_token or "")
            prompt, expected = conv.raw_prompt, conv.raw_completion + eos
            neutral = (self.neutral(prompt), self.neutral(conv.raw_completion) + eos)
        else:
            prompt, expected = self.texts(self.hf_messages(conv), conv, i)
            neutral = self.texts(self.hf_messages(conv, True), conv, i) if n_prompt + n_turn else (prompt, expected)
            if (len(neutral[0]), len(neutral[1])) != (len(prompt), len(expected)):
                raise Mismatch("template keeps content", "special-token text rendered as it is", snippet(expected))
        prompt_ids = self.encode(prompt)
        if n_prompt:
            self.check_plain("inv2 prompt", prompt, neutral[0], prefix)
        elif prefix != prompt_ids:
            raise Mismatch("inv2 prompt ids", *self._diff(prompt_ids, prefix))
        joint = self.encode(prompt + expected)
        if n_turn or joint[: len(prompt_ids)] != prompt_ids:
            self.check_plain("inv1 turn", expected, neutral[1], run)
        elif run != joint[len(prompt_ids) :]:
            raise Mismatch("inv1 turn ids", *self._diff(joint[len(prompt_ids) :], run))

    def texts(self, messages: list[dict[str, Any]], conv: Conversation, i: int) -> tuple[str, str]:
        """(prompt, expected trained text) of assistant message i."""
        tools = list(conv.tools) if conv.tools else None
        try:
            prompt = self.render(messages[:i], True, tools)
            renders = [(self.render(messages[: i + 1], False, tools), True)]
            if not renders[0][0].startswith(prompt):
                renders.append((self.render(messages, False, tools), False))
        except Exception as e:  # the template raised: sftprep should have rejected the record
            raise Mismatch("render", "a renderable conversation", snippet(f"{type(e).__name__}: {e}")) from e
        full, single = next(((t, s) for t, s in renders if t.startswith(prompt)), (None, False))
        if full is None:
            at = common_prefix_len(prompt, renders[-1][0])
            raise Mismatch(
                "prompt is a prefix", snippet(prompt[at - 40 :]), snippet(renders[-1][0][at - 40 : at + 120])
            )
        tail = full[len(prompt) :]
        if single:  # the turn rendered alone: its marker is the last one
            m = tail.rfind(self.marker)
        else:  # the whole conversation: the first marker after the message's content
            content = messages[i]["content"].strip()
            at = tail.find(content) if content else -1
            m = tail.find(self.marker, at + len(content) if at >= 0 else 0)
        if m < 0:
            raise Mismatch("end-of-turn marker", f"{self.marker!r} after the content", snippet(tail))
        return prompt, tail[: m + len(self.marker)]

    def check_plain(self, check: str, text: str, neutral: str, ours: list[int]) -> None:
        """`ours` must hold exactly the template's special tokens (those left in `neutral`, the same render with
        message text's spellings replaced), and between them `text` (message spellings as plain text)."""
        spans = [m.span() for m in self._special_re.finditer(neutral)] if self._special_re else []
        want = [self.special_id[text[a:b]] for a, b in spans]
        at = [j for j, t in enumerate(ours) if t in self.special_ids]
        if [ours[j] for j in at] != want:
            raise Mismatch(f"{check} special tokens", self._names(want), self._names([ours[j] for j in at]))
        cuts = [0, *(x for span in spans for x in span), len(text)]
        bounds, strips = [-1, *at, len(ours)], self.tok.added_tokens_decoder
        for k in range(len(bounds) - 1):
            segment, got = text[cuts[2 * k] : cuts[2 * k + 1]], self.decode(ours[bounds[k] + 1 : bounds[k + 1]])
            if k > 0 and strips[ours[bounds[k]]].rstrip:  # the token before swallows the whitespace after it
                segment = segment.lstrip(WHITE_SPACE)
            if k < len(at) and strips[ours[bounds[k + 1]]].lstrip:
                segment = segment.rstrip(WHITE_SPACE)
            if not self.same_text(segment, got):
                raise Mismatch(f"{check} text after special token {k}", snippet(segment), snippet(got))

    def same_text(self, expected: str, got: str) -> bool:
        """Equal decoded text (after the tokenizer's normalizer: NFC for qwen2.5); whitespace-insensitive where
        decoding does not round-trip (SentencePiece-style prepended spaces)."""
        if got in (expected, self.normalize(expected)):
            return True
        return not self.exact_decode and "".join(got.split()) == "".join(expected.split())

    def _names(self, ids: list[int]) -> str:
        return f"{len(ids)}: " + " ".join(self.decode([i]) for i in ids[:12]) + (" ..." if len(ids) > 12 else "")

    def _diff(self, expected: list[int], got: list[int]) -> tuple[str, str]:
        """Both id lists around their first difference, with the decoded text there."""
        at = common_prefix_len(expected, got)

        def show(ids: list[int]) -> str:
            near = ids[max(0, at - 4) : at + 6]
            return f"{len(ids)} ids, from index {at}: {near} = {snippet(self.decode(near), 100)}"

        return show(expected), show(got)
