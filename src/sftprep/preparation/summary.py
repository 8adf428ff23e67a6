"""The end-of-run summary printed by `sftprep prepare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sftprep.errors import NoExamplesError


def print_summary(manifest: dict[str, Any], out_dir: Path, console: Console) -> None:
    table = Table(title=f"sftprep prepare -> {escape(str(out_dir))}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("count", justify="right")
    trainable = manifest["trainable_tokens"]
    tokens = manifest["tokens"] or 1
    rows = [
        ("records read", manifest["records_read"]),
        ("examples written", manifest["examples_written"]),
        ("records rejected", manifest["records_rejected"]),
        ("tokens", manifest["tokens"]),
        ("trainable tokens", f"{trainable} ({100 * trainable / tokens:.1f}%)"),
        ("truncated", manifest["truncated"]),
        ("straddling tokens (joint encoding would differ)", manifest["straddling_tokens"]),
        ("conversations split per turn (template)", manifest["split_conversations"]),
        ("conversations split per turn (tokenization)", manifest["split_for_tokenization"]),
        ("special-token strings in content (encoded as text)", manifest["special_tokens_in_content"]),
    ]
    for what, n in rows:
        table.add_row(what, str(n))
    console.print(table)
    for reason, n in manifest["rejected_by_reason"].items():
        console.print(f"  [yellow]rejected[/] {n} x {escape(reason)}")
    for reason, n in manifest.get("examples_dropped_by_reason", {}).items():
        console.print(f"  [yellow]dropped examples[/] {n} x {reason}")
    if manifest.get("reasoning_not_rendered"):
        console.print(
            f"  [yellow]warning:[/] {manifest['reasoning_not_rendered']} assistant message(s) have reasoning the "
            "template does not render: it is neither context nor trained (use a template that renders "
            "reasoning_content, e.g. qwen3, or fold it into the content)"
        )
    _turn_warnings(manifest, console)
    template = manifest.get("template", {})
    if template.get("end_of_turn") and template.get("end_of_turn_is_token") is False:
        console.print(
            f"  [yellow]warning:[/] the end-of-turn text {escape(repr(template['end_of_turn']))} is not one token of "
            "the tokenizer: generation would not stop on it (add it as a special token to the tokenizer)"
        )
    if template.get("eos_appended"):
        console.print(
            f"  [yellow]warning:[/] template {escape(str(template.get('name')))} has no end-of-turn marker: the "
            f"tokenizer's eos {escape(repr(manifest['tokenizer']['eos_token']))} is appended to each trained turn"
        )
    elif template.get("end_of_turn") is None:
        console.print(
            "  [yellow]warning:[/] the template has no end-of-turn marker and the tokenizer no eos: "
            "the model is not taught to stop"
        )
    if manifest["records_rejected"]:
        where = escape(str(out_dir / "rejects.jsonl"))
        console.print(f"  [yellow]warning:[/] see {where} for each rejected record and why")


_TURN_NOTES = {
    "mode:switch": "trained turns rendered with a reasoning switch of the template (recorded per example in "
    "the template_vars column)",
    "mode:aligned": "trained turns whose prompt the template renders differently from the turn (header "
    "whitespace, a pre-filled empty think block): trained after the prompt as the model sees it",
    "reasoning_dropped": "trained turns whose reasoning no setting of the template renders after its prompt: "
    "trained without it",
}
_TURN_WARNINGS = {
    "content_not_rendered": "trained turns whose content the template does not render (not trained)",
    "tool_calls_not_rendered": "tool calls the template does not render (not trained)",
    "stop:eos_appended": "trained turns ended by the tokenizer's eos, which the template never renders",
    "stop:none": "trained turns with no stop token: the model is not taught to stop",
    "stop_not_special": "trained turns whose stop is not a token of the tokenizer",
}


def _turn_warnings(manifest: dict[str, Any], console: Console) -> None:
    turns = manifest.get("turns", {})
    for key, text in _TURN_NOTES.items():
        if turns.get(key):
            console.print(f"  [cyan]note:[/] {turns[key]} {text}")
    for key, text in _TURN_WARNINGS.items():
        if turns.get(key):
            console.print(f"  [yellow]warning:[/] {turns[key]} {text}")
    for reason, n in manifest.get("turns_rejected_by_reason", {}).items():
        console.print(f"  [yellow]turns left out[/] {n} x {escape(reason)} (in rejects.jsonl with their turn)")


def require_examples(manifest: dict[str, Any], out_dir: Path) -> None:
    """Raise NoExamplesError (exit 3) when OUT_DIR holds no example, saying why and where to look."""
    if manifest.get("examples_written", 0) > 0:
        return
    raise NoExamplesError(no_examples_message(manifest, Path(out_dir)))


def no_examples_message(manifest: dict[str, Any], out_dir: Path) -> str:
    read = manifest.get("records_read", 0)
    if not read:
        return f"no example written to {out_dir}: the inputs hold no record (empty files?)"
    reasons = {**manifest.get("rejected_by_reason", {}), **manifest.get("examples_dropped_by_reason", {})}
    top = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    first = first_reject(out_dir / "rejects.jsonl")
    return (
        f"no example written to {out_dir}: all {read} records were rejected ({top})"
        + (f". The first: {first}" if first else "")
        + f". Each rejected record and why: {out_dir / 'rejects.jsonl'}"
    )


def first_reject(path: Path) -> str | None:
    """The message of the first line of rejects.jsonl (it names file:line and the fix), or None."""
    try:
        with path.open(encoding="utf-8") as f:
            return str(json.loads(f.readline())["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
