"""Which non-ASCII characters tiktoken's regex engine (fancy-regex) and HF's (Oniguruma) read alike.

The split patterns fast_bpe accepts (GPT-2's, Qwen2's, cl100k's, Llama 3's) look at a character only through
\\p{L}, \\p{N}, \\s, their complements, the literals ' \\r \\n and space, and the letters s t r e v m l d
(case-insensitively in all but GPT-2's). Both engines apply the same leftmost-first, greedy rules, so on a
text whose characters each engine puts in the same classes the two split the text alike. Here every
code point from U+0080 to U+2FFFF (the basic and supplementary planes, CJK included) is put to both engines,
one pattern per class, and kept where the answers agree; a character that either engine matches to one of
the letters case-insensitively (U+017F, long s, folds to s) is left out, as is everything above U+2FFFF and
the surrogates.

A tokenizer with a Unicode normal form (transformers gives Qwen2 NFC) must leave the text as it is: a
character is kept only where it cannot change under that form in any string of kept characters, which the
quick check of UAX #15 shows for a string all of whose characters are "Yes": assigned in Python's Unicode
database, not combining (class 0), its own normal form, and (for the composed forms) never the second
character of a canonical composition, Hangul vowels and trailing consonants included; HF's normalizer is
also asked about each character alone. Unicode's stability policy makes the answer the same in both
libraries' Unicode versions for characters both know; a character only the newer knows is inert in the older.
The table depends only on the libraries' versions and the form: computed once (about a second), cached.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from functools import lru_cache

import numpy as np

from sftprep.cache import cache_dir, package_version, store

TABLE_VERSION = "1"
LIMIT = 0x30000  # code points at and above go to HF
CLASSES = (r"\p{L}", r"\p{N}", r"\s")
FOLDED_LETTERS = r"(?i:s|t|r|e|v|m|l|d)"


@lru_cache(maxsize=4)
def agreeing(form: str | None = None) -> np.ndarray | None:
    """A bool table by code point (length LIMIT): True where both engines read the character alike and (with
    a normal form) it keeps any text of such characters as it is (always True for ASCII). None when tiktoken
    or tokenizers is missing."""
    tiktoken, tokenizers = package_version("tiktoken"), package_version("tokenizers")
    if tiktoken is None or tokenizers is None:
        return None
    versions = f"{tiktoken}\0{tokenizers}"
    what = f"{TABLE_VERSION}\0{LIMIT}\0{versions}\0{form}\0{unicodedata.unidata_version}"
    key = hashlib.sha256(what.encode()).hexdigest()
    path = cache_dir("regex_agree") / f"{key}.npy"
    try:
        table = np.load(path)
        if table.shape == (LIMIT,) and table.dtype == bool:
            return table
    except Exception:  # absent or unreadable: compute again
        pass
    table = compute(form)
    buf = io.BytesIO()
    np.save(buf, table)
    store(path, buf.getvalue())
    return table


def compute(form: str | None) -> np.ndarray:
    points = np.array([c for c in range(0x80, LIMIT) if not 0xD800 <= c <= 0xDFFF], dtype=np.uint32)
    text = points.tobytes().decode("utf-32-le")
    table = np.zeros(LIMIT, dtype=bool)
    table[:0x80] = True
    table[points] = True
    for pattern in CLASSES:
        table[list(_tiktoken_matches(pattern, text) ^ _hf_matches(pattern, text))] = False
    table[list(_tiktoken_matches(FOLDED_LETTERS, text) | _hf_matches(FOLDED_LETTERS, text))] = False
    if form is not None:
        table[list(_changeable(form, text))] = False
    return table


def _changeable(form: str, text: str) -> set[int]:
    """The characters of `text` that are not "Yes" for `form` (see above), or that HF's normalizer changes."""
    from tokenizers import normalizers

    seconds = {*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)}  # Hangul vowels and trailing consonants
    out = set()
    for c in text:
        decomposition = unicodedata.decomposition(c)
        if decomposition and not decomposition.startswith("<") and len(parts := decomposition.split()) == 2:
            seconds.add(int(parts[1], 16))
        if unicodedata.category(c) == "Cn" or unicodedata.combining(c) or unicodedata.normalize(form, c) != c:
            out.add(ord(c))
    if form in ("NFC", "NFKC"):
        out |= seconds
    hf = getattr(normalizers, form)().normalize_str("\n".join(text)).split("\n")
    out |= {ord(c) for c, n in zip(text, hf) if n != c}
    if len(hf) != len(text):  # a character HF changed into or out of a line break: take none (cannot happen)
        out |= {ord(c) for c in text}
    return out


def readable(text: str, table: np.ndarray) -> bool:
    """Whether every character of `text` is one both engines read alike."""
    if text.isascii():
        return True
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return bool(points.max() < LIMIT and table[points].all())


def _tiktoken_matches(pattern: str, text: str) -> set[int]:
    """The code points of `text` (distinct characters) tiktoken's engine matches: it drops unmatched text."""
    from tiktoken import _tiktoken

    core = _tiktoken.CoreBPE({bytes([b]): b for b in range(256)}, {}, pattern)
    return {ord(c) for c in bytes(core.encode_ordinary(text)).decode("utf-8")}


def _hf_matches(pattern: str, text: str) -> set[int]:
    """The code points of `text` HF's engine matches: what a Split that removes the matches leaves out."""
    from tokenizers import Regex, pre_tokenizers

    kept = "".join(p for p, _ in pre_tokenizers.Split(Regex(pattern), "removed").pre_tokenize_str(text))
    return {ord(c) for c in text} - {ord(c) for c in kept}
