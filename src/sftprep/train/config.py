"""Typed options of `sftprep train`: the one definition of every CLI flag and config-file key.

Each field's metadata holds its help text and, where it differs from the field's name, its flag;
`sftprep.train.cli_options` builds the typer command and reads config files from these dataclasses,
so a new option is one field here. Config files use the field names (`[tiny]` and `[lora]` tables).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from sftprep.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
SHARDING = ("none", "fsdp")
WANDB_MODES = ("online", "offline", "disabled")
LORA_BIAS = ("none", "all", "lora_only")


def doc(help: str, *, flag: str | None = None, short: str | None = None) -> dict[str, Any]:
    """A field's CLI metadata: its help text, its flag when not the field's name, a short option."""
    return {"help": help, "flag": flag, "short": short}


def opt(default: Any = MISSING, help: str = "", *, flag: str | None = None, short: str | None = None) -> Any:
    """A dataclass field with an immutable default and CLI metadata."""
    return field(default=default, metadata=doc(help, flag=flag, short=short))


@dataclass
class TinyModelConfig:
    """The embedded `--model tiny`: a small Llama sized to the dataset's tokenizer, random init."""

    hidden_size: int = opt(128, "--model tiny: hidden size.", flag="tiny-hidden")
    num_layers: int = opt(4, "--model tiny: layers.", flag="tiny-layers")
    num_heads: int = opt(4, "--model tiny: attention heads.", flag="tiny-heads")
    num_kv_heads: int | None = opt(None, "--model tiny: key/value heads (default: --tiny-heads).", flag="tiny-kv-heads")
    intermediate_size: int | None = opt(None, "--model tiny: MLP size (default 4 x hidden).", flag="tiny-intermediate")
    max_position_embeddings: int = opt(4096, "--model tiny: positions.", flag="tiny-max-positions")
    tie_word_embeddings: bool = opt(True, "--model tiny: LM head shares the embedding.", flag="tiny-tie-embeddings")
    rope_theta: float = opt(10_000.0, "--model tiny: RoPE base.", flag="tiny-rope-theta")


@dataclass
class LoraConfig:
    """peft's LoraConfig: the usual fields typed here, any other one through `options` (checked against peft)."""

    r: int = opt(16, "LoRA rank.")
    alpha: int = opt(32, "LoRA alpha (scale = alpha / r).")
    dropout: float = opt(0.0, "LoRA dropout.")
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata=doc("Modules to adapt (repeat or comma-separate; 'all-linear')."),
    )
    bias: str = opt("none", "Train biases: none | all | lora_only.")
    use_rslora: bool = opt(False, "Rank-stabilised scale alpha / sqrt(r).")
    use_dora: bool = opt(False, "Weight-decomposed LoRA (DoRA).")
    init_lora_weights: str = opt(
        "true", "Init: true | false | gaussian | pissa | olora | ... (peft's).", flag="lora-init"
    )
    modules_to_save: list[str] = field(default_factory=list, metadata=doc("Modules trained in full, saved too."))
    layers_to_transform: list[int] = field(default_factory=list, metadata=doc("Only these layers (default: all)."))
    options: dict[str, Any] = field(
        default_factory=dict, metadata=doc("Any other peft.LoraConfig field, KEY=JSON, repeatable.", flag="lora-option")
    )


