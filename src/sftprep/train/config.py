"""Typed options of `sftprep train` (shared by the CLI, the Python API and the demo)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sftprep.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")


@dataclass
class TinyModelConfig:
    """The embedded `--model tiny`: a small Llama sized to the dataset's tokenizer, random init."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    intermediate_size: int | None = None  # default: 4 x hidden_size
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    rope_theta: float = 10_000.0


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class TrainConfig:
    data_dir: str
    out_dir: str = "model"
    model: str = "tiny"  # "tiny" or a local HF causal LM directory
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig | None = None
    # optimisation
    batch_size: int = 8  # examples (or packed rows) per micro-batch and process
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    lr: float = 3e-4
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int | None = None  # default: warmup_ratio of the steps
    warmup_ratio: float = 0.05
    max_grad_norm: float | None = 1.0
    seed: int = 0
    precision: str = "auto"  # auto = bf16 on GPUs that support it, else fp32
    attn_implementation: str | None = None  # default: sdpa
    # data
    packing: bool = False
    max_length: int | None = None  # row capacity with packing (default 2048); longer examples are dropped
    # checkpoints and logging
    save_every: int | None = None  # steps between checkpoints (default: only at the end)
    keep_checkpoints: int = 2
    resume: bool = False  # continue from the latest checkpoint in out_dir
    resume_from: str | None = None  # or from this checkpoint directory
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps, as if interrupted
    overwrite: bool = False
    log_every: int = 10
    quiet: bool = False
    tensorboard: bool = True  # when installed

    def validate(self) -> None:
        _positive(self.batch_size, "--batch-size")
        _positive(self.grad_accum, "--grad-accum")
        _positive(self.log_every, "--log-every")
        if self.max_steps is not None:
            _positive(self.max_steps, "--max-steps")
        if self.max_steps is None and self.epochs <= 0:
            raise ConfigError(f"--epochs {self.epochs}: expected a positive number")
        if self.lr <= 0:
            raise ConfigError(f"--lr {self.lr}: expected a positive learning rate")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"--min-lr-ratio {self.min_lr_ratio}: expected a value in [0, 1]")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.attn_implementation not in (None, *ATTENTION):
            raise ConfigError(f"--attn {self.attn_implementation!r}: expected one of {', '.join(ATTENTION)}")
        if self.max_length is not None:
            _positive(self.max_length, "--max-length")
        if self.save_every is not None:
            _positive(self.save_every, "--save-every")
        if self.stop_after is not None:
            _positive(self.stop_after, "--stop-after")
        if self.model == "tiny" and self.lora is not None:
            raise ConfigError("--lora needs a pretrained --model DIR; the tiny model is trained in full")
        if self.tiny.hidden_size % self.tiny.num_heads:
            raise ConfigError(
                f"tiny model: hidden size {self.tiny.hidden_size} is not a multiple of {self.tiny.num_heads} heads"
            )

    @property
    def row_capacity(self) -> int:
        return self.max_length or 2048

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["tiny"] = TinyModelConfig(**d.get("tiny", {}))
        d["lora"] = LoraConfig(**d["lora"]) if d.get("lora") else None
        d["betas"] = tuple(d.get("betas", (0.9, 0.95)))
        return cls(**d)


# Options that must not change between a run and its resumption (they change data order or the loss).
RESUME_INVARIANTS = ("model", "batch_size", "grad_accum", "seed", "packing", "max_length", "lora", "tiny")


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise ConfigError(f"{flag} {value}: expected a positive integer")
