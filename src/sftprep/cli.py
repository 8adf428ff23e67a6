"""The `sftprep` command line, built from typed functions.

Exit codes: 0 success (rejected records are reported, not fatal); 1 internal error (a bug: please
report); 2 bad input or options (missing/unreadable input, a format sftprep does not read, unknown
template, --strict and a record was rejected, OUT_DIR exists without --overwrite or was not written by
sftprep, another run is writing OUT_DIR); 3 no example written (every record rejected; `stats` and
`inspect` of such an OUT_DIR too); 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from sftprep.errors import SftprepError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
tokenizer_app = typer.Typer(no_args_is_help=True, help="Tokenizer utilities.")
app.add_typer(tokenizer_app, name="tokenizer")
template_app = typer.Typer(no_args_is_help=True, help="Chat template utilities.")
app.add_typer(template_app, name="template")
err = Console(stderr=True, soft_wrap=True)
out = Console()


def _parse_pairs(values: list[str], flag: str, typed: bool = False) -> dict[str, Any]:
    """KEY=VALUE pairs; with `typed`, VALUE is JSON when it parses (true, 3, ["a"]), else the string."""
    pairs: dict[str, Any] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{flag} {v!r}: expected KEY=VALUE")
        pairs[key] = value
        if typed:
            with contextlib.suppress(ValueError):
                pairs[key] = json.loads(value)
    return pairs


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def _list(values: list[str]) -> list[str]:
    """Repeatable and comma-separated values (`--dataset a,b --dataset c`)."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    from sftprep.read.columns import parse_pairs

    return {k: v for value in values for k, v in parse_pairs(value, flag).items()}


