"""`sftprep stats OUT_DIR`: the health section printed with rich (tables and text histograms)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sftprep.report.health import Check, Health, Histogram
from sftprep.report.plots import text_histogram

MARKS = {True: ("✓", "green"), False: ("✗", "bold red"), None: ("i", "blue")}


def _kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(Text(k), Text(v))
    return table


def rejects_table(h: Health) -> Table:
    table = Table(title="rejected records by reason", title_justify="left", title_style="bold")
    table.add_column("reason")
    table.add_column("manifest", justify="right")
    table.add_column("rejects.jsonl", justify="right")
    for reason, a, b in h.rejected_rows():
        style = "" if a == b else "bold red"
        table.add_row(Text(reason), str(a), str(b), style=style)
    for reason, a, b in h.dropped_rows():
        style = "" if b is None or a == b else "bold red"
        table.add_row(Text(f"{reason} (examples dropped)"), str(a), "-" if b is None else str(b), style=style)
    return table


def histogram_table(h: Histogram, integer_edges: bool, width: int = 40) -> Table:
    table = Table(title=f"{h.title} ({h.xlabel})", title_justify="left", title_style="bold", box=None)
    table.add_column("bin", justify="right", style="dim")
    table.add_column("examples", justify="right")
    table.add_column("", style="green", no_wrap=True)
    for label, n, bar in text_histogram(h, width=width, integer_edges=integer_edges):
        table.add_row(label, str(n), bar)
    return table


def sources_table(h: Health) -> Table:
    table = Table(title="sources", title_justify="left", title_style="bold")
    for i, col in enumerate(h.SOURCE_HEADER):
        table.add_column(col, justify="left" if i < 2 else "right")
    for row in h.source_rows():
        table.add_row(*(Text(c) for c in row))
    return table


def checks_table(checks: list[Check]) -> Table:
    table = Table(title="checks", show_header=False, title_justify="left", title_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("check")
    table.add_column("detail", overflow="fold")
    for c in checks:
        mark, style = MARKS[c.ok]
        table.add_row(Text(mark, style=style), Text(c.name), Text(c.detail))
    return table


def template_table(h: Health) -> Table:
    t = h.template
    marker = "unknown" if t.end_of_turn is None else repr(t.end_of_turn)
    rows = [
        ("name", f"{t.name} ({t.kind})"),
        ("sha256", t.sha256),
        ("end-of-turn marker", marker),
        ("tokenizer eos", repr(t.eos_token)),
        ("--mask", t.mask),
        ("prefix-preserving", t.prefix_detail()),
    ]
    table = Table(title="template", show_header=False, title_justify="left", title_style="bold")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in rows:
        table.add_row(k, Text(v))
    return table


def print_health(h: Health, console: Console) -> None:
    console.print(_kv_table(f"sftprep stats {h.out_dir}", h.counts()))
    if h.show_sources():
        console.print(sources_table(h))
    console.print(rejects_table(h) if h.rejected_rows() or h.dropped_rows() else "no record was rejected")
    console.print(_kv_table("lengths", h.length_summary()))
    console.print(histogram_table(h.length_histogram(bins=15), integer_edges=True))
    console.print(histogram_table(h.fraction_histogram(bins=10), integer_edges=False))
    console.print(template_table(h))
    console.print(checks_table(h.checks()))
