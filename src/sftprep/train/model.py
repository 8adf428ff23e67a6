"""The model to train: the embedded tiny Llama, or a local HF causal LM, optionally with LoRA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sftprep.errors import ConfigError
from sftprep.train.config import LoraConfig, TinyModelConfig, TrainConfig

if TYPE_CHECKING:
    from sftprep.train.bundle import DataBundle

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
        what = "no such directory" if not p.exists() else "not a directory" if not p.is_dir() else "no config.json"
        raise ConfigError(
            f"--model {path}: not a local HF model directory ({what}); give a directory saved with "
            "save_pretrained (config.json + weights), or --model tiny"
        )
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        with no_progress_bars():
            return AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # unreadable config / weights, unknown architecture
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--model {path}: transformers cannot load it as a causal LM: {first}") from e


def peft_config(cfg: LoraConfig, trainable_tokens: list[int] | None = None) -> Any:
    """peft.LoraConfig from ours: the typed fields, then `options` (any other peft field, checked by name)."""
    import dataclasses

    import peft

    known = {f.name for f in dataclasses.fields(peft.LoraConfig)}
    unknown = sorted(set(cfg.options) - known)
    if unknown:
        raise ConfigError(
            f"--lora-option {', '.join(unknown)}: not a field of peft {peft.__version__}'s LoraConfig "
            f"(fields: {', '.join(sorted(known - {'peft_type', 'task_type', 'auto_mapping'}))})"
        )
    init: Any = {"true": True, "false": False}.get(cfg.init_lora_weights.lower(), cfg.init_lora_weights)
    targets: Any = cfg.target_modules[0] if cfg.target_modules == ["all-linear"] else list(cfg.target_modules)
    values: dict[str, Any] = {
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": targets,
        "bias": cfg.bias,
        "use_rslora": cfg.use_rslora,
        "use_dora": cfg.use_dora,
        "init_lora_weights": init,
        "modules_to_save": list(cfg.modules_to_save) or None,
        "layers_to_transform": list(cfg.layers_to_transform) or None,
        "task_type": "CAUSAL_LM",
    }
    if trainable_tokens:
        values["trainable_token_indices"] = list(trainable_tokens)
    values.update(cfg.options)
    try:
        return peft.LoraConfig(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"LoRA options: peft refuses them: {e}") from e


PEFT_HINT = "pip install 'sftprep[train]'"


def apply_lora(model: nn.Module, cfg: LoraConfig, seed: int, trainable_tokens: list[int] | None = None) -> nn.Module:
    """Adapters on `model`; `trainable_tokens`: embedding rows trained too (new tokens stay trainable)."""
    try:
        import peft
    except ImportError:
        raise ConfigError(f"--lora needs the `peft` package: {PEFT_HINT} (or pip install peft)") from None
    config = peft_config(cfg, trainable_tokens)
    try:
        with _seeded(seed):
            return peft.get_peft_model(model, config)
    except (ValueError, TypeError, KeyError) as e:  # e.g. target modules not found in the model
        raise ConfigError(f"--lora: peft cannot adapt this model: {e}") from e


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute every decoder layer's activations in backward (non-reentrant: works with DDP, FSDP, LoRA)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"--gradient-checkpointing: {type(model).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.25 (the older name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)  # type: ignore[operator]
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # type: ignore[operator]
    model.config.use_cache = False


def build_model(cfg: TrainConfig, bundle: DataBundle) -> tuple[nn.Module, dict[str, Any] | None]:
    """The model `cfg.model` names, sized to / checked against the dataset's tokenizer, with LoRA and
    gradient checkpointing as configured. Returns (model, embedding resize record or None)."""
    from sftprep.train.vocab import apply_vocab, plan_vocab

    record = None
    new_ids: list[int] = []
    if cfg.model == TINY:
        max_pos = max(cfg.tiny.max_position_embeddings, cfg.max_length or 0)
        tiny = TinyModelConfig(**{**cfg.tiny.__dict__, "max_position_embeddings": max_pos})
        model = tiny_llama(bundle.vocab_size, tiny, bundle.pad_id, bundle.eos_id, cfg.seed, cfg.attn_implementation)
    else:
        model = load_pretrained(cfg.model, cfg.attn_implementation)
        plan = plan_vocab(Path(cfg.model), model, bundle, cfg.data_dir)
        record = apply_vocab(model, plan)
        new_ids = sorted(plan.new_tokens.values())
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora, cfg.seed, new_ids or None)
    return model, record


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
