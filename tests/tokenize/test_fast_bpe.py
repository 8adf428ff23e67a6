"""tiktoken as a stand-in for HF tokenizers (fast_bpe.py): the same ids wherever it answers, None elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

from sftprep.tokenize.fast_bpe import _byte_decoder, fast_bpe
from sftprep.tokenize.tokenizer import BPETokenizer

pytest.importorskip("tiktoken")
SHARED = SHARED_DIR
QWEN = SHARED / "tokenizers" / "qwen2.5"
PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
ASCII_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=200)
TRICKY = ["", " ", "\n\n", "  x", "it's  \tOK\r\n", "a1234b", "<|im_end|>x", "x<|im_start|>user\nhi", "'S 'LL"]


def _tiny(merges: list[tuple[str, str]]) -> Tokenizer:
    """A byte-level BPE over the 256 byte characters plus the merges' results, ids in merge order."""
    chars = sorted(_byte_decoder(), key=lambda c: _byte_decoder()[c])
    vocab = {c: i for i, c in enumerate(chars)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab, merges))
    split = pre_tokenizers.Split(Regex(PATTERN), behavior="isolated")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    return tok


def _hf(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def test_a_token_tiktoken_builds_from_an_unlisted_pair_goes_to_hf() -> None:
    # "abc" is listed as a + bc only; tiktoken would return "abc" at once (or build it as ab + c), HF gives ab, c
    tok = _tiny([("a", "b"), ("b", "c"), ("a", "bc")])
    fast = fast_bpe(tok)
    assert fast is not None
    assert [tok.id_to_token(i) for i in _hf(tok, "abc")] == ["ab", "c"]
    assert fast.encode("abc") is None
    assert fast.encode("bc ab").tolist() == _hf(tok, "bc ab")  # type: ignore[union-attr]


def test_merges_inconsistent_with_ids_disable_it() -> None:
    tok = _tiny([("b", "c"), ("a", "b")])  # ids follow merge order, but then swap two results' ids
    cfg = json.loads(tok.to_str())
    vocab = cfg["model"]["vocab"]
    vocab["ab"], vocab["bc"] = vocab["bc"], vocab["ab"]
    assert fast_bpe(Tokenizer.from_str(json.dumps(cfg))) is None


def test_configurations_it_cannot_match_disable_it() -> None:
    """A split pattern outside the known ones (tiktoken drops text no match covers, and the engines read `^`
    differently), truncation or padding, added tokens matched in HF's two passes: no fast path."""
    tok = _tiny([("a", "b")])
    assert fast_bpe(tok) is not None
    odd = _tiny([("a", "b")])
    odd.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\p{L}+"), behavior="isolated"), pre_tokenizers.ByteLevel(use_regex=False)]
    )
    assert _hf(odd, "ab cd!") != [i for w in ("ab", "cd") for i in _hf(tok, w)] and fast_bpe(odd) is None
    truncating = _tiny([("a", "b")])
    truncating.enable_truncation(2)
    assert fast_bpe(truncating) is None
    padding = _tiny([("a", "b")])
    padding.enable_padding(length=6)
    assert fast_bpe(padding) is None
    mixed = _tiny([("a", "b")])
    mixed.add_tokens([AddedToken("xy", normalized=True), AddedToken("yz", normalized=False)])
    assert fast_bpe(mixed) is None


def test_not_ascii_goes_to_hf() -> None:
    fast = fast_bpe(_tiny([("a", "b")]))
    assert fast is not None and fast.encode("abé") is None


def _tokenizers() -> list[BPETokenizer]:
    out = [BPETokenizer.load(None)]
    for name in ("qwen2.5", "minimind"):
        if (SHARED / "tokenizers" / name).is_dir():
            out.append(BPETokenizer.load(SHARED / "tokenizers" / name))
    return out


@pytest.mark.parametrize("tok", _tokenizers(), ids=lambda t: Path(t.path).name)
def test_same_ids_as_hf_on_tricky_and_generated_text(tok: BPETokenizer) -> None:
    fast = tok.fast
    assert fast is not None, "expected the fast path for this byte-level tokenizer"

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(ASCII_TEXT, st.sampled_from(TRICKY)))
    def check(text: str) -> None:
        ids = fast.encode(text)
        if ids is not None:
            assert ids.tolist() == _hf(tok.tokenizer, text)

    check()


def test_which_shared_tokenizers_qualify() -> None:
    """Llama 3 and GPT-2 list every split of a token, some with a part whose id exceeds the result's (M2 fails):
    they stay on HF. Phi-3 (SentencePiece-style) is not byte-level."""
    if not QWEN.is_dir():
        pytest.skip("../shared/tokenizers is absent")
    qualifies = {
        n: BPETokenizer.load(SHARED / "tokenizers" / n).fast is not None for n in ("qwen2.5", "llama3", "phi-3-mini")
    }
    assert qualifies == {"qwen2.5": True, "llama3": False, "phi-3-mini": False}


def test_same_ids_as_hf_on_every_shared_dataset_text() -> None:
    """Every string field of the shared datasets (ASCII ones through tiktoken), qwen2.5."""
    if not QWEN.is_dir():
        pytest.skip("../shared/tokenizers is absent")
    tok = BPETokenizer.load(QWEN)
    texts: list[str] = []
    for path in sorted((SHARED / "data").rglob("*.json*")):
        raw = path.read_text("utf-8", errors="replace")
        items = (
            [json.loads(line) for line in raw.splitlines() if line.strip()]
            if path.suffix == ".jsonl"
            else json.loads(raw)
        )
        _strings(items, texts)
    texts = list(dict.fromkeys(t for t in texts if t.isascii()))
    fast = tok.fast
    assert fast is not None
    expected = [e.ids for e in tok.tokenizer.encode_batch(texts, add_special_tokens=False)]
    answered = 0
    for text, want in zip(texts, expected):
        ids = fast.encode(text)
        if ids is not None:
            answered += 1
            assert ids.tolist() == want, text[:200]
    assert answered >= 0.99 * len(texts)


def _strings(value: object, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)
