"""Histograms as inline SVG, written here (no plotting library: the default install draws them, the bytes are
the same on every machine), and as text bars for the terminal.

Why not matplotlib: two bar charts need rectangles, a few labels and two axes; matplotlib is a large optional
dependency (with its font cache and backends) for that, and its SVG embeds run-dependent ids. These SVGs are
a few kilobytes, deterministic and self-contained.
"""

from __future__ import annotations

import html

from sftprep.report.health import Histogram

BAR_COLOR = "#3b8f5a"
TEXT_BAR = "█"
WIDTH, HEIGHT = 480, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 26, 44  # plot area margins


def _num(x: float) -> str:
    """A coordinate with 2 decimals, trailing zeros dropped (stable text)."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _label(x: float, integer: bool) -> str:
    if integer:
        return f"{round(x):,}"
    return f"{x:.2f}"


def histogram_svg(h: Histogram, slug: str, integer_edges: bool = False) -> str:
    """An <svg> element drawing `h` as bars over its edges, with axes, ticks and titles (`slug` keeps its ids
    unique in a page)."""
    x0, x1, y0, y1 = _LEFT, WIDTH - _RIGHT, HEIGHT - _BOTTOM, _TOP
    lo, hi = (h.edges[0], h.edges[-1]) if h.edges else (0.0, 1.0)
    span = (hi - lo) or 1.0
    peak = max(h.counts, default=0) or 1

    def x(v: float) -> float:
        return x0 + (v - lo) / span * (x1 - x0)

    def y(n: float) -> float:
        return y0 - n / peak * (y0 - y1)

    esc = html.escape
    parts = [
        f'<svg class="plot" id="plot-{esc(slug)}" role="img" aria-label="{esc(h.title)}" '
        f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10">',
        f"<title>{esc(h.title)}</title>",
        f'<text x="{WIDTH / 2:g}" y="15" text-anchor="middle" font-size="12">{esc(h.title)}</text>',
    ]
    for a, b, n in zip(h.edges, h.edges[1:], h.counts):
        if n:
            left, right = x(a), x(b)
            width = max(right - left - 0.5, 0.5)
            parts.append(
                f'<rect x="{_num(left)}" y="{_num(y(n))}" width="{_num(width)}" height="{_num(y0 - y(n))}" '
                f'fill="{BAR_COLOR}"><title>{esc(_label(a, integer_edges))} to {esc(_label(b, integer_edges))}: '
                f"{n} examples</title></rect>"
            )
    parts.append(f'<path d="M{x0} {y1}V{y0}H{x1}" fill="none" stroke="#555" stroke-width="1"/>')
    for frac in (0.0, 0.5, 1.0):  # y ticks: 0, half, the peak
        n = peak * frac
        parts.append(f'<path d="M{x0 - 4} {_num(y(n))}H{x0}" stroke="#555"/>')
        parts.append(f'<text x="{x0 - 6}" y="{_num(y(n) + 3)}" text-anchor="end">{esc(_label(n, True))}</text>')
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):  # x ticks at the edges' quarters
        v = lo + span * frac
        parts.append(f'<path d="M{_num(x(v))} {y0}V{y0 + 4}" stroke="#555"/>')
        tick = esc(_label(v, integer_edges))
        parts.append(f'<text x="{_num(x(v))}" y="{y0 + 15}" text-anchor="middle">{tick}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2:g}" y="{HEIGHT - 8}" text-anchor="middle">{esc(h.xlabel)}</text>')
    mid = (y0 + y1) / 2
    parts.append(f'<text x="14" y="{mid:g}" text-anchor="middle" transform="rotate(-90 14 {mid:g})">examples</text>')
    parts.append("</svg>")
    return "".join(parts)


def text_histogram(h: Histogram, width: int = 40, integer_edges: bool = False) -> list[tuple[str, int, str]]:
    """(bin label, count, bar) rows, bars scaled so the largest count spans `width` characters."""
    peak = max(h.counts, default=0) or 1
    rows = []
    for a, b, n in zip(h.edges, h.edges[1:], h.counts):
        label = f"{int(a)}-{int(b) - 1}" if integer_edges else f"{a:.2f}-{b:.2f}"
        bar = TEXT_BAR * round(width * n / peak) if n else ""
        rows.append((label, n, bar or ("▏" if n else "")))
    return rows


def health_plots(length: Histogram, fraction: Histogram) -> list[str]:
    """Inline SVG plots of the two histograms."""
    return [histogram_svg(length, "length", integer_edges=True), histogram_svg(fraction, "fraction")]
