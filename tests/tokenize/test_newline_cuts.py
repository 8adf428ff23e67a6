"""FastBPE.splits_after_newline: a cut after "\\n" and before a character that is not whitespace needs no
boundary check under Qwen2's / Llama 3's split pattern; HF's joint encoding is the two sides' (issue #15)."""

from __future__ import annotations

import random

import pytest
from conftest import SHARED_DIR

from sftprep.tokenize.tokenizer import BPETokenizer

TOKENIZERS = ["qwen2.5", "llama3"]
LEFT = ["user", "assistant\n", "  ", "\t", "x!", "?", ":", "123", " \n", "\r\n", "你好", "'s", "é", "\u3000"]
RIGHT = ["Hello", "'s", "'re", "123", "4567", "!", "?!", "-", "{", "<", "你好", "ça", "é", "\u0301x", "😀", "x y"]


def pairs(rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for _ in range(400):
        left = "".join(rng.choice(LEFT) for _ in range(rng.randint(0, 4))) + "\n" * rng.randint(1, 3)
        right = "".join(rng.choice(RIGHT) for _ in range(rng.randint(1, 4)))
        out.append((left, right))
    return out


@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_cut_after_a_newline_splits_as_the_joint_encoding(name: str) -> None:
    path = SHARED_DIR / "tokenizers" / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    tok = BPETokenizer.load(path)
    fast = tok.fast
    assert fast is not None
    claimed = 0
    for left, right in pairs(random.Random(name)):
        text = left + right
        if not fast.splits_after_newline(text, len(left)):
            assert right[0].isspace() or not fast.takes(right[0]), (left, right)
            continue
        claimed += 1
        assert tok.encode(text) == tok.encode(left) + tok.encode(right), (left, right)
    assert claimed > 300


@pytest.mark.parametrize("name", TOKENIZERS)
def test_no_claim_before_whitespace_or_after_other_text(name: str) -> None:
    path = SHARED_DIR / "tokenizers" / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    fast = BPETokenizer.load(path).fast
    assert fast is not None
    assert fast.splits_after_newline("a\nb", 2)
    for text, cut in [("a\n b", 2), ("a\n\nb", 2), ("a\n\tb", 2), ("ab", 1), ("a\n", 2), ("\nb", 0)]:
        assert not fast.splits_after_newline(text, cut), (text, cut)
    # where the claim would be wrong: HF merges the newlines across such a cut
    tok = BPETokenizer.load(path)
    assert tok.encode("a\n\nb") != tok.encode("a\n") + tok.encode("\nb")


def test_gpt2s_pattern_makes_no_claim() -> None:
    path = SHARED_DIR / "tokenizers" / "gpt2-tiktoken"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    tok = BPETokenizer.load(path)
    assert tok.fast is not None and not tok.fast.splits_after_newline("a\n\nb", 3)
    # rightly: GPT-2's `\s+(?!\S)` leaves the last "\n" to the next pre-token in the joint text
    assert tok.encode("a\n\nb") != tok.encode("a\n\n") + tok.encode("b")