@dataclass
class TrainConfig:
    data_dir: str = opt(MISSING, "A directory written by `sftprep prepare`.")
    out_dir: str = opt("model", "Where the model, checkpoints and logs go.", short="-o")
    model: str = opt("tiny", "'tiny' (random-init small Llama) or a local HF causal LM directory.")
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig | None = field(
        default=None, metadata=doc("Train LoRA adapters (peft); saved merged, OUT/adapter.")
    )
    # optimisation
    batch_size: int = opt(8, "Examples (or packed rows) per micro-batch and process.")
    grad_accum: int = opt(1, "Micro-batches per optimizer step.")
    epochs: float = opt(1.0, "Passes over the data (unless --max-steps).")
    max_steps: int | None = opt(None, "Optimizer steps (overrides --epochs).")
    lr: float = opt(3e-4, "Peak learning rate (AdamW).")
    min_lr_ratio: float = opt(0.0, "Cosine decays to lr x this.")
    weight_decay: float = opt(0.0, "AdamW weight decay (not on norms/biases/embeddings).")
    betas: tuple[float, float] = opt((0.9, 0.95), "AdamW betas.")
    warmup_steps: int | None = opt(None, "Linear warmup steps (default: --warmup-ratio).")
    warmup_ratio: float = opt(0.05, "Warmup as a fraction of the steps.")
    max_grad_norm: float | None = opt(1.0, "Clip the gradient norm (0 = off).")
    seed: int = opt(0, "Seed of init and data order.")
    precision: str = opt("auto", "auto (bf16 on GPUs that support it) | fp32 | bf16.")
    attn_implementation: str | None = opt(None, "sdpa | eager | flash_attention_2 | flash_attention_3.", flag="attn")
    # memory
    gradient_checkpointing: bool = opt(False, "Recompute each layer's activations in backward (less memory).")
    sharding: str = opt("none", "none (full replicas, DDP) | fsdp (FSDP2 per decoder layer, under torchrun).")
    # data
    packing: bool = opt(False, "Padding-free packing (best-fit decreasing) into --max-length rows.")
    max_length: int | None = opt(None, "Row length with --packing (default 2048); longer examples are dropped.")
    # evaluation
    eval_dir: str | None = opt(
        None, "A prepared eval split: masked loss every --eval-every and at the end.", flag="eval"
    )
    eval_every: int | None = opt(None, "Evaluate every N steps (default: only at the end).")
    eval_batch_size: int | None = opt(None, "Eval examples per batch and process (default: --batch-size).")
    # checkpoints
    save_every: int | None = opt(None, "Checkpoint every N steps (always at the end).")
    keep_checkpoints: int = opt(2, "Checkpoints to keep.")
    resume: bool = opt(False, "Continue from the latest checkpoint in OUT_DIR.")
    resume_from: str | None = opt(None, "Continue from this checkpoint directory.")
    stop_after: int | None = opt(None, "Stop (with a checkpoint) after step N, as if interrupted.")
    overwrite: bool = opt(False, "Replace an OUT_DIR written by an earlier `sftprep train`.")
    # logging
    log_every: int = opt(10, "Print a loss line every N steps.")
    quiet: bool = opt(False, "Print nothing but errors.", short="-q")
    tensorboard: bool = opt(True, "Log to OUT_DIR/runs (needs tensorboard; a message says when missing).")
    wandb: bool = opt(False, "Log to Weights & Biases (needs wandb).")
    wandb_project: str = opt("sftprep", "W&B project.")
    wandb_mode: str | None = opt(None, "W&B mode: online | offline | disabled (default: WANDB_MODE or online).")
    threads: int | None = opt(None, "Torch CPU threads (default: torch's; 1 suits tiny models).")

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            _positive(getattr(self, name), flag_of(name))
        for name in ("max_steps", "max_length", "save_every", "stop_after", "eval_every", "eval_batch_size", "threads"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), flag_of(name))
        if self.max_steps is None and self.epochs <= 0:
            raise ConfigError(f"--epochs {self.epochs}: expected a positive number")
        if self.lr <= 0:
            raise ConfigError(f"--lr {self.lr}: expected a positive learning rate")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"--min-lr-ratio {self.min_lr_ratio}: expected a value in [0, 1]")
        _choice(self.precision, PRECISIONS, "--precision")
        _choice(self.sharding, SHARDING, "--sharding")
        if self.attn_implementation is not None:
            _choice(self.attn_implementation, ATTENTION, "--attn")
        if self.wandb_mode is not None:
            _choice(self.wandb_mode, WANDB_MODES, "--wandb-mode")
        if self.eval_every is not None and self.eval_dir is None:
            raise ConfigError("--eval-every needs --eval DIR (a prepared eval split)")
        if self.model == "tiny" and self.lora is not None:
            raise ConfigError("--lora needs a pretrained --model DIR; the tiny model is trained in full")
        if self.lora is not None:
            _choice(self.lora.bias, LORA_BIAS, "--lora-bias")
            _positive(self.lora.r, "--lora-r")
        if self.tiny.hidden_size % self.tiny.num_heads:
            raise ConfigError(
                f"tiny model: hidden size {self.tiny.hidden_size} is not a multiple of {self.tiny.num_heads} heads"
            )

    @property
    def row_capacity(self) -> int:
        return self.max_length or 2048

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> TrainConfig:
        """From plain values (a config file, a checkpoint's state.json); unknown keys and wrong types are
        ConfigErrors naming the key."""
        values = _typed(cls, d, where)
        values["tiny"] = TinyModelConfig(**_typed(TinyModelConfig, d.get("tiny") or {}, f"{where} [tiny]"))
        lora = d.get("lora")
        if lora is True:
            lora = {}
        values["lora"] = LoraConfig(**_typed(LoraConfig, lora, f"{where} [lora]")) if isinstance(lora, dict) else None
        if lora not in (None, False) and not isinstance(lora, dict):
            raise ConfigError(f"{where}: 'lora' must be a table of LoRA options, true or false (got {lora!r})")
        if "data_dir" not in values:
            raise ConfigError(f"{where}: no data directory; give DATA_DIR (a directory written by `sftprep prepare`)")
        return cls(**values)


# Options that must not change between a run and its resumption (data order, the model, the checkpoint format).
RESUME_INVARIANTS = ("model", "batch_size", "grad_accum", "seed", "packing", "max_length", "lora", "tiny", "sharding")


def flag_of(name: str, cls: type = TrainConfig) -> str:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return "--" + (f.metadata.get("flag") or name.replace("_", "-"))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A .toml or .json file of TrainConfig keys (dashes or underscores), `[tiny]` / `[lora]` tables."""
    p = Path(path)
    if not p.is_file():
        what = "a directory" if p.is_dir() else "no such file"
        raise ConfigError(f"--config {path}: {what}; give a .toml or .json file of training options")
    text = p.read_text("utf-8")
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        elif p.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"--config {path}: expected a .toml or .json file")
    except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"--config {path}: cannot parse: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a table of options at the top level")
    return _underscored(data)


def _underscored(d: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("-", "_"): _underscored(v) if isinstance(v, dict) and k != "options" else v for k, v in d.items()}


def _typed(cls: type, d: dict[str, Any], where: str) -> dict[str, Any]:
    """`d`'s entries for `cls`, each checked against the field's type (nested dataclasses left out)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"{where}: unknown option {key!r}{hint}")
        if key in ("tiny", "lora") and cls is TrainConfig:
            continue
        out[key] = _coerce(value, hints[key], f"{where}: {key}")
    return out


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` as type `hint` (ints as floats, lists as tuples); a ConfigError when it is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    ok: bool
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is list:
        ok = isinstance(value, list | tuple)
        if ok:
            return [_coerce(v, args[0], where) for v in value]
    elif origin is tuple:
        ok = isinstance(value, list | tuple) and len(value) == len(args)
        if ok:
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    elif origin is dict:
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{where}: expected {name}, got {value!r}")
    return value


def _positive(value: int, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{flag} {value}: expected a positive integer")


def _choice(value: str, choices: tuple[str, ...], flag: str) -> None:
    if value not in choices:
        raise ConfigError(f"{flag} {value!r}: expected one of {', '.join(choices)}")
