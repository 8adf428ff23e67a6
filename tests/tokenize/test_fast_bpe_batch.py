"""FastBPE.encode_many: one tiktoken call for many texts gives each text's own encoding (issue #15)."""

from __future__ import annotations

import random

import pytest
from conftest import SHARED_DIR

from sftprep.tokenize.fast_bpe import SEPARATOR
from sftprep.tokenize.tokenizer import BPETokenizer

QWEN = SHARED_DIR / "tokenizers" / "qwen2.5"
pytestmark = pytest.mark.skipif(not QWEN.is_dir(), reason=f"{QWEN} is absent")


def texts() -> list[str]:
    rng = random.Random(0)
    words = ["hello", " world", "\n\n", "  ", "123456", "<|im_end|>", "'s", "x<|im_start|>y", "\t", "JSON {", "}"]
    out = ["", " ", "a", "\n", "trailing   ", "   leading"]
    out += ["".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(300)]
    return out


def test_encode_many_equals_one_by_one_and_hf() -> None:
    tok = BPETokenizer.load(QWEN)
    fast = tok.fast
    assert fast is not None
    batch = texts()
    many = fast.encode_many(batch)
    for text, got in zip(batch, many, strict=True):
        one = fast.encode(text)
        assert (got is None) == (one is None), text
        if got is not None:
            assert got.tolist() == one.tolist() == tok.encode(text), text


def test_a_text_tiktoken_cannot_take_is_none_in_place() -> None:
    fast = BPETokenizer.load(QWEN).fast
    assert fast is not None
    unsafe = "e\u0301"  # a combining accent: NFC (Qwen2's normal form) composes it, so HF encodes it
    assert fast.encode(unsafe) is None
    out = fast.encode_many(["abc", unsafe, "def"])
    assert out[1] is None and out[0] is not None and out[2] is not None
    assert SEPARATOR not in "abc"


def test_encode_many_with_offsets_gives_hf_ids_and_character_spans() -> None:
    tok = BPETokenizer.load(QWEN)
    fast = tok.fast
    assert fast is not None
    rng = random.Random(1)
    pieces = ["你好，世界", "naïve café", " — ", "😀 ok", "Ünïcödé"]
    mixed = ["".join(rng.choice([*pieces, *texts()[:40]]) for _ in range(rng.randint(1, 6))) for _ in range(200)]
    compared = 0
    batch = texts() + mixed
    for text, got in zip(batch, fast.encode_many_with_offsets(batch), strict=True):
        if got is None:
            continue
        enc = tok.tokenizer.encode(text, add_special_tokens=False)
        assert (got[0].tolist(), got[1]) == (enc.ids, enc.offsets), text
        compared += not text.isascii()
    assert compared > 50  # the non-ASCII texts were compared, not all left to HF


def test_the_tiktoken_call_is_made_with_the_rust_calls_not_while_planning() -> None:
    """plan_encoding leaves tiktoken's batch call to run_encoding (which runs in a thread while the next batch
    is rendered); what tiktoken does not take joins HF's texts there, and the ids are those of HF alone."""
    from sftprep.labels.build_loss_labels import Fast, label_pieces, plan_encoding, run_encoding
    from sftprep.preparation.options import PrepareOptions
    from sftprep.preparation.pipeline import load_components
    from sftprep.templates.render_chat_prompt import render_chat_prompt
    from sftprep.types import Conversation, Message

    opts = PrepareOptions(inputs=["a.jsonl"], tokenizer=str(QWEN))
    tok, template = load_components(opts)
    said = [
        ("user", "Say e\u0301 and hello"),
        ("assistant", "hello world, e\u0301"),
        ("user", "2+2?"),
        ("assistant", "4"),
    ]
    units = render_chat_prompt(Conversation(tuple(Message(r, c) for r, c in said), "a.jsonl", 1), template,
                               opts.render_options(tok))  # fmt: skip
    assert isinstance(units, list)
    job = plan_encoding(units, tok)
    parts = [x for r in job.recipes or [] for x in (r if isinstance(r, list) else [r])]
    assert job.fast_texts and any(isinstance(x, Fast) for x in parts)
    hf_texts = len(job.normal)
    encoded = label_pieces(job, run_encoding(job, tok), tok.literal_cache)
    assert not job.fast_texts and len(job.normal) > hf_texts  # the combining accent went to HF
    for e in encoded:
        assert e.input_ids.tolist() == tok.encode(e.rendered.text)
