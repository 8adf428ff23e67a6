"""Entry points for the CLI (registered by `sftprep.cli`): `inspect --html` and `stats`."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sftprep.api import read_manifest
from sftprep.errors import ConfigError
from sftprep.report.health import compute_health
from sftprep.report.html import render_page
from sftprep.report.plots import health_plots
from sftprep.report.terminal import print_health
from sftprep.report.views import components, count_examples, example_views, read_rows, select_indices


def html_report(
    out_dir: Path, html_path: Path, sample: int | None = None, indices: list[int] | None = None, seed: int = 0
) -> Path:
    """Write the self-contained HTML report of OUT_DIR to `html_path`; returns the path.

    Shows `indices` (--index I...), or `sample` examples drawn with `seed` (--sample N), or else the
    first 20; always the dataset health section. Raises ConfigError for bad --index/--sample values.
    """
    out_dir = require_out_dir(out_dir)
    manifest = read_manifest(out_dir)
    total = count_examples(out_dir, manifest["shards"])
    order = select_indices(total, sample, indices, seed)
    tok, template = components(manifest)
    examples = example_views(manifest, read_rows(out_dir, manifest["shards"], order), order, tok, template)
    health = compute_health(out_dir, tok)
    plots = health_plots(health.length_histogram(), health.fraction_histogram())
    page = render_page(health, plots, examples, total)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page, encoding="utf-8")
    return html_path


def stats_command(out_dir: Path, console: Console) -> None:
    """Print the dataset health of OUT_DIR (`sftprep stats OUT_DIR`)."""
    print_health(compute_health(require_out_dir(out_dir)), console)


def require_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if not (out_dir / "manifest.json").is_file():
        raise ConfigError(f"{out_dir}: no manifest.json; expected a directory written by `sftprep prepare`")
    return out_dir
