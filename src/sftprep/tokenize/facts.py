"""What preparation needs to know of a tokenizer besides its encodings: its added tokens, whether it has a
normalizer, whether the start of the input is special, its vocabulary size. Read once from the loaded HF
tokenizer and cached on disk by the tokenizer's identity, so a run whose texts all take the tiktoken fast path
never parses tokenizer.json (0.3-0.4 s for a 150k vocabulary, holding the GIL)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from sftprep.cache import cache_dir, store

FACTS_VERSION = "1"  # part of the cache key: bump when the fields or how they are read change


@dataclass(frozen=True)
class AddedToken:
    id: int
    content: str
    special: bool
    lstrip: bool
    rstrip: bool
    single_word: bool
    normalized: bool


@dataclass(frozen=True)
class TokenizerFacts:
    added: tuple[AddedToken, ...]  # by id
    has_normalizer: bool
    start_sensitive: bool
    vocab_size: int  # with added tokens

    @classmethod
    def read(cls, tok: Tokenizer) -> TokenizerFacts:
        added = tuple(
            AddedToken(i, t.content, t.special, t.lstrip, t.rstrip, t.single_word, t.normalized)
            for i, t in sorted(tok.get_added_tokens_decoder().items())
        )
        return cls(added, tok.normalizer is not None, _start_sensitive(tok), tok.get_vocab_size(with_added_tokens=True))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TokenizerFacts:
        d = json.loads(text)
        added = tuple(AddedToken(**t) for t in d["added"])
        return cls(added, bool(d["has_normalizer"]), bool(d["start_sensitive"]), int(d["vocab_size"]))


def facts_path(identity: str) -> Path:
    key = hashlib.sha256(f"{FACTS_VERSION}\0{identity}".encode()).hexdigest()
    return cache_dir("tokenizer_facts") / f"{key}.json"


def cached_facts(identity: str) -> TokenizerFacts | None:
    """The facts stored for this identity, or None (absent, unreadable, or of another layout)."""
    try:
        return TokenizerFacts.from_json(facts_path(identity).read_text(encoding="utf-8"))
    except Exception:
        return None


def store_facts(identity: str, facts: TokenizerFacts) -> None:
    store(facts_path(identity), facts.to_json().encode("utf-8"))


def _start_sensitive(tok: Tokenizer) -> bool:
    """True when text is encoded differently at the start of the input than after a special token
    (SentencePiece-style `prepend`: Metaspace with prepend_scheme first/always, or a Prepend normalizer)."""
    parts = (tok.normalizer, tok.pre_tokenizer)  # not to_str(): it holds the vocab
    configs = [c for p in parts if p is not None for c in _components(json.loads(p.__getstate__()))]
    return any(
        c.get("type") == "Prepend" or (c.get("type") == "Metaspace" and c.get("prepend_scheme") != "never")
        for c in configs
    )


def _components(cfg: Any) -> Iterator[dict[str, Any]]:
    """A normalizer or pre-tokenizer configuration and, for a Sequence, each of its members (recursively)."""
    if isinstance(cfg, dict):
        yield cfg
        for key in ("normalizers", "pretokenizers"):
            for member in cfg.get(key) or ():
                yield from _components(member)
