"""`sftprep inspect`: one example's tokens with trained/masked colours, boundaries and role labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console
from rich.text import Text

from sftprep.errors import ConfigError
from sftprep.preparation.manifest import open_out_dir, read_manifest
from sftprep.preparation.summary import require_examples
from sftprep.report.views import TokenView, components, example_views

TRAINED = ("bold black on green3", "bold black on dark_olive_green2")
MASKED = ("grey85 on grey23", "grey85 on grey35")


def read_example(out_dir: Path, index: int) -> dict[str, Any]:
    """Example `index` of OUT_DIR (checked: ConfigError for a bad OUT_DIR or index, NoExamplesError, exit 3,
    for an OUT_DIR without examples)."""
    out_dir, manifest = open_out_dir(out_dir)
    require_examples(manifest, out_dir)
    if index < 0:
        raise ConfigError(f"--index {index}: expected 0 or more (0 is the first example)")
    seen = 0
    for name in manifest.shards:
        pf = pq.ParquetFile(out_dir / name)
        n = pf.metadata.num_rows
        if index < seen + n:
            return pf.read().slice(index - seen, 1).to_pylist()[0]
        seen += n
    raise ConfigError(f"--index {index}: {out_dir} has {seen} examples; give --index 0 to {seen - 1}")


def token_views(out_dir: Path, row: dict[str, Any]) -> list[TokenView]:
    """Tokens with their text and role, re-deriving roles by re-rendering the source record (the same
    code as the HTML report: report/views.py)."""
    manifest = read_manifest(out_dir)
    tok, template = components(manifest)
    return example_views(manifest, {0: row}, [0], tok, template)[0].tokens


def render_tokens(views: list[TokenView]) -> Text:
    text = Text()
    role = None
    for k, v in enumerate(views):
        if v.role and v.role != role:
            text.append(f" [{v.role}] ", style="bold magenta")
            role = v.role
        shown = v.text.replace("\n", "↵\n").replace("\t", "⇥")
        style = (TRAINED if v.trained else MASKED)[k % 2]
        text.append(shown, style=style)
    return text


def show_example(out_dir: Path, index: int, console: Console) -> None:
    row = read_example(out_dir, index)
    views = token_views(out_dir, row)
    n_trained = sum(v.trained for v in views)
    turn = row["turn"]
    which = "" if turn < 0 else f" (assistant turn {turn})"
    console.print(
        f"[bold]example {index}[/] from {row['source_file']}:{row['source_line']}{which}: "
        f"{len(views)} tokens, {n_trained} trained"
    )
    legend = Text()
    legend.append(" trained ", style=TRAINED[0])
    legend.append(" ")
    legend.append(" masked ", style=MASKED[0])
    legend.append("  (alternating shades mark token boundaries; [role] labels the span)")
    console.print(legend)
    console.print(render_tokens(views))
