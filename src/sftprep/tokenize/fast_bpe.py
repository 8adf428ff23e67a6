"""tiktoken's byte-level BPE as an exact stand-in for HF `tokenizers` (4x less CPU).

HF's BPE merges, in a pre-token, the adjacent pair that comes first in the merge list; tiktoken merges the
adjacent pair whose concatenation has the lowest rank (id), and returns a pre-token that is itself a token at
once. The two give the same ids for a text when (checked once per tokenizer, cached):
- the tokenizer is byte-level BPE: a known Split regex (GPT-2's, Qwen2's, cl100k's: both regex engines read
  them alike on ASCII and they match every character) then ByteLevel, or ByteLevel with its own regex; no
  dropout, no subword prefix, no normalizer but a Unicode normal form (ASCII is in every normal form), no
  truncation or padding, added tokens all normalized or all not (HF's one pass);
- merges are consistent with ranks: the result's id never decreases along the merge list (M1), so HF's first
  listed pair in a pre-token is one whose concatenation has the lowest id (tiktoken's choice) or ties with it;
- every token of the output is SAFE: tiktoken's own merge sequence for its bytes (lowest id first, leftmost
  on ties) ends in the token and uses only pairs in the merge list (Llama 3 and GPT-2 list every split of a
  token, also splits tiktoken never makes).
Why: tiktoken's answer for a pre-token is what its merges reach (for a pre-token that is a token, SAFE says
so). In a text, the parts inside a stretch of bytes that no merge has crossed evolve as tiktoken's merges of
those bytes alone (each merge inside is the lowest-ranked, leftmost pair inside), so every merge tiktoken
makes is a step of some output token's sequence: a listed pair. Before each merge both engines hold the same
parts (induction); tiktoken merges the leftmost pair of lowest rank r, forming S; HF merges the first listed
adjacent pair, which forms a token of rank <= r (M1) and so S (no formable pair ranks lower). Two pairs
present at once that both form S are the same split: each stretch holds S's bytes and is a state of the one
merge sequence of those bytes, which has a single state of two parts. So HF's order among them is by place,
leftmost first, as tiktoken's.
The text must be ASCII (both regex engines then agree on letters, digits and whitespace), or made of
characters both engines read alike and the tokenizer's normal form keeps (regex_agree.py), and the added
tokens none a prefix of another (tiktoken finds them leftmost-first in no set order, HF leftmost-longest).
Otherwise, or when an output token is not SAFE, `encode` returns None and HF encodes the text.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from functools import lru_cache
from itertools import accumulate
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from sftprep.cache import cache_dir, package_version, store
from sftprep.tokenize.regex_agree import agreeing, readable
from sftprep.tokenize.tiktoken_convert import bytes_to_unicode

_UNICODE_FORMS = ("NFC", "NFD", "NFKC", "NFKD")
_GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_CL100K_LIKE = (  # Qwen2's with \p{N}, cl100k's and Llama 3's with \p{N}{1,3}
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{DIGITS}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Split patterns both regex engines (Oniguruma in HF, fancy-regex in tiktoken) read alike on ASCII and that
# match every character (tiktoken drops text no match covers; HF keeps it).
KNOWN_PATTERNS = frozenset(
    {_GPT2_PATTERN, _CL100K_LIKE.replace("{DIGITS}", ""), _CL100K_LIKE.replace("{DIGITS}", "{1,3}")}
)
# Patterns under which a cut after "\n" and before a character that is not whitespace is a pre-token boundary
# of the joint text and leaves both sides' pre-tokens as they are alone (FastBPE.splits_after_newline).
_NEWLINE_CUT_PATTERNS = frozenset({_CL100K_LIKE.replace("{DIGITS}", ""), _CL100K_LIKE.replace("{DIGITS}", "{1,3}")})
ANALYSIS_VERSION = "4"  # part of the cache key: bump when the checks change


# Texts encoded in one call are joined by this string, a special token of the CoreBPE only: tiktoken splits the
# text at special tokens first and runs the pattern on each part alone, so every part is encoded as on its own.
SEPARATOR = "\x00\x1dsftprep\x1d\x00"


class FastBPE:
    def __init__(
        self,
        core: Any,
        safe: np.ndarray,
        specials: set[str],
        sep_id: int = -1,
        table: np.ndarray | None = None,
        pattern: str = "",
    ) -> None:
        self._core = core
        self._safe = safe
        self._specials = specials
        self._sep_id = sep_id  # the id of SEPARATOR in `core` (-1: no batch encode)
        self._table = table  # regex_agree's table where non-ASCII text may be taken, else None
        self._lengths: dict[int, int] = {}
        self._newline_cuts = pattern in _NEWLINE_CUT_PATTERNS

    def splits_after_newline(self, text: str, cut: int) -> bool:
        r"""Whether encoding text[:cut] and text[cut:] apart gives the ids of encoding them together, for a cut
        right after "\n" and before a character that is not whitespace, under Qwen2's / cl100k's / Llama 3's
        split pattern. Every alternative of it that can hold "\n" is `\s*[\r\n]+`, ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        or a whitespace one: none can take the next character (not whitespace), the newline alternative comes
        before `\s+(?!\S)` (the one lookahead) and matches wherever a whitespace run ends in "\n", and letters,
        digits and contractions hold no "\n". So a pre-token ends at the cut in both texts, each side's
        pre-tokens are its own, and BPE never merges across pre-tokens. The next character must be one both
        regex engines read alike (`takes`); Python's isspace() covers Unicode's White_Space (the engines' \s)."""
        if not self._newline_cuts or not 0 < cut < len(text) or text[cut - 1] != "\n":
            return False
        nxt = text[cut]
        return not nxt.isspace() and self.takes(nxt)

    def takes(self, text: str) -> bool:
        """Whether both regex engines split `text` alike (ASCII, or characters regex_agree found read alike)."""
        if text.isascii():
            return True
        return self._table is not None and readable(text, self._table)

    def encode(self, text: str) -> np.ndarray | None:
        """The ids HF would give (int32), or None when this text must go to HF."""
        if not self.takes(text):
            return None
        ids = np.frombuffer(self._core.encode_to_tiktoken_buffer(text, self._specials), dtype=np.uint32)
        if len(ids) and not self._safe[ids].all():
            return None
        return ids.astype(np.int32)

    def encode_many_with_offsets(self, texts: list[str]) -> list[tuple[np.ndarray, list[tuple[int, int]]] | None]:
        """`encode_many` and each token's character span, as HF reports it (a token holding part of a
        character's bytes spans that whole character)."""
        out: list[tuple[np.ndarray, list[tuple[int, int]]] | None] = []
        for text, ids in zip(texts, self.encode_many(texts)):
            if ids is None:
                out.append(None)
                continue
            ends = list(accumulate(map(self._token_length, ids.tolist())))
            starts = [0, *ends[:-1]]
            if not text.isascii():
                char_at = [k for k, c in enumerate(text) for _ in range(len(c.encode("utf-8")))]
                starts, ends = [char_at[a] for a in starts], [char_at[b - 1] + 1 for b in ends]
            out.append((ids, list(zip(starts, ends))))
        return out

    def _token_length(self, token: int) -> int:
        """The byte length of a token (looked up once per token)."""
        n = self._lengths.get(token)
        if n is None:
            n = self._lengths[token] = len(self._core.decode_single_token_bytes(token))
        return n

    def encode_many(self, texts: list[str]) -> list[np.ndarray | None]:
        """`encode` of each text, those it takes in one call into tiktoken."""
        if self._sep_id < 0 or len(texts) < 2:
            return [self.encode(t) for t in texts]
        joined = SEPARATOR.join(texts)  # ASCII: takes() of it is takes() of every text
        if not self.takes(joined) or any(SEPARATOR in t for t in texts):
            keep = [k for k, t in enumerate(texts) if self.takes(t) and SEPARATOR not in t]
            out: list[np.ndarray | None] = [None] * len(texts)
            for k, ids in zip(keep, self.encode_many([texts[k] for k in keep])):
                out[k] = ids
            return out
        allowed = self._specials | {SEPARATOR}
        ids = np.frombuffer(self._core.encode_to_tiktoken_buffer(joined, allowed), dtype=np.uint32)
        is_sep = ids == self._sep_id
        seps = np.flatnonzero(is_sep)
        if len(seps) != len(texts) - 1:  # cannot happen for texts without SEPARATOR: encode them one by one
            return [self.encode(t) for t in texts]
        part = np.cumsum(is_sep)  # the text each id belongs to
        safe = self._safe[np.where(is_sep, 0, ids)] | is_sep
        bad = np.zeros(len(texts), dtype=bool)
        bad[part[~safe]] = True
        bounds = np.concatenate(([-1], seps, [len(ids)]))
        out32 = ids.astype(np.int32)
        return [None if bad[k] else out32[bounds[k] + 1 : bounds[k + 1]] for k in range(len(texts))]


def fast_bpe(tok: Tokenizer | Callable[[], Tokenizer], identity: str | None = None) -> FastBPE | None:
    """A FastBPE for `tok`, or None when the conditions above do not hold (or tiktoken is missing). What the
    checks find is cached on disk by the tokenizer's serialization (a few seconds the first time), or by
    `identity`, a string that determines the tokenizer (its files' hash and how they were loaded), which
    spares serializing it (0.1 s for a 150k vocabulary) and, with `tok` a function that loads it, loading it."""
    try:
        from tiktoken import _tiktoken
    except ImportError:
        return None
    get = tok if callable(tok) else lambda: tok
    raw = None if identity else get().to_str()
    what = f"identity:{identity}" if identity else raw
    key = hashlib.sha256(f"{ANALYSIS_VERSION}\0{package_version('tiktoken')}\0{what}".encode()).hexdigest()
    path = cache_dir("fast_bpe") / f"{key}.pickle"
    try:
        with open(path, "rb") as f:
            found = pickle.load(f)
        if found is not None and len(found) != 5:
            raise ValueError("written by another layout")
    except Exception:  # absent, unreadable or from another layout: analyse again
        found = _analyse(json.loads(raw or get().to_str()))
        store(path, pickle.dumps(found, protocol=pickle.HIGHEST_PROTOCOL))
    if found is None:
        return None
    pattern, ranks, added, safe, form = found
    sep_id = max([*ranks.values(), *added.values()], default=0) + 1
    table = agreeing(form or None)
    try:
        core = _tiktoken.CoreBPE(ranks, {**added, SEPARATOR: sep_id}, pattern)
        return FastBPE(core, safe, set(added), sep_id, table, pattern)
    except Exception:  # tiktoken refuses something: HF encodes everything
        return None


def _analyse(cfg: dict[str, Any]) -> tuple[str, dict[bytes, int], dict[str, int], np.ndarray, str] | None:
    pattern = _byte_level_pattern(cfg)
    if pattern is None or cfg.get("truncation") or cfg.get("padding"):
        return None
    tokens = cfg.get("added_tokens", [])
    if len({bool(t.get("normalized")) for t in tokens}) > 1:
        return None  # HF matches unnormalized added tokens first, then normalized ones: two passes
    added = {t["content"]: t["id"] for t in tokens}
    if any(a != b and b.startswith(a) for a in added for b in added):
        return None
    ranks = _ranks(cfg["model"]["vocab"], added)
    safe = _compute_safe(cfg["model"]) if ranks else None
    if ranks is None or safe is None:
        return None
    safe = np.concatenate([safe, np.zeros(max(0, max(added.values(), default=0) + 1 - len(safe)), dtype=bool)])
    safe[list(added.values())] = True  # found as whole strings, as HF's added vocabulary finds them
    return pattern, ranks, added, safe, (cfg.get("normalizer") or {}).get("type", "")  # "" or a normal form


def _byte_level_pattern(cfg: dict[str, Any]) -> str | None:
    model = cfg.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout") or model.get("byte_fallback"):
        return None
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return None
    norm = cfg.get("normalizer")
    if norm is not None and norm.get("type") not in _UNICODE_FORMS:
        return None
    pre = cfg.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return _GPT2_PATTERN  # the pattern HF's ByteLevel applies itself
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, byte_level = steps
    ok_split = split.get("type") == "Split" and split.get("behavior") == "Isolated" and not split.get("invert")
    regex = (split.get("pattern") or {}).get("Regex")
    ok_bytes = byte_level.get("type") == "ByteLevel" and not byte_level.get("use_regex", True)
    if not (ok_split and regex and ok_bytes and not byte_level.get("add_prefix_space")):
        return None
    return regex if regex in KNOWN_PATTERNS else None


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The byte each ByteLevel character stands for (GPT-2's bytes_to_unicode, inverted)."""
    return {c: b for b, c in bytes_to_unicode().items()}


def _ranks(vocab: dict[str, int], added: dict[str, int]) -> dict[bytes, int] | None:
    """tiktoken's mergeable ranks: each vocabulary token's bytes and id (added tokens are its specials)."""
    dec = _byte_decoder()
    ranks: dict[bytes, int] = {}
    for token, i in vocab.items():
        if token in added:
            continue
        try:
            ranks[bytes(dec[c] for c in token)] = i
        except KeyError:
            return None  # not a byte-level vocabulary
    if len(set(ranks.values())) != len(ranks) or any(bytes([b]) not in ranks for b in range(256)):
        return None
    return ranks


def _compute_safe(model: dict[str, Any]) -> np.ndarray | None:
    vocab: dict[str, int] = model["vocab"]
    listed: set[tuple[str, str]] = set()
    last = -1
    for merge in model["merges"]:
        a, b = merge if isinstance(merge, list) else merge.split(" ", 1)
        r = vocab.get(a + b)
        if r is None or r < last:
            return None  # M1 does not hold, or a merge forms no token
        last = r
        listed.add((a, b))
    safe = np.zeros(max(vocab.values()) + 1, dtype=bool)
    for token, i in vocab.items():
        history = _isolated_merges(token, vocab)
        safe[i] = history is not None and all(pair in listed for pair in history)
    return safe


def _isolated_merges(token: str, vocab: dict[str, int]) -> list[tuple[str, str]] | None:
    """The pairs tiktoken merges, lowest rank first (leftmost on ties), to build `token` from its characters
    (ByteLevel characters stand for bytes); None when that does not end in `token` itself."""
    parts = list(token)
    history = []
    while len(parts) > 1:
        best, at = -1, -1
        for k in range(len(parts) - 1):
            r = vocab.get(parts[k] + parts[k + 1], -1)
            if r >= 0 and (best < 0 or r < best):
                best, at = r, k
        if at < 0:
            return None
        history.append((parts[at], parts[at + 1]))
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return history if parts == [token] else None
