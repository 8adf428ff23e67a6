"""Generated conversations through normalize -> render -> encode -> labels, for every built-in template.

Conversations mix arbitrary unicode (CJK, emoji, combining marks), empty and whitespace-only content,
strings that spell special tokens or template placeholders, long turns, up to 12 turns, an optional system
message and assistant turns of weight 0, in role orders that are sometimes invalid. Each record goes through
`Preparer.process` with the dummy tokenizer (one id per character, markers as special ids), and an oracle
written here from builtin.json's fields alone (never sftprep's renderer) says what must come out:

* a reject, with the reason the oracle expects, or
* input_ids and labels equal to the oracle's: labels aligned with input_ids; trained tokens only inside
  assistant turns; each trained run decodes to that turn's text (assistant format + end-of-turn marker);
  the tokens before each run are the history rendered with the generation prompt; special-token strings
  in user and system text are plain characters, never special ids (assistant text keeps the tokenizer's
  own encoding: a special token there is what the model emits).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pytest
from dummy_tokenizer import MARKER_IDS, MARKERS, UNK_ID, write_dummy_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftprep.preparation.options import PrepareOptions
from sftprep.preparation.pipeline import Preparer, load_components
from sftprep.templates.spec import builtin_specs
from sftprep.types import RawRecord

IGNORE = -100
BOS, EOS = "<s>", "</s>"  # the dummy tokenizer's defaults
NAMES = sorted(builtin_specs())
SPEC: dict[str, dict[str, Any]] = json.loads(
    resources.files("sftprep").joinpath("templates", "builtin.json").read_text("utf-8")
)
SPECIAL_IDS = frozenset(MARKER_IDS.values())

# ---------------------------------------------------------------------------- the oracle


@dataclass
class Seg:
    text: str
    plain: bool = False  # user/system text (one id per character, never special) or template/assistant text
    trained: bool = False


@dataclass
class Expected:
    reject: str | None = None
    segs: list[Seg] = field(default_factory=list)
    runs: list[list[Seg]] = field(default_factory=list)  # each trained turn's segments
    prompts: list[list[Seg]] = field(default_factory=list)  # history + generation prompt before each run
    run_msgs: list[int] = field(default_factory=list)  # the index in the conversation of each run's message


def fill(fmt: str) -> str:
    """A template fragment (never holding message text) with {bos}/{eos} filled in."""
    return fmt.replace("{bos}", BOS).replace("{eos}", EOS)


def around(fmt: str) -> tuple[str, str]:
    before, _, after = fmt.partition("{content}")
    return fill(before), fill(after)


def render(name: str, msgs: list[tuple[str, str, int | None]], train_eos: bool, gen_prompt: bool = False) -> Expected:
    """The conversation rendered by builtin.json's rules, as segments; or the expected reject."""
    s = SPEC[name]
    out = Expected()
    add = out.segs.append
    add(Seg(fill(s.get("bos", ""))))
    system = msgs[0][1] if msgs and msgs[0][0] == "system" else None
    rest = msgs[1:] if system is not None else msgs
    fold: str | None = None
    if system is not None and s.get("system") is None:
        if s.get("system_in_first_user") is None or not rest or rest[0][0] != "user":
            return Expected(reject="template_unsupported")
        fold = system
    elif system is not None or s.get("default_system") is not None:
        before, after = around(s["system"])
        add(Seg(before))
        add(Seg(system, plain=True) if system is not None else Seg(s["default_system"]))
        add(Seg(after))
    for i, (role, text, weight) in enumerate(rest, len(msgs) - len(rest)):
        if role == "user":
            before, after = around(s["user"])
            add(Seg(before))
            if fold is not None:
                head = s["system_in_first_user"].partition("{content}")[0]
                sys_before, _, sys_after = head.partition("{system}")
                out.segs += [Seg(fill(sys_before)), Seg(fold, plain=True), Seg(fill(sys_after))]
                fold = None
            out.segs += [Seg(text, plain=True), Seg(after)]
            continue
        out.prompts.append([*out.segs, Seg(fill(s.get("assistant_header", "")))])
        trained = weight != 0
        before, after = around(s["assistant"])
        eot = Seg(fill(s["end_of_turn"]), trained=trained and train_eos)
        turn = [Seg(before, trained=trained), Seg(text, trained=trained), Seg(after, trained=trained)]
        out.segs += [Seg(fill(s.get("assistant_header", ""))), *turn, eot, Seg(fill(s.get("after_turn", "")))]
        run = [g for g in (*turn, eot) if g.trained and g.text]
        if not run:
            out.prompts.pop()
        else:
            out.runs.append(run)
            out.run_msgs.append(i)
    if gen_prompt:
        out.segs.append(Seg(fill(s.get("assistant_header", ""))))
    return out


