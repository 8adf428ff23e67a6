"""Plain typed functions behind `sftprep train | generate | demo | tokenizer add-tokens`, and their
typer wrappers. `train`'s options come from TrainConfig (config.py), one definition for flags and
config files.

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
from sftprep.train.cli_options import resolve, train_typer_command
from sftprep.train.config import TrainConfig

if TYPE_CHECKING:
    from sftprep.train.demo import DemoRow
    from sftprep.train.loop import TrainResult


def train_command(
    data_dir: Path | str | None,
    out_dir: Path | str | None = None,
    model: str | None = None,
    *,
    config: Path | str | None = None,
    **options: Any,
) -> TrainResult:
    """`sftprep train DATA_DIR -o OUT_DIR --model tiny|DIR [--config FILE] [--flag value ...]`.

    `options` are the flags by their Python names (`batch_size=4`, `tiny_hidden=32`, `lora=True`,
    `lora_r=8`): the same table the CLI is built from (`sftprep.train.cli_options.flags()`).
    """
    explicit = dict(options)
    if out_dir is not None:
        explicit["out_dir"] = str(out_dir)
    if model is not None:
        explicit["model"] = model
    return run_train(resolve(data_dir, explicit, config))


TRAIN_EXTRA_HINT = "pip install 'sftprep[train]'"


def _require_train_extra(command: str) -> None:
    """torch and transformers are the `train` extra: a plain error when they are missing."""
    for module in ("torch", "transformers"):
        try:
            __import__(module)
        except ImportError as e:
            raise ConfigError(f"`sftprep {command}` needs {module} ({e}): {TRAIN_EXTRA_HINT}") from None


def run_train(cfg: TrainConfig) -> TrainResult:
    _require_train_extra("train")
    from sftprep.train.loop import train

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
    _require_train_extra("generate")
    from sftprep.train.generate import greedy, load_for_generation, read_messages

    if (prompt is None) == (messages is None):
        raise ConfigError("give exactly one of --prompt TEXT and --messages FILE.json")
    if raw and prompt is None:
        raise ConfigError("--raw takes --prompt TEXT (a verbatim prompt), not --messages")
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {max_new_tokens}: expected a positive integer")
    chat: list[dict[str, Any]] = read_messages(messages) if messages else [{"role": "user", "content": prompt}]
    model, renderer = load_for_generation(model_dir)
    if raw:
        assert prompt is not None
        rendered = renderer.raw(prompt)
    else:
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
    overwrite: bool = False,
) -> list[DemoRow]:
    """`sftprep demo`: train the tiny model on synthetic additions with each mask; print the table.

    The masks run in parallel processes (`threads` torch threads each) when there are cores for them.
    """
    _require_train_extra("demo")
    from sftprep.train.demo import MASKS, QUICK, DemoConfig, results_table, run_demo, with_overrides

    unknown = [m for m in masks if m not in MASKS]
    if unknown:
        raise ConfigError(f"--mask {', '.join(unknown)}: expected {' or '.join(MASKS)}")
    if threads < 1 or (max_steps is not None and max_steps < 1):
        raise ConfigError("--threads and --max-steps take positive integers")
    demo = with_overrides(QUICK if quick else DemoConfig(), max_steps=max_steps)
    rows = run_demo(
        out_dir, masks=masks, quiet=quiet, demo=demo, threads=threads, parallel=parallel, overwrite=overwrite
    )
    Console(quiet=quiet).print(results_table(rows))
    return rows


# ------------------------------------------------------------------------------------------- typer
Opt = typer.Option

train_cli = train_typer_command(
    run_train, "Fine-tune a causal LM on prepared data (assistant-only loss, packing, LoRA, FSDP, eval, resume)."
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
    overwrite: Annotated[bool, Opt(help="Replace a work directory an earlier `sftprep demo` wrote.")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Only the results table.")] = False,
) -> None:
    """Two-digit addition on CPU: prepare, train the tiny model, exact match on held-out pairs."""
    demo_command(quick, out_dir, tuple(mask) or ("assistant", "none"), max_steps, quiet, threads, parallel, overwrite)


def add_tokens_cli(
    tokenizer: Annotated[str, typer.Argument(help="A tokenizer directory, tokenizer.json or .tiktoken file.")],
    out_dir: Annotated[Path, Opt("-o", "--out-dir", help="Where to write the new tokenizer.")],
    token: Annotated[list[str], Opt(help="A token to add as a special token (repeatable).")] = [],  # noqa: B006
    template: Annotated[str | None, Opt(help="Add the markers this built-in template needs (e.g. chatml).")] = None,
    pad_token: Annotated[str | None, Opt(help="Make this the pad token (added if missing).")] = None,
    overwrite: Annotated[bool, Opt(help="Replace an OUT_DIR an earlier add-tokens wrote.")] = False,
) -> None:
    """Copy a tokenizer with role/separator tokens added as special tokens (train resizes the model)."""
    from sftprep.tokenize.add_tokens import add_tokens

    result = add_tokens(tokenizer, out_dir, list(token), template, pad_token, overwrite)
    out = Console()
    if result.added:
        listed = ", ".join(f"{t} = {i}" for t, i in result.added.items())
        out.print(
            f"[green]wrote[/] {out_dir}: added {len(result.added)} special token(s): {listed}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        out.print(f"[green]wrote[/] {out_dir}: every token was already there (nothing added)", highlight=False)
    if result.present:
        out.print(f"already single tokens: {', '.join(result.present)}", highlight=False)
    out.print(f"prepare with it: sftprep prepare INPUTS -o DIR --tokenizer {out_dir}", highlight=False)


def _tokenizer_group(app: typer.Typer) -> typer.Typer:
    for group in app.registered_groups:
        if group.name == "tokenizer" and group.typer_instance is not None:
            return group.typer_instance
    group_app = typer.Typer(no_args_is_help=True, help="Tokenizer utilities.")
    app.add_typer(group_app, name="tokenizer")
    return group_app


def register(app: typer.Typer) -> None:
    """Add `train`, `generate`, `demo` and `tokenizer add-tokens` to a typer app."""
    app.command("train")(train_cli)
    app.command("generate")(generate_cli)
    app.command("demo")(demo_cli)
    _tokenizer_group(app).command("add-tokens")(add_tokens_cli)


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
