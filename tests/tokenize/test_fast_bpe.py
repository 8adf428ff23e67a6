"""tiktoken as a stand-in for HF tokenizers (fast_bpe.py): the same ids wherever it answers, None elsewhere."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import SHARED_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers

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


def _every_split(seed: int) -> Tokenizer:
    """Llama 3's style: tokens over "ab" added in id order (each a concatenation of two earlier ones), then
    every split of every token listed, by the result's id, splits of one token in a random order (some with a
    part whose id exceeds the result's, as in Llama 3); on odd seeds a third of the splits left out."""
    rng = random.Random(seed)
    chars = sorted(_byte_decoder(), key=lambda c: _byte_decoder()[c])
    vocab = {c: i for i, c in enumerate(chars)}
    pool = ["a", "b"]
    while len(pool) < 40:
        t = rng.choice(pool) + rng.choice(pool)
        if len(t) <= 7 and t not in vocab:
            vocab[t] = len(vocab)
            pool.append(t)
    merges = []
    for t in sorted(vocab, key=vocab.__getitem__):
        splits = [(t[:k], t[k:]) for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab]
        rng.shuffle(splits)
        merges += [p for p in splits if seed % 2 == 0 or rng.random() > 0.33]
    tok = Tokenizer(models.BPE(vocab, merges))
    split = pre_tokenizers.Split(Regex(PATTERN), behavior="isolated")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    return tok


def test_every_split_listed_in_any_order_gives_hf_ids() -> None:
    """The SAFE proof needs only M1 and listed pairs: on merge lists listing every split (ties between one
    token's splits in random order, parts with higher ids than the result) or some, tiktoken's ids are HF's."""
    answered = total = 0
    for seed in range(30):
        tok = _every_split(seed)
        fast = fast_bpe(tok)
        assert fast is not None
        rng = random.Random(seed)
        for _ in range(150):
            text = "".join(rng.choice("aaab b") for _ in range(rng.randint(1, 40)))
            ids = fast.encode(text)
            total += 1
            if ids is not None:
                answered += 1
                assert ids.tolist() == _hf(tok, text), (seed, text)
    assert answered >= 0.5 * total, (answered, total)


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


def test_non_ascii_text_where_the_engines_agree() -> None:
    """Characters both regex engines read alike go to tiktoken; under a normal form (NFC here) only text that
    form keeps: a combining accent, a Hangul vowel after its consonant, long s (folds to s) go to HF."""
    plain = _tiny([("a", "b")])
    fast = fast_bpe(plain)
    assert fast is not None
    for text in ("abé", "中文 ab", "e\u0301", "'\u017f"):
        ids = fast.encode(text)
        assert (ids is None) == (text == "'\u017f") and (ids is None or ids.tolist() == _hf(plain, text))
    nfc = _tiny([("a", "b")])
    nfc.normalizer = normalizers.NFC()
    fast = fast_bpe(nfc)
    assert fast is not None
    assert fast.encode("abé 中文").tolist() == _hf(nfc, "abé 中文")  # type: ignore[union-attr]
    for text in ("e\u0301", "\u1100\u1161", "a\u0308b", "\u212b"):  # each changes under NFC
        assert fast.encode(text) is None and fast.encode_many([text, "ab"])[0] is None


UNICODE_TEXT = st.text(
    st.one_of(
        st.characters(min_codepoint=0, max_codepoint=127),
        st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF, exclude_categories=("Cs",)),
        st.sampled_from("中文日本語한국어éèçñüß\u0301\u0308\u1161\u017f\u212a\u00a0\u3000\u2028😀👍🏽"),
    ),
    max_size=80,
)


def _tokenizers() -> list[BPETokenizer]:
    out = [BPETokenizer.load(None)]
    for name in ("qwen2.5", "llama3", "minimind"):
        if (SHARED / "tokenizers" / name).is_dir():
            out.append(BPETokenizer.load(SHARED / "tokenizers" / name))
    return out


@pytest.mark.parametrize("tok", _tokenizers(), ids=lambda t: Path(t.path).name)
def test_same_ids_as_hf_on_tricky_and_generated_text(tok: BPETokenizer) -> None:
    fast = tok.fast
    assert fast is not None, "expected the fast path for this byte-level tokenizer"

    @settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(ASCII_TEXT, UNICODE_TEXT, st.sampled_from(TRICKY)))
    def check(text: str) -> None:
        ids = fast.encode(text)
        if ids is not None:
            assert ids.tolist() == _hf(tok.tokenizer, text)

    check()


def test_which_shared_tokenizers_qualify() -> None:
    """Llama 3 lists every split of a token (M1 holds): it takes the fast path like Qwen2. Phi-3
    (SentencePiece-style) is not byte-level."""
    if not QWEN.is_dir():
        pytest.skip("../shared/tokenizers is absent")
    qualifies = {
        n: BPETokenizer.load(SHARED / "tokenizers" / n).fast is not None for n in ("qwen2.5", "llama3", "phi-3-mini")
    }
    assert qualifies == {"qwen2.5": True, "llama3": True, "phi-3-mini": False}


@pytest.mark.parametrize("name", ["qwen2.5", "llama3"])
def test_same_ids_as_hf_on_every_shared_dataset_text(name: str) -> None:
    """Every string field of the shared datasets (Chinese included): tiktoken takes all of them."""
    if not (SHARED / "tokenizers" / name).is_dir():
        pytest.skip("../shared/tokenizers is absent")
    tok = BPETokenizer.load(SHARED / "tokenizers" / name)
    texts: list[str] = []
    for path in sorted((SHARED / "data").rglob("*.json*")):
        raw = path.read_text("utf-8", errors="replace")
        items = (
            [json.loads(line) for line in raw.splitlines() if line.strip()]
            if path.suffix == ".jsonl"
            else json.loads(raw)
        )
        _strings(items, texts)
    texts = list(dict.fromkeys(texts))
    assert sum(not t.isascii() for t in texts) > 1000
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