def expect(name: str, msgs: list[tuple[str, str, int | None]], train_eos: bool) -> Expected:
    roles = [r for r, _, _ in msgs]
    for a, b in zip(roles, roles[1:]):
        if a == b:
            return Expected(reject="consecutive_roles")
    if "assistant" not in roles:
        return Expected(reject="no_assistant_turn")
    out = render(name, msgs, train_eos)
    if out.reject is None and not out.runs:
        return Expected(reject="no_trainable_tokens")
    return out


def char_ids(text: str) -> np.ndarray:
    """Message text: one id per code point (its value below 256, else <unk>), never a special id."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    return np.where(cps < 256, cps, UNK_ID)


_MARKER_RE = re.compile("(" + "|".join(map(re.escape, sorted(MARKERS, key=len, reverse=True))) + ")")


def template_ids(text: str) -> np.ndarray:
    """The tokenizer's own encoding: a marker (longest first) is one special id, anything else a character."""
    parts = _MARKER_RE.split(text)  # odd positions hold the markers
    return ids_concat([np.array([MARKER_IDS[p]]) if k % 2 else char_ids(p) for k, p in enumerate(parts)])


def ids_concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.zeros(0, np.int64), *arrays]).astype(np.int64)


def seg_ids(g: Seg) -> np.ndarray:
    return char_ids(g.text) if g.plain else template_ids(g.text)


def ids_of(segs: list[Seg]) -> np.ndarray:
    return ids_concat([seg_ids(g) for g in segs])


TOKEN_TEXT = [chr(i) for i in range(256)] + ["\ufffd"] * (max(MARKER_IDS.values()) + 1 - 256)
for _m, _i in MARKER_IDS.items():
    TOKEN_TEXT[_i] = _m


def decode(ids: np.ndarray) -> str:
    return "".join(TOKEN_TEXT[i] for i in ids.tolist())


_NOT_LATIN1 = re.compile("[^\x00-\xff]")


def lossy(text: str) -> str:
    """What decoding the dummy ids of `text` gives: characters beyond U+00FF became <unk>."""
    return _NOT_LATIN1.sub("\ufffd", text)


# ---------------------------------------------------------------------------- the system under test


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_dummy_tokenizer(tmp_path_factory.mktemp("tok")))


@cache
def preparer(name: str, train_eos: bool, tok_dir: str) -> Preparer:
    opts = PrepareOptions(inputs=["-"], tokenizer=tok_dir, template=name, train_on_eos=train_eos)
    tok, template = load_components(opts)
    return Preparer(opts, tok, template)


def check_example(name: str, exp: Expected, ids: np.ndarray, labels: np.ndarray) -> None:
    assert len(labels) == len(ids)
    trained = labels != IGNORE
    assert np.array_equal(labels[trained], ids[trained]), "a trained label differs from its input id"
    want = ids_of(exp.segs)
    assert np.array_equal(ids, want), f"{name}: input_ids\n{decode(ids)!r}\n!=\n{decode(want)!r}"
    lengths = [len(seg_ids(g)) for g in exp.segs]
    in_plain = np.repeat([g.plain for g in exp.segs], lengths)
    in_turn = np.repeat([g.trained for g in exp.segs], lengths)
    assert np.array_equal(trained, in_turn), f"{name}: trained tokens outside the assistant turns' regions"
    assert not np.isin(ids[in_plain], list(SPECIAL_IDS)).any(), f"{name}: a special id in user/system text"
    edges = np.flatnonzero(np.diff(np.concatenate([[0], trained.astype(np.int8), [0]])))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist()))
    assert len(runs) == len(exp.runs), f"{name}: {len(runs)} trained runs, expected {len(exp.runs)}"
    text = decode(ids)
    offsets = np.concatenate([[0], np.cumsum([len(TOKEN_TEXT[i]) for i in ids.tolist()])])
    for (start, end), run, prompt in zip(runs, exp.runs, exp.prompts):
        assert np.array_equal(ids[start:end], ids_of(run)), f"{name}: trained run {decode(ids[start:end])!r}"
        assert text[offsets[start] : offsets[end]] == lossy("".join(g.text for g in run))
        assert np.array_equal(ids[:start], ids_of(prompt)), f"{name}: the prompt before a trained turn"
        assert text[: offsets[start]] == lossy("".join(g.text for g in prompt))


def check_prompt_independently(name: str, msgs: list[tuple[str, str, int | None]], exp: Expected) -> None:
    """The prompt before each run equals the history rendered on its own with the generation prompt."""
    for i, prompt in zip(exp.run_msgs, exp.prompts):
        alone = render(name, msgs[:i], True, gen_prompt=True)
        assert np.array_equal(ids_of(alone.segs), ids_of(prompt))


