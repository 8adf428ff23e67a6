"""The end-of-run summary printed by `sftprep prepare`."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from sftprep.errors import NoExamplesError
from sftprep.preparation.manifest import Manifest


def print_summary(manifest: Manifest, out_dir: Path, console: Console) -> None:
    from rich.table import Table  # printed without --quiet only

    m = manifest
    table = Table(title=f"sftprep prepare -> {escape(str(out_dir))}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("count", justify="right")
    rows = [
        ("records read", m.records_read),
        ("examples written", m.examples_written),
        ("records rejected", m.records_rejected),
        ("tokens", m.tokens),
        ("trainable tokens", f"{m.trainable_tokens} ({100 * m.trainable_tokens / (m.tokens or 1):.1f}%)"),
        ("truncated", m.truncated),
        ("straddling tokens (joint encoding would differ)", m.straddling_tokens),
        ("conversations split per turn (template)", m.split_conversations),
        ("conversations split per turn (tokenization)", m.split_for_tokenization),
        ("special-token strings in content (encoded as text)", m.special_tokens_in_content),
    ]
    for what, n in rows:
        table.add_row(what, str(n))
    console.print(table)
    _sources(m, out_dir, console)
    for reason, n in m.rejected_by_reason.items():
        console.print(f"  [yellow]rejected[/] {n} x {escape(reason)}")
    for reason, n in m.examples_dropped_by_reason.items():
        console.print(f"  [yellow]dropped examples[/] {n} x {reason}")
    if m.reasoning_not_rendered:
        console.print(
            f"  [yellow]warning:[/] {m.reasoning_not_rendered} assistant message(s) have reasoning the template "
            "does not render: it is neither context nor trained (use a template that renders reasoning_content, "
            "e.g. qwen3, or fold it into the content)"
        )
    _turn_warnings(m, console)
    t = m.template
    if t.end_of_turn and not t.end_of_turn_is_token:
        console.print(
            f"  [yellow]warning:[/] the end-of-turn text {escape(repr(t.end_of_turn))} is not one token of the "
            "tokenizer: generation would not stop on it"
        )
    if t.missing_markers_hint:
        console.print(f"  [cyan]note:[/] {escape(t.missing_markers_hint)}")
    if t.end_of_turn is None:
        console.print(
            f"  [yellow]warning:[/] template {escape(t.name)} renders no end-of-turn marker or next-message header "
            "after a reply: the model is not taught to stop (stop it at inference with a stop string)"
        )
    if m.records_rejected:
        console.print(f"  [yellow]warning:[/] see {escape(str(out_dir / 'rejects.jsonl'))} for each rejected record")


def _sources(m: Manifest, out_dir: Path, console: Console) -> None:
    """Per source (when there are several, or sampling, or an eval split): read, rejected, examples, ratios."""
    if len(m.sources) < 2 and m.eval is None and not any(s.sampling for s in m.sources):
        return
    from rich.table import Table

    table = Table(title="sources", title_justify="left")
    for col in ("source", "sampling", "read", "rejected", "prepared", "eval", "written", "requested", "realised"):
        table.add_column(col, justify="left" if col in ("source", "sampling") else "right")
    for s in m.sources:
        sampling = ", ".join(f"{k} {v:g}" for k, v in (s.sampling or {}).items()) or "all once"
        table.add_row(
            escape(s.name), sampling, str(s.records_read), str(s.records_rejected), str(s.examples_prepared),
            str(s.eval_examples), str(s.examples), f"{s.requested_ratio:.2%}", f"{s.realised_ratio:.2%}",
        )  # fmt: skip
    console.print(table)
    if m.eval:
        where = escape(str(out_dir / m.eval.dir))
        console.print(f"  eval split: {m.eval.records} records, {m.eval.examples} examples in {where}")


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
    "stop:none": "trained turns with no stop token: the model is not taught to stop",
    "stop_not_special": "trained turns whose stop is not a token of the tokenizer",
}


def _turn_warnings(manifest: Manifest, console: Console) -> None:
    turns = manifest.turns
    for key, text in _TURN_NOTES.items():
        if turns.get(key):
            console.print(f"  [cyan]note:[/] {turns[key]} {text}")
    for key, text in _TURN_WARNINGS.items():
        if turns.get(key):
            console.print(f"  [yellow]warning:[/] {turns[key]} {text}")
    for reason, n in manifest.turns_rejected_by_reason.items():
        console.print(f"  [yellow]turns left out[/] {n} x {escape(reason)} (in rejects.jsonl with their turn)")


def require_examples(manifest: Manifest, out_dir: Path) -> None:
    """Raise NoExamplesError (exit 3) when OUT_DIR holds no example, saying why and where to look."""
    if manifest.examples_written > 0:
        return
    raise NoExamplesError(no_examples_message(manifest, Path(out_dir)))


def no_examples_message(manifest: Manifest, out_dir: Path) -> str:
    read = manifest.records_read
    if not read:
        return f"no example written to {out_dir}: the inputs hold no record (empty files?)"
    reasons = {**manifest.rejected_by_reason, **manifest.examples_dropped_by_reason}
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
