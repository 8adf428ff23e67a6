"""The model to train: the embedded tiny Llama, or a local HF causal LM, optionally with LoRA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sftprep.errors import ConfigError
from sftprep.train.config import LoraConfig, TinyModelConfig, TrainConfig

TINY = "tiny"


def tiny_llama(
    vocab_size: int, cfg: TinyModelConfig, pad_id: int, eos_id: int | None, seed: int, attn: str | None = None
) -> nn.Module:
    """A random-init Llama sized to the tokenizer (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        rope_theta=cfg.rope_theta,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
        attention_dropout=0.0,
        attn_implementation=attn or "sdpa",
    )
    with _seeded(seed):
        model = LlamaForCausalLM(config)
    return model


def load_pretrained(path: str | Path, attn: str | None = None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Any local HF causal LM directory (never downloads)."""
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if not (p / "config.json").is_file():
        raise ConfigError(f"--model {path}: not a local HF model directory (no config.json); or use --model tiny")
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
    if attn:
        kwargs["attn_implementation"] = attn
    with no_progress_bars():
        return AutoModelForCausalLM.from_pretrained(str(p), **kwargs)


def apply_lora(model: nn.Module, cfg: LoraConfig, seed: int) -> nn.Module:
    try:
        import peft
    except ImportError:
        raise ConfigError(
            "--lora needs the `peft` package: pip install 'sftprep[train]' (or pip install peft)"
        ) from None
    lora = peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    with _seeded(seed):
        return peft.get_peft_model(model, lora)


def build_model(cfg: TrainConfig, tokenizer_info: dict[str, Any]) -> nn.Module:
    """The model `cfg.model` names, sized to / checked against the dataset's tokenizer (manifest)."""
    vocab = int(tokenizer_info["vocab_size"])
    if cfg.model == TINY:
        eos = tokenizer_info.get("eos_id")
        max_pos = max(cfg.tiny.max_position_embeddings, cfg.max_length or 0)
        tiny = TinyModelConfig(**{**cfg.tiny.__dict__, "max_position_embeddings": max_pos})
        model = tiny_llama(vocab, tiny, int(tokenizer_info["pad_id"]), eos, cfg.seed, cfg.attn_implementation)
    else:
        model = load_pretrained(cfg.model, cfg.attn_implementation)
        rows = model.get_input_embeddings().weight.shape[0]
        if rows < vocab:
            raise ConfigError(
                f"--model {cfg.model}: its embedding has {rows} rows but the dataset's tokenizer has {vocab} "
                "tokens; prepare the data with this model's tokenizer"
            )
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora, cfg.seed)
    return model


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def final_model(model: nn.Module) -> nn.Module:
    """The model to save for inference: LoRA adapters merged into the base weights."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()  # type: ignore[operator]
    return model


class _seeded:
    """Seed torch's global RNG for a block (random init), restoring its state afterwards."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self.state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        torch.random.set_rng_state(self.state)


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Silence transformers' tqdm bars (loading / writing weights) for a block."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()
