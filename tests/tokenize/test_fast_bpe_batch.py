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
