"""Entry points for the CLI (registered by `sftprep.cli`): `inspect --html` and `stats`, and the checks
every command that reads an OUT_DIR makes first (`load_out_dir`)."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from sftprep.errors import ConfigError
from sftprep.preparation.manifest import open_out_dir as load_out_dir
from sftprep.preparation.summary import require_examples
from sftprep.report.health import compute_health
from sftprep.report.html import GENERATOR, render_page
from sftprep.report.plots import health_plots
from sftprep.report.terminal import print_health
from sftprep.report.views import components, count_examples, example_views, read_rows, select_indices


def html_report(
    out_dir: Path, html_path: Path, sample: int | None = None, indices: list[int] | None = None, seed: int = 0
) -> Path:
    """Write the self-contained HTML report of OUT_DIR to `html_path`; returns the path.

    Shows `indices` (--index I...), or `sample` examples drawn with `seed` (--sample N), or else the
    first 20; always the dataset health section. Raises ConfigError for bad --index/--sample values or an
    --html path that is a directory or a file other than an sftprep report, NoExamplesError (exit 3) for
    an OUT_DIR without examples.
    """
    html_path = Path(html_path)
    check_report_target(html_path)
    out_dir, manifest = load_out_dir(out_dir)
    require_examples(manifest, out_dir)
    total = count_examples(out_dir, manifest.shards)
    order = select_indices(total, sample, indices, seed)
    tok, template = components(manifest)
    examples = example_views(manifest, read_rows(out_dir, manifest.shards, order), order, tok, template)
    health = compute_health(out_dir, tok)
    plots = health_plots(health.length_histogram(), health.fraction_histogram())
    page = render_page(health, plots, examples, total)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    part = html_path.with_name(f".{html_path.name}.{os.getpid()}.tmp")
    part.write_text(page, encoding="utf-8")
    os.replace(part, html_path)  # a reader never sees half a report
    return html_path


def stats_command(out_dir: Path, console: Console) -> None:
    """Print the dataset health of OUT_DIR (`sftprep stats OUT_DIR`); NoExamplesError (exit 3) after it when
    OUT_DIR holds no example."""
    out_dir, manifest = load_out_dir(out_dir)
    print_health(compute_health(out_dir), console)
    require_examples(manifest, out_dir)


def check_report_target(path: Path) -> None:
    """`--html PATH` may be a new file or a report sftprep wrote; a directory or any other file is refused."""
    if path.is_dir():
        raise ConfigError(f"--html {path} is a directory; give a file name, e.g. --html {_free(path / 'report.html')}")
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not _is_report(path):
            raise ConfigError(
                f"--html {path} exists and is not a report sftprep wrote; sftprep will not overwrite it: give "
                f"another file name, e.g. --html {_free(path)}"
            )
        return
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--html {path}: {parent} is a file, not a directory; give another --html path")
            return


def _is_report(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return GENERATOR.encode() in f.read(512)
    except OSError:
        return False


def _free(path: Path) -> Path:
    """`path`, or the first of path-2, path-3... (same suffix) that does not exist."""
    stem, suffix = path.stem, path.suffix or ".html"
    candidate, n = path.with_suffix(suffix), 2
    while candidate.exists() or candidate.is_symlink():
        candidate, n = path.with_name(f"{stem}-{n}{suffix}"), n + 1
    return candidate
