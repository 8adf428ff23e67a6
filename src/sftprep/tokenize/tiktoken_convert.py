"""Convert a `.tiktoken` rank file to an equivalent HF `tokenizers` byte-level BPE Tokenizer.

A rank file lists every mergeable token (base64 bytes, space, rank). tiktoken encodes a pre-token by
repeatedly merging the adjacent pair whose concatenation has the lowest rank; a BPE model whose merge
list is ordered by the rank of the merged token reproduces that (the algorithm transformers'
TikTokenConverter uses). The pre-tokenizer regex and special tokens are not in the file: they are
picked from the vocabulary size (GPT-2/r50k, cl100k, o200k)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from sftprep.errors import ConfigError

ENDOFTEXT = "<|endoftext|>"

# Patterns in Oniguruma syntax (the one HF `tokenizers` uses). tiktoken's own cl100k pattern has
# `\p{N}{1,3}+` (possessive in Rust, a nested repeat in Oniguruma) and `$` (end of text in Rust, end of
# line in Oniguruma): written here as `\p{N}{1,3}` and `\z`, which match the same pieces.
R50K_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++\z|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


@dataclass(frozen=True)
class Encoding:
    """What a rank file does not say: its pre-tokenizer regex and special tokens (content -> id)."""

    name: str
    pattern: str
    special_tokens: dict[str, int]


# Keyed by the number of ranks in the file, for the files OpenAI publishes.
KNOWN_ENCODINGS: dict[int, Encoding] = {
    50256: Encoding("r50k_base", R50K_PATTERN, {ENDOFTEXT: 50256}),
    50257: Encoding("r50k_base", R50K_PATTERN, {ENDOFTEXT: 50256}),
    100256: Encoding(
        "cl100k_base",
        CL100K_PATTERN,
        {
            ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    199998: Encoding("o200k_base", O200K_PATTERN, {ENDOFTEXT: 199999, "<|endofprompt|>": 200018}),
}


def encoding_for_size(n_ranks: int) -> Encoding:
    """The known encoding of that size, else the pattern family of the nearest size, no specials."""
    known = KNOWN_ENCODINGS.get(n_ranks)
    if known is not None:
        return known
    if n_ranks < 75_000:
        return Encoding("r50k-like", R50K_PATTERN, {})
    if n_ranks < 150_000:
        return Encoding("cl100k-like", CL100K_PATTERN, {})
    return Encoding("o200k-like", O200K_PATTERN, {})


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse a `.tiktoken` file: one `base64 rank` pair per non-empty line."""
    ranks: dict[bytes, int] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise ConfigError(f"--tokenizer {path}: cannot read: {e}") from e
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
        except ValueError as e:
            raise ConfigError(f"{path}:{lineno}: not a `base64 rank` line: {line[:80]!r}") from e
    if not ranks:
        raise ConfigError(f"--tokenizer {path}: the rank file is empty")
    return ranks


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every (l, r) with l, r, l+r all ranked, ordered by rank[l+r] then (rank[l], rank[r])."""
    keyed: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            rl = ranks.get(left)
            if rl is None:
                continue
            rr = ranks.get(right)
            if rr is not None:
                keyed.append((rank, rl, rr, left, right))
    keyed.sort(key=lambda k: k[:3])
    return [(k[3], k[4]) for k in keyed]


def _tokenizer_json(ranks: dict[bytes, int], encoding: Encoding) -> str:
    """The tokenizer.json text, built directly (faster than the Python model constructors)."""
    b2u = bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {to_str(tok): rank for tok, rank in ranks.items()}
    merges = [[to_str(left), to_str(right)] for left, right in merges_from_ranks(ranks)]
    model = models.BPE(vocab={}, merges=[], ignore_merges=True)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(encoding.pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    data = json.loads(tok.to_str())
    data["model"]["vocab"] = vocab
    data["model"]["merges"] = merges
    data["added_tokens"] = [_added_token(content, tid) for content, tid in encoding.special_tokens.items()]
    return json.dumps(data, ensure_ascii=False)


def _added_token(content: str, tid: int) -> dict[str, object]:
    return {
        "id": tid,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def build_tokenizer(ranks: dict[bytes, int], encoding: Encoding) -> Tokenizer:
    """A byte-level BPE Tokenizer that encodes like tiktoken with these ranks and this encoding."""
    taken = set(ranks.values())
    for content, tid in encoding.special_tokens.items():
        if tid in taken and ranks.get(content.encode("utf-8")) != tid:
            raise ConfigError(f"special token {content!r} id {tid} collides with a ranked token")
    return Tokenizer.from_str(_tokenizer_json(ranks, encoding))


def load_tiktoken(path: Path) -> tuple[Tokenizer, dict[str, str]]:
    """Load a `.tiktoken` rank file as an HF Tokenizer plus its special-token roles ({"eos": ...})."""
    ranks = read_ranks(Path(path))
    encoding = encoding_for_size(len(ranks))
    tok = build_tokenizer(ranks, encoding)
    specials = {"eos": ENDOFTEXT} if ENDOFTEXT in encoding.special_tokens else {}
    return tok, specials