# ---------------------------------------------------------------------------- strategies

SPECIAL_STRINGS = ["<|im_end|>", "<|im_start|>", "</s>", "<s>", "[INST]", "[/INST]", "<|eot_id|>"]
SPECIAL_STRINGS += ["<|start_header_id|>", "<|end|>", "<|user|>", "<|assistant|>", "<start_of_turn>"]
SPECIAL_STRINGS += ["<end_of_turn>", "<|ASSISTANT|>", "<|endoftext|>", "<bos>", "<pad>", "<|im_end", "|>", "<unk>"]
ODD = ["", " ", "  ", "\n", "\n\n", "\t \r\n", "日本語", "中文字符", "👍🏽", "👨\u200d👩\u200d👧", "e\u0301", "ñ"]
ODD += ["\u0300", "\x00", "\u00a0", "\u2028"]  # a lone combining mark, NUL, no-break space, line separator
ODD += ["{content}", "{eos}", "{bos}", "{system}", "<<SYS>>", "### Response:", "USER:"]  # placeholders, lookalikes

piece = st.one_of(
    st.text(max_size=12),
    st.sampled_from(ODD),
    st.sampled_from(SPECIAL_STRINGS),
    st.integers(200, 2000).map(lambda n: ("long turn " * (n // 10 + 1))[:n]),
)
content = st.lists(piece, max_size=4).map("".join)


@st.composite
def conversations(draw: st.DrawFn) -> list[tuple[str, str, int | None]]:
    n = draw(st.integers(1, 12))
    if draw(st.integers(0, 9)) < 8:  # mostly well formed: alternating, usually from the user
        first = draw(st.sampled_from(["user", "user", "user", "assistant"]))
        other = "assistant" if first == "user" else "user"
        roles = [first if k % 2 == 0 else other for k in range(n)]
    else:
        roles = draw(st.lists(st.sampled_from(["user", "assistant"]), min_size=n, max_size=n))
    msgs = [
        (r, draw(content), draw(st.sampled_from([None, None, None, 1, 0])) if r == "assistant" else None) for r in roles
    ]
    if draw(st.booleans()):
        msgs.insert(0, ("system", draw(content), None))
    return msgs


def to_record(msgs: list[tuple[str, str, int | None]]) -> dict[str, Any]:
    out = []
    for role, text, weight in msgs:
        m: dict[str, Any] = {"role": role, "content": text}
        if weight is not None:
            m["weight"] = weight
        out.append(m)
    return {"messages": out}


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(conversations(), min_size=1, max_size=4), train_eos=st.booleans())
def test_every_builtin_template_keeps_the_invariants(
    batch: list[list[tuple[str, str, int | None]]], train_eos: bool, tok_dir: str
) -> None:
    raws = [RawRecord("fuzz.jsonl", k + 1, data=to_record(msgs)) for k, msgs in enumerate(batch)]
    for name in NAMES:
        prepared = preparer(name, train_eos, tok_dir).process(raws)  # no exception may escape
        assert len(prepared) == len(raws)
        for msgs, p in zip(batch, prepared):
            exp = expect(name, msgs, train_eos)
            if exp.reject is not None or p.reject is not None:
                got = p.reject.reason if p.reject else None
                assert got == exp.reject, f"{name}: {msgs!r}: rejected as {got}, expected {exp.reject}"
                assert p.reject is not None and p.reject.message.startswith("fuzz.jsonl:")
                continue
            assert len(p.encoded) == 1, f"{name}: one example per conversation"
            e = p.encoded[0]
            check_example(name, exp, np.asarray(e.input_ids, np.int64), np.asarray(e.labels, np.int64))
            check_prompt_independently(name, msgs, exp)


def test_the_oracle_matches_a_hand_written_render() -> None:
    """The oracle itself, on one conversation for each way of placing the system text."""
    msgs: list[tuple[str, str, int | None]] = [("system", "S", None), ("user", "U", None), ("assistant", "A", None)]
    cases = {
        "chatml": (
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n",
            "A<|im_end|>",
        ),
        "llama2": ("<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]", " A </s>"),
        "mistral": ("<s>[INST] S\n\nU [/INST]", "A</s>"),
        "vicuna": ("S USER: U ASSISTANT:", " A</s>"),
    }
    for name, (prompt, trained) in cases.items():
        exp = expect(name, msgs, True)
        assert "".join(g.text for g in exp.prompts[0]) == prompt
        assert "".join(g.text for g in exp.runs[0]) == trained
        assert "".join(g.text for g in exp.segs) == prompt + trained + SPEC[name].get("after_turn", "")
