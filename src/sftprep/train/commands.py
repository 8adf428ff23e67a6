"""Plain typed functions behind `sftprep train | generate | demo`, and their typer wrappers.

The CLI registers them with `register(app)`. This module also runs on its own, which is how a
multi-process run is launched:  torchrun --nproc_per_node 2 -m sftprep.train.commands train DATA -o OUT
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from sftprep.errors import ConfigError, SftprepError

if TYPE_CHECKING:
    from sftprep.train.demo import DemoRow
    from sftprep.train.loop import TrainResult


def train_command(
    data_dir: Path,
    out_dir: Path,
    model: str = "tiny",
    *,
    lora: bool = False,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    lora_targets: list[str] | None = None,
    batch_size: int = 8,
    grad_accum: int = 1,
    epochs: float = 1.0,
    max_steps: int | None = None,
    lr: float = 3e-4,
    min_lr_ratio: float = 0.0,
    weight_decay: float = 0.0,
    warmup_steps: int | None = None,
    warmup_ratio: float = 0.05,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    precision: str = "auto",
    attn: str | None = None,
    packing: bool = False,
    max_length: int | None = None,
    save_every: int | None = None,
    keep_checkpoints: int = 2,
    resume: bool = False,
    resume_from: Path | None = None,
    stop_after: int | None = None,
    overwrite: bool = False,
    log_every: int = 10,
    quiet: bool = False,
    tensorboard: bool = True,
    tiny_hidden: int = 128,
    tiny_layers: int = 4,
    tiny_heads: int = 4,
    threads: int | None = None,
) -> TrainResult:
    """`sftprep train DATA_DIR --model tiny|DIR -o OUT_DIR`: returns the run's TrainResult.

    `threads` sets torch's intra-op threads (CPU); None keeps torch's default (all cores).
    """
    import torch

    from sftprep.train.config import LoraConfig, TinyModelConfig, TrainConfig
    from sftprep.train.loop import train

    if threads:
        torch.set_num_threads(threads)

    lora_cfg = None
    if lora:
        lora_cfg = LoraConfig(r=lora_r, alpha=lora_alpha, dropout=lora_dropout)
        if lora_targets:
            lora_cfg.target_modules = list(lora_targets)
    cfg = TrainConfig(
        data_dir=str(data_dir),
        out_dir=str(out_dir),
        model=model,
        tiny=TinyModelConfig(hidden_size=tiny_hidden, num_layers=tiny_layers, num_heads=tiny_heads),
        lora=lora_cfg,
        batch_size=batch_size,
        grad_accum=grad_accum,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        min_lr_ratio=min_lr_ratio,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        warmup_ratio=warmup_ratio,
        max_grad_norm=max_grad_norm,
        seed=seed,
        precision=precision,
        attn_implementation=attn,
        packing=packing,
        max_length=max_length,
        save_every=save_every,
        keep_checkpoints=keep_checkpoints,
        resume=resume,
        resume_from=str(resume_from) if resume_from else None,
        stop_after=stop_after,
        overwrite=overwrite,
        log_every=log_every,
        quiet=quiet,
        tensorboard=tensorboard,
    )
    return train(cfg)


def generate_command(
    model_dir: Path,
    prompt: str | None = None,
    messages: Path | None = None,
    system: str | None = None,
    raw: bool = False,
    max_new_tokens: int = 256,
) -> str:
    """`sftprep generate MODEL_DIR --prompt TEXT | --messages FILE.json`: the greedy reply.

    The prompt is rendered exactly as in training (the dataset's template, tokenizer and options);
    `raw` encodes --prompt verbatim (models trained on prompt/completion data).
    """
    from sftprep.train.generate import greedy, load_for_generation, read_messages

    if (prompt is None) == (messages is None):
        raise ConfigError("give exactly one of --prompt TEXT and --messages FILE.json")
    model, renderer = load_for_generation(model_dir)
    if raw:
        if prompt is None:
            raise ConfigError("--raw takes --prompt TEXT (a verbatim prompt), not --messages")
        rendered = renderer.raw(prompt)
    else:
        chat: list[dict[str, Any]] = read_messages(messages) if messages else [{"role": "user", "content": prompt}]
        if system is not None:
            chat = [{"role": "system", "content": system}, *[m for m in chat if m.get("role") != "system"]]
        rendered = renderer.render(chat)
    return greedy(model, rendered, renderer.tok.decode, max_new_tokens)


def demo_command(
    quick: bool = False,
    out_dir: Path = Path("sftprep-demo"),
    masks: tuple[str, ...] = ("assistant", "none"),
    max_steps: int | None = None,
    quiet: bool = False,
    threads: int = 1,
    parallel: bool | None = None,
) -> list[DemoRow]:
    """`sftprep demo`: train the tiny model on synthetic additions with each mask; print the table.

    The masks run in parallel processes (`threads` torch threads each) when there are cores for them.
    """
    from sftprep.train.demo import QUICK, DemoConfig, results_table, run_demo, with_overrides

    demo = with_overrides(QUICK if quick else DemoConfig(), max_steps=max_steps)
    rows = run_demo(out_dir, masks=masks, quiet=quiet, demo=demo, threads=threads, parallel=parallel)
    Console(quiet=quiet).print(results_table(rows))
    return rows


# ------------------------------------------------------------------------------------------- typer
Opt = typer.Option


def train_cli(
    data_dir: Annotated[Path, typer.Argument(help="A directory written by `sftprep prepare`.")],
    out_dir: Annotated[Path, Opt("-o", "--out-dir", help="Where the model, checkpoints and logs go.")] = Path("model"),
    model: Annotated[str, Opt(help="'tiny' (random-init small Llama) or a local HF causal LM directory.")] = "tiny",
    lora: Annotated[bool, Opt(help="Train LoRA adapters (needs peft); saved merged and as OUT/adapter.")] = False,
    lora_r: Annotated[int, Opt(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, Opt(help="LoRA alpha.")] = 32,
    batch_size: Annotated[int, Opt(help="Examples (or packed rows) per micro-batch and process.")] = 8,
    grad_accum: Annotated[int, Opt(help="Micro-batches per optimizer step.")] = 1,
    epochs: Annotated[float, Opt(help="Passes over the data (unless --max-steps).")] = 1.0,
    max_steps: Annotated[int | None, Opt(help="Optimizer steps (overrides --epochs).")] = None,
    lr: Annotated[float, Opt(help="Peak learning rate (AdamW).")] = 3e-4,
    min_lr_ratio: Annotated[float, Opt(help="Cosine decays to lr x this.")] = 0.0,
    weight_decay: Annotated[float, Opt(help="AdamW weight decay (not on norms/embeddings).")] = 0.0,
    warmup_steps: Annotated[int | None, Opt(help="Linear warmup steps (default: --warmup-ratio).")] = None,
    warmup_ratio: Annotated[float, Opt(help="Warmup as a fraction of the steps.")] = 0.05,
    max_grad_norm: Annotated[float, Opt(help="Clip the gradient norm (0 = off).")] = 1.0,
    seed: Annotated[int, Opt(help="Seed of init and data order.")] = 0,
    precision: Annotated[str, Opt(help="auto (bf16 on GPUs that support it) | fp32 | bf16")] = "auto",
    attn: Annotated[str | None, Opt(help="sdpa | eager | flash_attention_2 | flash_attention_3")] = None,
    packing: Annotated[bool, Opt(help="Padding-free packing (best-fit decreasing) into --max-length rows.")] = False,
    max_length: Annotated[int | None, Opt(help="Row length with --packing (default 2048); longer: dropped.")] = None,
    save_every: Annotated[int | None, Opt(help="Checkpoint every N steps (always at the end).")] = None,
    keep_checkpoints: Annotated[int, Opt(help="Checkpoints to keep.")] = 2,
    resume: Annotated[bool, Opt(help="Continue from the latest checkpoint in OUT_DIR.")] = False,
    resume_from: Annotated[Path | None, Opt(help="Continue from this checkpoint directory.")] = None,
    stop_after: Annotated[int | None, Opt(help="Stop (with a checkpoint) after step N.")] = None,
    overwrite: Annotated[bool, Opt(help="Replace an existing OUT_DIR.")] = False,
    log_every: Annotated[int, Opt(help="Print a loss line every N steps.")] = 10,
    tensorboard: Annotated[bool, Opt(help="Log to OUT_DIR/runs when tensorboard is installed.")] = True,
    tiny_hidden: Annotated[int, Opt(help="--model tiny: hidden size.")] = 128,
    tiny_layers: Annotated[int, Opt(help="--model tiny: layers.")] = 4,
    tiny_heads: Annotated[int, Opt(help="--model tiny: attention heads.")] = 4,
    threads: Annotated[int | None, Opt(help="Torch CPU threads (default: all; 1 suits tiny models).")] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Fine-tune a causal LM on prepared data (assistant-only loss, packing, checkpoints, resume)."""
    train_command(
        data_dir,
        out_dir,
        model,
        lora=lora,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        batch_size=batch_size,
        grad_accum=grad_accum,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        min_lr_ratio=min_lr_ratio,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        warmup_ratio=warmup_ratio,
        max_grad_norm=max_grad_norm or None,
        seed=seed,
        precision=precision,
        attn=attn,
        packing=packing,
        max_length=max_length,
        save_every=save_every,
        keep_checkpoints=keep_checkpoints,
        resume=resume,
        resume_from=resume_from,
        stop_after=stop_after,
        overwrite=overwrite,
        log_every=log_every,
        quiet=quiet,
        tensorboard=tensorboard,
        tiny_hidden=tiny_hidden,
        tiny_layers=tiny_layers,
        tiny_heads=tiny_heads,
        threads=threads,
    )


def generate_cli(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `sftprep train`.")],
    prompt: Annotated[str | None, Opt(help="The user message.")] = None,
    messages: Annotated[Path | None, Opt(help="A JSON list of {role, content} messages.")] = None,
    system: Annotated[str | None, Opt(help="A system message (replaces one in --messages).")] = None,
    raw: Annotated[bool, Opt(help="Use --prompt verbatim, without the chat template.")] = False,
    max_new_tokens: Annotated[int, Opt(help="Stop after this many tokens.")] = 256,
) -> None:
    """Greedy reply from a trained model, the prompt rendered exactly as in training."""
    print(generate_command(model_dir, prompt, messages, system, raw, max_new_tokens))


def demo_cli(
    quick: Annotated[bool, Opt(help="A small, fast run (accuracy not meaningful).")] = False,
    out_dir: Annotated[Path, Opt("-o", "--out-dir", help="Work directory.")] = Path("sftprep-demo"),
    mask: Annotated[list[str], Opt(help="Mask(s) to compare (default: assistant and none).")] = [],  # noqa: B006
    max_steps: Annotated[int | None, Opt(help="Override the number of training steps.")] = None,
    threads: Annotated[int, Opt(help="Torch threads per run.")] = 1,
    parallel: Annotated[bool | None, Opt(help="Run the masks in parallel processes (default: if cores).")] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Only the results table.")] = False,
) -> None:
    """Two-digit addition on CPU: prepare, train the tiny model, exact match on held-out pairs."""
    demo_command(quick, out_dir, tuple(mask) or ("assistant", "none"), max_steps, quiet, threads, parallel)


def register(app: typer.Typer) -> None:
    """Add `train`, `generate` and `demo` to a typer app."""
    app.command("train")(train_cli)
    app.command("generate")(generate_cli)
    app.command("demo")(demo_cli)


def main() -> None:
    app = typer.Typer(add_completion=False, no_args_is_help=True)
    register(app)
    try:
        app(standalone_mode=False)
    except SftprepError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