@app.command()
def prepare(
    ctx: typer.Context,
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="JSONL/JSON/CSV/TSV (also .gz/.zst/.bz2/.xz), Parquet, Arrow, datasets dirs, dirs, globs."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Data config (.yaml/.toml): options, sources, eval. Flags given win.")
    ] = None,
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Output directory.")] = Path("out"),
    tokenizer: Annotated[str | None, typer.Option(help="tokenizer.json, HF dir, .tiktoken, or default.")] = None,
    template: Annotated[str | None, typer.Option(help="Built-in name, .jinja, tokenizer_config.json or dir.")] = None,
    template_name: Annotated[str | None, typer.Option(help="Pick a named template from a list.")] = None,
    template_var: Annotated[list[str], typer.Option(help="Extra template variable KEY=VALUE.")] = [],  # noqa: B006
    format: Annotated[str, typer.Option(help="auto|messages|sharegpt|alpaca|prompt-completion")] = "auto",
    columns: Annotated[
        list[str], typer.Option(help="Map fields: messages=dialog,system=sys,instruction=question,output=answer.")
    ] = [],  # noqa: B006
    tags: Annotated[
        list[str], typer.Option(help="Message keys/roles (LLaMA-Factory tags): role_tag=from,content_tag=value,...")
    ] = [],  # noqa: B006
    role_map: Annotated[list[str], typer.Option(help="Map a role: OLD=NEW (repeatable).")] = [],  # noqa: B006
    merge_consecutive: Annotated[bool, typer.Option(help="Merge consecutive same-role turns.")] = False,
    system_prompt: Annotated[str | None, typer.Option(help="System prompt TEXT or @file.")] = None,
    system_policy: Annotated[str, typer.Option(help="if-missing|always|replace|never")] = "if-missing",
    mask: Annotated[str, typer.Option(help="assistant|last-turn|split-turns|none")] = "assistant",
    train_on_eos: Annotated[bool, typer.Option(help="Train the end-of-turn marker.")] = True,
    train_reasoning: Annotated[bool, typer.Option(help="Train reasoning (think) text.")] = True,
    train_tool_calls: Annotated[bool, typer.Option(help="Train assistant turns that call tools.")] = True,
    max_length: Annotated[int | None, typer.Option(help="Maximum tokens per example.")] = None,
    max_chars: Annotated[
        int, typer.Option(min=1, help="Reject a rendered conversation longer than this (memory guard).")
    ] = 8_000_000,
    truncation: Annotated[str, typer.Option(help="drop|right|history")] = "drop",
    reasoning_mode: Annotated[
        str, typer.Option(help="auto|thinking|non-thinking|reject: template setting for reasoning turns.")
    ] = "auto",
    require_user_turn: Annotated[bool, typer.Option(help="Reject conversations without a user turn.")] = False,
    train_marker_only: Annotated[
        bool, typer.Option(help="Keep turns whose trained text is only the end-of-turn marker.")
    ] = False,
    render_timeout: Annotated[float, typer.Option(help="Seconds one record's renders may take.")] = 10.0,
    dedup: Annotated[bool, typer.Option(help="Drop records whose conversation an earlier record has.")] = False,
    min_trainable_tokens: Annotated[int | None, typer.Option(help="Drop examples with fewer trained tokens.")] = None,
    max_trainable_tokens: Annotated[int | None, typer.Option(help="Drop examples with more trained tokens.")] = None,
    dataset_info: Annotated[
        Path | None, typer.Option(help="LLaMA-Factory's dataset_info.json: read the --dataset entries from it.")
    ] = None,
    dataset: Annotated[list[str], typer.Option(help="Names in --dataset-info (a,b or repeated).")] = [],  # noqa: B006
    eval_fraction: Annotated[
        float | None, typer.Option(help="Hold out this fraction of each source's records.")
    ] = None,
    eval_sources: Annotated[list[str], typer.Option(help="Hold out these sources whole (a,b).")] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(help="Seed of sampling and the eval split.")] = 0,
    mixture_examples: Annotated[
        int | None, typer.Option(help="Examples drawn from the weighted sources (default: none repeated).")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 2 at the first rejected record.")] = False,
    shard_size: Annotated[int, typer.Option(help="Examples per Parquet shard.")] = 50_000,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT_DIR.")] = False,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes (0, the default: every core; one process for input under 4 MiB). "
            "Output is the same bytes for any N."
        ),
    ] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run (same bytes as uninterrupted).")] = False,
    engine: Annotated[str, typer.Option(help="local|ray: where batches are prepared. Output is the same.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="With --engine ray: a running cluster (auto or HOST:PORT); default: local.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Turn conversations into (input_ids, labels) Parquet shards with a manifest and rejects."""
    from sftprep.preparation.manifest import Manifest
    from sftprep.preparation.options import resolve_options
    from sftprep.preparation.progress import RunProgress
    from sftprep.preparation.run import prepare as run
    from sftprep.preparation.summary import print_summary, require_examples
    from sftprep.read.system_prompt import load_system_prompt

    if not inputs and config is None and dataset_info is None and not dataset:
        raise typer.BadParameter(
            "no input files given: pass INPUT... (files, directories, globs), --config data.yaml, or "
            "--dataset-info dataset_info.json --dataset NAME",
            param_hint="INPUTS",
        )
    flags: dict[str, Any] = {
        "inputs": [str(p) for p in inputs or []],
        "out_dir": str(out_dir),
        "tokenizer": tokenizer,
        "template": template,
        "template_name": template_name,
        "template_vars": _parse_pairs(template_var, "--template-var", typed=True),
        "format": format,
        "columns": _pairs(columns, "--columns"),
        "tags": _pairs(tags, "--tags"),
        "role_map": _parse_pairs(role_map, "--role-map"),
        "merge_consecutive": merge_consecutive,
        "system_prompt": load_system_prompt(system_prompt) if system_prompt else None,
        "system_policy": system_policy,
        "mask": mask,
        "train_on_eos": train_on_eos,
        "train_reasoning": train_reasoning,
        "train_tool_calls": train_tool_calls,
        "max_length": max_length,
        "max_chars": max_chars,
        "truncation": truncation,
        "reasoning_mode": reasoning_mode,
        "require_user_turn": require_user_turn,
        "train_marker_only": train_marker_only,
        "render_timeout": render_timeout,
        "dedup": dedup,
        "min_trainable_tokens": min_trainable_tokens,
        "max_trainable_tokens": max_trainable_tokens,
        "eval_fraction": eval_fraction,
        "eval_sources": _list(eval_sources),
        "seed": seed,
        "mixture_examples": mixture_examples,
        "strict": strict,
        "shard_size": shard_size,
        "overwrite": overwrite,
        "workers": workers,
        "resume": resume,
    }
    params = {"template_vars": "template_var"}
    given = {k for k in flags if _given(ctx, params.get(k, k))}
    opts, cli_only = resolve_options(
        flags, given, str(config) if config else None, str(dataset_info) if dataset_info else None, _list(dataset)
    )
    engine = cli_only.get("engine", engine)
    ray_address = cli_only.get("ray_address", ray_address)
    quiet = bool(cli_only.get("quiet", quiet))
    out_dir = Path(opts.out_dir)
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine {engine!r}: expected local or ray")
    with RunProgress("prepare", quiet=quiet, console=err) as progress:
        if engine == "ray":
            from sftprep.preparation.ray_engine import prepare_ray

            manifest = prepare_ray(opts, ray_address, on_batch=progress.update)
        else:
            manifest = run(opts, on_batch=progress.update, keep=_KEPT)
    typed = Manifest.from_dict(manifest)
    if manifest.get("up_to_date"):
        if not quiet:
            out.print(f"{out_dir} is up to date (same inputs, options, tokenizer, template and version): nothing to do")
    elif not quiet:
        print_summary(typed, out_dir, out)
    require_examples(typed, out_dir)


@app.command()
def inspect(
    out_dir: Annotated[Path, typer.Argument(help="A directory written by `sftprep prepare`.")],
    index: Annotated[list[int], typer.Option(help="Example index (repeatable with --html).")] = [],  # noqa: B006
    html: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here.")] = None,
    sample: Annotated[int | None, typer.Option(help="With --html: N random examples.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for --sample.")] = 0,
) -> None:
    """Show examples: trained and masked tokens in two colours, token boundaries and roles visible."""
    if html is not None:
        from sftprep.report import html_report

        path = html_report(out_dir, html, sample, index or None, seed)
        out.print(f"[green]wrote[/] {path}")
        return
    from sftprep.report.inspect import show_example

    show_example(out_dir, index[0] if index else 0, out)


@app.command()
def stats(out_dir: Annotated[Path, typer.Argument(help="A directory written by `sftprep prepare`.")]) -> None:
    """Dataset health: length and trainable-fraction histograms, rejects, truncation, splits, checks."""
    from sftprep.report import stats_command

    stats_command(out_dir, out)


@tokenizer_app.command("train")
def tokenizer_train(
    files: Annotated[list[Path], typer.Argument(help="Conversation files (any supported format).")],
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size.")] = 8192,
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Where to write the tokenizer.")] = Path("tok"),
    template: Annotated[str, typer.Option(help="Built-in template whose markers become special tokens.")] = "chatml",
    min_frequency: Annotated[int, typer.Option(help="Minimum pair frequency.")] = 2,
) -> None:
    """Train a byte-level BPE over the rendered conversations (template markers as special tokens)."""
    from sftprep.tokenize.corpus import train_from_files

    path = train_from_files([str(f) for f in files], vocab_size, out_dir, template, min_frequency)
    out.print(f"[green]wrote[/] {path}")


@template_app.command("check")
def template_check(
    template: Annotated[str | None, typer.Argument(help="Built-in name, .jinja, tokenizer_config.json or dir.")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer whose special tokens fit the template.")] = None,
    template_var: Annotated[list[str], typer.Option(help="Extra template variable KEY=VALUE.")] = [],  # noqa: B006
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Render probe conversations: prefix preservation, end-of-turn marker, trained text per turn, errors."""
    import dataclasses
    import json

    from sftprep.report.template_check import check_template, print_report

    report = check_template(template, tokenizer, _parse_pairs(template_var, "--template-var", typed=True))
    if json_out:
        out.print_json(json.dumps({**dataclasses.asdict(report), "prefix_preserving": report.prefix_preserving}))
    else:
        print_report(report, out)


def _register_training() -> None:
    """`train`, `generate` and `demo` need torch (the `train` extra): register them only when it imports, and
    not for a command line that runs `prepare` (building the train command's options is 35 ms of its start-up)."""
    if sys.argv[1:2] == ["prepare"]:
        return
    try:
        from sftprep.train.commands import register
    except ImportError:
        return
    register(app)


_register_training()


_KEPT: list[object] = []  # what a local `prepare` built: `entry` ends the process without freeing it


def entry() -> None:
    """The `sftprep` executable (and `python -m sftprep`): `main`, then, after a local `prepare` that succeeded,
    the process ends at once (os._exit, output flushed). The run has written, closed and renamed everything;
    what is left is freeing its tokenizer (36 ms for Llama 3's 128k-token tiktoken tables) and tearing the
    interpreter down, ~0.1 s of a 0.5 s run of a small file. `main` is what tests call in-process."""
    try:
        main()
    except SystemExit as e:
        if e.code not in (None, 0) or not _KEPT:
            raise
    if _KEPT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main() -> None:
    try:
        rv = app(standalone_mode=False)
        if isinstance(rv, int) and rv != 0:  # typer turns Ctrl-C into Exit(130) and returns it
            if rv == 130:
                err.print("interrupted; `sftprep prepare ... --resume` continues from the last closed shard")
            sys.exit(rv)
    except SftprepError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as e:  # click's usage errors (typer vendors its own click: match by shape)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(2)
        if type(e).__name__ == "Exit" and hasattr(e, "exit_code"):
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    entry()
