"""Histograms as inline SVG (matplotlib's `svg` backend, no network) and as text bars for the terminal.

matplotlib is optional (the `report` extra): without it the HTML falls back to the text histogram.
"""

from __future__ import annotations

import io
import re

from sftprep.report.health import Histogram

BAR_COLOR = "#3b8f5a"
TEXT_BAR = "█"
_XML_HEAD = re.compile(r"<\?xml[^>]*\?>\s*|<!DOCTYPE[^>]*>\s*", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def histogram_svg(h: Histogram, slug: str) -> str:
    """An <svg> element (no XML prolog, no metadata) drawing `h`; `slug` keeps its ids unique in a page."""
    import matplotlib

    matplotlib.use("svg", force=True)
    from matplotlib.figure import Figure

    params = {"svg.fonttype": "none", "svg.hashsalt": f"sftprep-{slug}", "font.size": 9}
    with matplotlib.rc_context(params):
        fig = Figure(figsize=(4.8, 2.4), dpi=100)
        ax = fig.add_subplot()
        widths = [b - a for a, b in zip(h.edges, h.edges[1:])]
        ax.bar(h.edges[:-1], h.counts, width=widths, align="edge", color=BAR_COLOR, edgecolor="white", linewidth=0.5)
        ax.set_title(h.title)
        ax.set_xlabel(h.xlabel)
        ax.set_ylabel("examples")
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = _METADATA.sub("", _XML_HEAD.sub("", buf.getvalue()))
    return svg.replace("<svg ", f'<svg class="plot" id="plot-{slug}" role="img" aria-label="{h.title}" ', 1)


def text_histogram(h: Histogram, width: int = 40, integer_edges: bool = False) -> list[tuple[str, int, str]]:
    """(bin label, count, bar) rows, bars scaled so the largest count spans `width` characters."""
    peak = max(h.counts, default=0) or 1
    rows = []
    for a, b, n in zip(h.edges, h.edges[1:], h.counts):
        label = f"{int(a)}-{int(b) - 1}" if integer_edges else f"{a:.2f}-{b:.2f}"
        bar = TEXT_BAR * round(width * n / peak) if n else ""
        rows.append((label, n, bar or ("▏" if n else "")))
    return rows


def text_histogram_block(h: Histogram, integer_edges: bool) -> str:
    """A <pre> text histogram: the HTML fallback when matplotlib is not installed."""
    lines = [f"{h.title} ({h.xlabel})"]
    lines += [f"{label:>13} {n:>8} {bar}" for label, n, bar in text_histogram(h, integer_edges=integer_edges)]
    return '<pre class="hist">' + "\n".join(lines) + "</pre>"


def health_plots(length: Histogram, fraction: Histogram) -> list[str]:
    """Inline SVG plots of the two histograms, or text histograms without matplotlib."""
    if not have_matplotlib():
        note = '<p class="note">matplotlib is not installed (pip install "sftprep[report]"): text histograms</p>'
        return [note + text_histogram_block(length, True), text_histogram_block(fraction, False)]
    return [histogram_svg(length, "length"), histogram_svg(fraction, "fraction")]
