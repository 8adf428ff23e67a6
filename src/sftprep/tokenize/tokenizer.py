"""BPETokenizer: HF `tokenizers` (Rust) with offsets, loaded from a tokenizer.json, a HF tokenizer
directory, a `.tiktoken` rank file, or the embedded default."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from tokenizers import Encoding, Tokenizer

from sftprep.cache import package_version, store
from sftprep.errors import ConfigError
from sftprep.tokenize.facts import TokenizerFacts, cached_facts, store_facts
from sftprep.tokenize.fast_bpe import FastBPE, fast_bpe
from sftprep.tokenize.literal_segments import LiteralCache
from sftprep.tokenize.tokenizer_files import (
    backend_cache_path,
    cached_backend,
    sha256_file,
    template_beside,
)

DEFAULT_TOKENIZER = "default"


def default_tokenizer_dir() -> Path:
    return Path(str(resources.files("sftprep").joinpath("data", "default_tokenizer")))


@dataclass
class BPETokenizer:
    backend: Tokenizer | None  # None until first needed: parsed from `backend_file` (see `tokenizer`)
    path: str
    sha256: str
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    chat_template: str | list[Any] | None = None
    default_template: str | None = None  # a built-in template name recorded by `sftprep tokenizer train`
    config: dict[str, Any] = field(default_factory=dict)
    loader: str = "tokenizers"  # "transformers" when its (possibly reconfigured) backend encodes
    backend_file: str | None = None  # the serialized backend, for a tokenizer loaded from files

    def __post_init__(self) -> None:
        if self.backend is not None:
            drop_identities(self.backend)

    @property
    def tokenizer(self) -> Tokenizer:
        """The HF tokenizer. Parsed on first use: a run whose texts all take the tiktoken fast path needs only
        the facts (cached by the files' identity) and never parses tokenizer.json."""
        if self.backend is None:
            assert self.backend_file is not None, "a BPETokenizer needs a backend or a file to load it from"
            self.backend = drop_identities(_parse(Path(self.backend_file)))
        return self.backend

    @tokenizer.setter
    def tokenizer(self, value: Tokenizer) -> None:
        self.backend = drop_identities(value)
        self.__dict__.pop("facts", None)

    @cached_property
    def facts(self) -> TokenizerFacts:
        """Added tokens, normalizer, start sensitivity, vocabulary size: from the cache when the backend is
        not parsed yet, else read from it (and cached for a tokenizer loaded from files)."""
        if self.backend is None and (known := cached_facts(self._identity())) is not None:
            return known
        found = TokenizerFacts.read(self.tokenizer)
        if self.backend_file is not None:
            store_facts(self._identity(), found)
        return found

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> BPETokenizer:
        if path is None or str(path) == DEFAULT_TOKENIZER:
            return cls._load_dir(default_tokenizer_dir())
        p = Path(path)
        if not p.exists():
            raise ConfigError(
                f"--tokenizer {path}: no such file or directory; give a tokenizer.json, "
                "a tokenizer directory, a .tiktoken file, or omit it for the embedded default"
            )
        if p.is_dir():
            return cls._load_dir(p)
        if p.suffix == ".tiktoken":
            from sftprep.tokenize.tiktoken_convert import load_tiktoken

            tok, specials = load_tiktoken(p)
            return cls(tok, str(p), sha256_file(p), eos_token=specials.get("eos"), pad_token=specials.get("eos"))
        config_path = p.with_name("tokenizer_config.json")
        tok = cls._build(p, config_path if config_path.is_file() else None)
        _ = tok.facts
        return tok

    @classmethod
    def _load_dir(cls, d: Path) -> BPETokenizer:
        tj = d / "tokenizer.json"
        if tj.is_file():
            cfg = d / "tokenizer_config.json"
            configured = cfg.is_file() and d != default_tokenizer_dir()
            cached = cached_backend(d) if configured else None
            tok = cls._build(tj, cfg if cfg.is_file() else None, cached)
            if tok.chat_template is None:
                tok.chat_template = template_beside(d)
            if configured and cached is None:
                tok._use_transformers_backend(d)
            _ = tok.facts  # a tokenizer never parsed before is parsed now: a bad file fails here
            return tok
        tiktoken_files = sorted(d.glob("*.tiktoken"))
        if tiktoken_files:
            return cls.load(tiktoken_files[0])
        raise ConfigError(
            f"--tokenizer {d}: the directory has no tokenizer.json or *.tiktoken file "
            "(SentencePiece .model files are not supported: convert with transformers first)"
        )

    @classmethod
    def _build(cls, tokenizer_json: Path, config_path: Path | None, cached: Path | None = None) -> BPETokenizer:
        """`cached`: transformers' configured backend for this file, already serialized (parsed instead, when
        parsing is needed)."""
        cfg: dict[str, Any] = {}
        if config_path is not None:
            try:
                cfg = json.loads(config_path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ConfigError(f"{config_path}: invalid JSON: {e}") from e
        return cls(
            None,
            str(tokenizer_json.parent if tokenizer_json.name == "tokenizer.json" else tokenizer_json),
            sha256_file(tokenizer_json),
            bos_token=_token_str(cfg.get("bos_token")),
            eos_token=_token_str(cfg.get("eos_token")),
            pad_token=_token_str(cfg.get("pad_token")),
            chat_template=cfg.get("chat_template"),
            default_template=cfg.get("sftprep_template"),
            config=cfg,
            loader="transformers" if cached is not None else "tokenizers",
            backend_file=str(cached or tokenizer_json),
        )

    def _use_transformers_backend(self, d: Path) -> None:
        """Encode exactly as transformers does: it may reconfigure tokenizer.json from tokenizer_config.json
        (e.g. Llama/Phi-3 `legacy: false` drops the prefix space after special tokens). Needs the `hf` extra;
        without it the raw tokenizer.json is used (`loader` in the manifest says which). The configured
        backend is cached by the files' hash and the transformers version (loading transformers is slow)."""
        version = package_version("transformers")
        if version is None:
            return
        cached = backend_cache_path(d, version)
        try:
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(str(d)).backend_tokenizer
        except Exception:  # transformers cannot load it: the raw tokenizer.json stays in use
            return
        if cached is not None:
            store(cached, backend.to_str().encode("utf-8"))
        self.tokenizer = drop_identities(backend)
        self.loader = "transformers"

    @cached_property
    def special_tokens_map(self) -> tuple[tuple[str, str], ...]:
        """The named special tokens a chat template sees, as transformers passes them (`tokenizer.
        special_tokens_map`): every `*_token` of tokenizer_config.json that is set; bos/eos/pad otherwise."""
        named = {}
        for key, value in self.config.items():
            if not key.endswith("_token") or key.startswith("add_"):
                continue
            text = value.get("content") if isinstance(value, dict) else value
            if isinstance(text, str):
                named[key] = text
        for key, text in (("bos_token", self.bos_token), ("eos_token", self.eos_token), ("pad_token", self.pad_token)):
            if text and key not in named:
                named[key] = text
        return tuple(named.items())

    # -- vocabulary ------------------------------------------------------------------------------
    @property
    def added_tokens(self) -> tuple[str, ...]:
        """Strings the tokenizer parses atomically (special or not)."""
        return tuple(t.content for t in self.facts.added)

    @property
    def start_sensitive(self) -> bool:
        """True when text is encoded differently at the start of the input than after a special token
        (SentencePiece-style `prepend`), so a piece must be encoded with its left context to get the tokens a
        joint encoding has."""
        return self.facts.start_sensitive

    @cached_property
    def splits_at_added(self) -> bool:
        """True when the text on either side of an added token is encoded independently of it: no added
        token strips whitespace or must be whole-word, none is matched on normalized text, and the start
        of the input is not special (see literal_segments)."""
        normalizer = self.facts.has_normalizer
        added = self.facts.added
        one_pass = len({t.normalized for t in added}) <= 1  # else HF matches unnormalized ones first
        return (
            one_pass
            and not self.start_sensitive
            and all(not (t.lstrip or t.rstrip or t.single_word or (t.normalized and normalizer)) for t in added)
        )

    @cached_property
    def fast(self) -> FastBPE | None:
        """tiktoken's BPE where it gives exactly this tokenizer's ids (ASCII text, see fast_bpe.py)."""
        if not self.splits_at_added or self.start_sensitive:
            return None
        return fast_bpe(lambda: self.tokenizer, self._identity())

    def _identity(self) -> str:
        """What determines `self.tokenizer`: its files' hash, its configuration, how it was loaded (transformers'
        version where transformers configured it) and this module (which edits the loaded tokenizer)."""
        version = ""
        if self.loader == "transformers":
            version = package_version("transformers") or "?"
        parts = [self.sha256, self.loader, version, json.dumps(self.config, sort_keys=True, default=str)]
        parts.append(hashlib.sha256(Path(__file__).read_bytes()).hexdigest())
        return "\0".join(parts)

    @cached_property
    def literal_cache(self) -> LiteralCache | None:
        """Ids of template stretches between added tokens (None when the tokenizer does not allow it)."""
        return LiteralCache(self._added_re) if self._added_re is not None and self.splits_at_added else None

    @cached_property
    def special_ids(self) -> frozenset[int]:
        return frozenset(t.id for t in self.facts.added)

    @property
    def special_pattern(self) -> re.Pattern[str] | None:
        return self._special_re

    @cached_property
    def _special_re(self) -> re.Pattern[str] | None:
        specials = [t.content for t in self.facts.added if t.special]
        return _alternation(specials)

    @cached_property
    def _added_re(self) -> re.Pattern[str] | None:
        return _alternation(list(self.added_tokens))

    def find_special(self, text: str) -> list[tuple[int, int]]:
        """Where `text` spells a special token (user text there is encoded as plain text)."""
        starts = self._special_starts
        if self._special_re is None or not (starts[0] in text if len(starts) == 1 else any(c in text for c in starts)):
            return []
        return [m.span() for m in self._special_re.finditer(text)]

    @cached_property
    def _special_starts(self) -> tuple[str, ...]:
        """First characters of the special tokens (`"<"` for most): text without any has none of them."""
        return tuple(sorted({t.content[0] for t in self.facts.added if t.special and t.content})) or ("",)

    def find_added(self, text: str) -> list[tuple[int, int]]:
        """Where `text` has an added token (special or not): the tokenizer splits the text there."""
        return [m.span() for m in self._added_re.finditer(text)] if self._added_re else []

    @property
    def vocab_size(self) -> int:
        return self.facts.vocab_size

    def token_to_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        added = self._added_ids.get(token)
        return added if added is not None else self.tokenizer.token_to_id(token)

    @cached_property
    def _added_ids(self) -> dict[str, int]:
        return {t.content: t.id for t in self.facts.added}

    @property
    def pad_id(self) -> int:
        for t in (self.pad_token, self.eos_token):
            tid = self.token_to_id(t)
            if tid is not None:
                return tid
        return 0

    # -- encoding --------------------------------------------------------------------------------
    def encode_batch(self, texts: list[str]) -> list[Encoding]:
        """Encode without adding special tokens (templates render bos themselves, as HF does).
        `encode_batch`, not `encode_batch_fast`: with tokenizers 0.23 the offset-tracking call is the
        faster one (6.2 vs 6.7-8.8 CPU s on the throughput corpus)."""
        return self.tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []

    @cached_property
    def _plain(self) -> Tokenizer:
        plain = Tokenizer.from_str(self.tokenizer.to_str())
        plain.encode_special_tokens = True
        return plain

    def encode_plain_batch(self, texts: list[str]) -> list[Encoding]:
        """Encode with added-token strings treated as ordinary text."""
        return self._plain.encode_batch(texts, add_special_tokens=False) if texts else []

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


def drop_identities(tok: Tokenizer) -> Tokenizer:
    """Remove parts that cannot change any encoding but cost time (a fifth of Qwen2.5's encode time as
    transformers configures it): a TemplateProcessing post-processor that adds no token to a single
    sequence, and an empty BPE subword prefix/suffix (`""` where the file says null)."""
    post = tok.post_processor
    if post is not None:
        cfg = json.loads(post.__getstate__())
        single = cfg.get("single") or []
        plain_single = single == [{"Sequence": {"id": "A", "type_id": 0}}]
        if cfg.get("type") == "TemplateProcessing" and not cfg.get("special_tokens") and plain_single:
            tok.post_processor = None
    model = tok.model
    if type(model).__name__ == "BPE":
        if model.continuing_subword_prefix == "":
            model.continuing_subword_prefix = None
        if model.end_of_word_suffix == "":
            model.end_of_word_suffix = None
    return tok


def _alternation(tokens: list[str]) -> re.Pattern[str] | None:
    return _compiled_alternation(tuple(sorted({t for t in tokens if t})))


@lru_cache(maxsize=8)
def _compiled_alternation(toks: tuple[str, ...]) -> re.Pattern[str] | None:
    """A pattern matching the longest of `toks` that starts at a place (as HF's added-token matcher does), found
    leftmost first; compiled once per process (its added and special tokens are often the same)."""
    if not toks:
        return None
    try:
        return re.compile(trie_pattern(toks))
    except RecursionError:  # tokens nested hundreds deep (each a prefix of the next): the flat alternation
        return re.compile("|".join(map(re.escape, sorted(toks, key=len, reverse=True))))


def trie_pattern(tokens: Iterable[str]) -> str:
    """The alternation of `tokens` (none empty) as a trie: `a(?:b(?:c)?|d)` for a, abc, ad. Where a token ends
    inside another the longer one is tried first (a greedy `(?:...)?`), and the branches out of a node start
    with different characters, so a match is the longest token at its place: what the longest-first
    alternation `abc|ad|a` gives, with less backtracking (Llama 3's 256 specials, which share
    `<|reserved_special_token_`: found ~10x faster, compiled ~3x faster)."""
    trie: dict[str, Any] = {}
    for token in tokens:
        node = trie
        for ch in token:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        chain = []
        while len(node) == 1 and "" not in node:  # a run of single characters: a literal
            (ch, node), *_ = node.items()
            chain.append(re.escape(ch))
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        body = "" if not branches else branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return "".join(chain) + (f"(?:{body})?" if body and "" in node else body)

    return emit(trie)


def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _parse(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust error is the useful part
        raise ConfigError(f"--tokenizer {path}: cannot load: {e}") from e
