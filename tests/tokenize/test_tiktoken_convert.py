"""`.tiktoken` rank file -> HF Tokenizer: exact GPT-2 ids, specials, round trips, tiktoken parity."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
from conftest import SHARED_DIR
from tokenizers import Tokenizer

from sftprep.errors import ConfigError
from sftprep.tokenize.tiktoken_convert import (
    CL100K_PATTERN,
    ENDOFTEXT,
    O200K_PATTERN,
    R50K_PATTERN,
    Encoding,
    build_tokenizer,
    bytes_to_unicode,
    encoding_for_size,
    load_tiktoken,
    merges_from_ranks,
    read_ranks,
)
from sftprep.tokenize.tokenizer import BPETokenizer

SHARED = SHARED_DIR
GPT2_TIKTOKEN = SHARED / "tokenizers" / "gpt2-tiktoken" / "gpt2.tiktoken"

needs_gpt2 = pytest.mark.skipif(not GPT2_TIKTOKEN.is_file(), reason=f"{GPT2_TIKTOKEN} is absent")

# Ids from tiktoken itself (tiktoken.Encoding over this rank file with the r50k pattern).
GPT2_IDS = {
    "Hello world": [15496, 995],
    " the": [262],
    "hello": [31373],
    "I'm here, aren't you?": [40, 1101, 994, 11, 3588, 470, 345, 30],
    "  indented\n\n\tcode()": [220, 773, 4714, 628, 197, 8189, 3419],
    "日本語": [33768, 98, 17312, 105, 45739, 252],
    "😀": [47249, 222],
    "2024-01-01: 3.14159": [1238, 1731, 12, 486, 12, 486, 25, 513, 13, 1415, 19707],
}
ROUND_TRIP = [
    "",
    " ",
    "   \n\n\t\t  \r\n \u3000\xa0 ",
    "héllo wörld, ça va? Straße",
    "日本語のテキストと中文和한국어",
    "emoji 😀🎉👩‍👩‍👧 flags 🇫🇷 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "combining e\u0301 zero\u200bwidth \ufeffbom",
    "def f(x):\n    return x ** 2  # trailing   \n\n\n",
    "<|endoftext|> is plain text here",
]
# tiktoken's own patterns (fancy-regex syntax), to compare pre-token splitting with ours.
TIKTOKEN_CL100K = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


@pytest.fixture(scope="module")
def gpt2() -> tuple[Tokenizer, dict[str, str]]:
    if not GPT2_TIKTOKEN.is_file():
        pytest.skip(f"{GPT2_TIKTOKEN} is absent")
    return load_tiktoken(GPT2_TIKTOKEN)


def write_ranks(path: Path, tokens: list[bytes]) -> Path:
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(tokens)))
    return path


def tiny_ranks() -> list[bytes]:
    return [bytes([b]) for b in range(256)] + [b"ab", b"abc", b"bc", b" x"]


# -- synthetic rank files (no shared data needed) ----------------------------------------------------
def test_bytes_to_unicode_is_gpt2_map() -> None:
    m = bytes_to_unicode()
    assert len(m) == 256 and len(set(m.values())) == 256
    assert m[ord("A")] == "A" and m[ord(" ")] == "Ġ" and m[ord("\n")] == "Ċ" and m[0] == "Ā"


def test_read_ranks_and_errors(tmp_path: Path) -> None:
    ranks = read_ranks(write_ranks(tmp_path / "t.tiktoken", tiny_ranks()))
    assert len(ranks) == 260 and ranks[b"abc"] == 257 and ranks[b"\x00"] == 0
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("YWI= 0\nnot-base64!! 1\n")
    with pytest.raises(ConfigError, match=":2:"):
        read_ranks(bad)
    empty = tmp_path / "empty.tiktoken"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_ranks(empty)


def test_merges_ordered_by_merged_token_rank() -> None:
    ranks = {t: i for i, t in enumerate(tiny_ranks())}
    merges = merges_from_ranks(ranks)
    # "abc" (257) has two splits: a+bc (rank[a]=97) sorts before ab+c (rank[ab]=256).
    assert merges == [(b"a", b"b"), (b"a", b"bc"), (b"ab", b"c"), (b"b", b"c"), (b" ", b"x")]


def test_tiny_file_encodes_like_tiktoken(tmp_path: Path) -> None:
    tok, specials = load_tiktoken(write_ranks(tmp_path / "t.tiktoken", tiny_ranks()))
    assert specials == {}  # unknown size: no special tokens are guessed
    assert tok.get_vocab_size() == 260
    # "xabcx": pairs ab(256) < bc(258) -> [x, ab, c, x] -> abc(257) -> [x, abc, x]
    assert tok.encode("xabcx").ids == [120, 257, 120]
    assert tok.encode("abc x").ids == [257, 259]
    assert tok.decode(tok.encode("abc x é😀").ids) == "abc x é😀"


def test_encoding_for_size_picks_pattern_family() -> None:
    assert encoding_for_size(50256).pattern == R50K_PATTERN
    assert encoding_for_size(50256).special_tokens == {ENDOFTEXT: 50256}
    assert encoding_for_size(100256).special_tokens[ENDOFTEXT] == 100257
    assert encoding_for_size(128000).pattern == CL100K_PATTERN
    assert encoding_for_size(128000).special_tokens == {}
    assert encoding_for_size(199998).pattern == O200K_PATTERN
    assert encoding_for_size(1000).pattern == R50K_PATTERN


def test_special_id_collision_is_rejected() -> None:
    ranks = {t: i for i, t in enumerate(tiny_ranks())}
    with pytest.raises(ConfigError, match="collides"):
        build_tokenizer(ranks, Encoding("x", R50K_PATTERN, {"<|eot|>": 257}))


# -- the real GPT-2 file -----------------------------------------------------------------------------
@needs_gpt2
@pytest.mark.shared
@pytest.mark.parametrize(("text", "ids"), GPT2_IDS.items())
def test_gpt2_known_ids(gpt2: tuple[Tokenizer, dict[str, str]], text: str, ids: list[int]) -> None:
    tok, _ = gpt2
    assert tok.encode(text, add_special_tokens=False).ids == ids


@needs_gpt2
@pytest.mark.shared
def test_gpt2_vocab_and_specials(gpt2: tuple[Tokenizer, dict[str, str]]) -> None:
    tok, specials = gpt2
    assert specials == {"eos": ENDOFTEXT}
    assert tok.get_vocab_size() == 50257
    assert tok.token_to_id(ENDOFTEXT) == 50256 and tok.id_to_token(50256) == ENDOFTEXT
    assert tok.id_to_token(262) == "Ġthe"
    assert tok.encode(ENDOFTEXT).ids == [50256]
    assert tok.encode("a<|endoftext|>b").ids == [64, 50256, 65]
    assert list(tok.get_added_tokens_decoder()) == [50256]
    assert tok.get_added_tokens_decoder()[50256].special


@needs_gpt2
@pytest.mark.shared
def test_gpt2_special_as_plain_text(gpt2: tuple[Tokenizer, dict[str, str]]) -> None:
    plain = Tokenizer.from_str(gpt2[0].to_str())
    plain.encode_special_tokens = True
    assert plain.encode(ENDOFTEXT).ids == [27, 91, 437, 1659, 5239, 91, 29]


@needs_gpt2
@pytest.mark.shared
@pytest.mark.parametrize("text", ROUND_TRIP)
def test_gpt2_round_trip(gpt2: tuple[Tokenizer, dict[str, str]], text: str) -> None:
    tok, _ = gpt2
    enc = tok.encode(text, add_special_tokens=False)
    assert tok.decode(enc.ids, skip_special_tokens=False) == text
    for (start, end), tid in zip(enc.offsets, enc.ids):
        assert 0 <= start <= end <= len(text), tid


@needs_gpt2
@pytest.mark.shared
def test_bpe_tokenizer_loads_tiktoken_file() -> None:
    bt = BPETokenizer.load(GPT2_TIKTOKEN)
    assert bt.eos_token == ENDOFTEXT and bt.pad_id == 50256 and bt.vocab_size == 50257
    assert bt.encode("Hello world") == [15496, 995]
    assert bt.special_ids == frozenset({50256})
    bt_dir = BPETokenizer.load(GPT2_TIKTOKEN.parent)
    assert bt_dir.encode(" the") == [262]


# -- parity with tiktoken itself (when it is installed) ----------------------------------------------
def parity_corpus(n: int = 4000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pieces = list(" \t\n\r\n  \u3000\xa0'sdtmlvreSDTLV0123456789abXY!?.,;:/-_()[]\"")
    pieces += ["é", "ß", "日本", "語", "한", "😀", "👩\u200d👧", "𝔘", "\u0301", "\u200b", "'ll", "'S", " the"]
    pieces += ["Hello", "    ", "\n\n"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(n)]
    return [*texts, *ROUND_TRIP, *GPT2_IDS, Path(__file__).read_text(encoding="utf-8")]


@needs_gpt2
@pytest.mark.shared
@pytest.mark.parametrize("family", ["r50k", "cl100k", "o200k"])
def test_parity_with_tiktoken(family: str) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken_ext.openai_public import r50k_pat_str

    ours = {"r50k": R50K_PATTERN, "cl100k": CL100K_PATTERN, "o200k": O200K_PATTERN}[family]
    theirs = {"r50k": r50k_pat_str, "cl100k": TIKTOKEN_CL100K, "o200k": O200K_PATTERN}[family]
    ranks = read_ranks(GPT2_TIKTOKEN)
    specials = {ENDOFTEXT: 50256}
    ref = tiktoken.Encoding("ref", pat_str=theirs, mergeable_ranks=ranks, special_tokens=specials)
    tok = build_tokenizer(ranks, Encoding("ours", ours, specials))
    texts = parity_corpus()
    got = [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
    want = [ref.encode(t, allowed_special="all") for t in texts]
    mismatched = [t for t, g, w in zip(texts, got, want) if g != w]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} texts differ, e.g. {mismatched[0]!r}"
