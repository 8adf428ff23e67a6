"""Train a byte-level BPE tokenizer with HF `tokenizers` and save it as a transformers-loadable directory."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from sftprep.errors import ConfigError

# The Qwen2 / Llama 3 pre-tokenizer split (digits one at a time).
PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
DEFAULT_MODEL_MAX_LENGTH = 131072


def new_byte_level_bpe() -> Tokenizer:
    """An empty byte-level BPE Tokenizer with the pre-tokenizer, decoder and post-processor set."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _check_options(vocab_size: int, special_tokens: list[str], min_frequency: int) -> None:
    if len(set(special_tokens)) != len(special_tokens):
        raise ConfigError(f"special tokens repeat: {special_tokens}")
    if any(not t for t in special_tokens):
        raise ConfigError("a special token is empty")
    floor = 256 + len(special_tokens)
    if vocab_size < floor:
        raise ConfigError(f"vocab size {vocab_size} is below {floor} (256 byte tokens + {len(special_tokens)} special)")
    if min_frequency < 1:
        raise ConfigError(f"min frequency must be at least 1, not {min_frequency}")


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: list[str], min_frequency: int = 2) -> Tokenizer:
    """Train byte-level BPE on `texts`. Special tokens get ids 0.. in the order given and are never
    split; the 256 byte symbols follow, then the merges. Same inputs give the same tokenizer.json."""
    _check_options(vocab_size, special_tokens, min_frequency)
    tok = new_byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in special_tokens],
        initial_alphabet=sorted(pre_tokenizers.ByteLevel.alphabet()),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _check_token(tok: Tokenizer, role: str, token: str | None) -> None:
    if token is not None and tok.token_to_id(token) is None:
        raise ConfigError(f"{role} token {token!r} is not in the tokenizer's vocabulary")


def _added_tokens_decoder(tok: Tokenizer) -> dict[str, dict[str, Any]]:
    return {
        str(tid): {
            "content": t.content,
            "lstrip": t.lstrip,
            "normalized": t.normalized,
            "rstrip": t.rstrip,
            "single_word": t.single_word,
            "special": t.special,
        }
        for tid, t in sorted(tok.get_added_tokens_decoder().items())
    }


def tokenizer_config(
    tok: Tokenizer,
    *,
    bos_token: str | None,
    eos_token: str | None,
    pad_token: str | None,
    template_name: str | None,
    chat_template: str | None = None,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> dict[str, Any]:
    """The tokenizer_config.json content transformers' AutoTokenizer reads."""
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": _added_tokens_decoder(tok),
        "bos_token": bos_token,
        "eos_token": eos_token,
        "pad_token": pad_token,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    if template_name is not None:
        cfg["sftprep_template"] = template_name
    return cfg


def save_tokenizer_dir(
    tok: Tokenizer,
    out_dir: Path,
    *,
    bos_token: str | None,
    eos_token: str | None,
    pad_token: str | None,
    template_name: str | None,
    chat_template: str | None = None,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> Path:
    """Write `tokenizer.json` and `tokenizer_config.json` into `out_dir` (created); return `out_dir`."""
    for role, token in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token)):
        _check_token(tok, role, token)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    cfg = tokenizer_config(
        tok,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        template_name=template_name,
        chat_template=chat_template,
        model_max_length=model_max_length,
    )
    text = json.dumps(cfg, indent=2, ensure_ascii=False) + "\n"
    (out_dir / "tokenizer_config.json").write_text(text, encoding="utf-8")
    return out_dir
