"""The self-contained HTML report: inline CSS, JS and SVG, no network.

Each token is an `<i>` whose class says trained (`t`) or masked (`m`) and whose `data-id` holds its id; a
small inline script shows id, label and role on hover. Tokens sit in role spans (`<span class=rs
data-role=...>`) that start with a role label. All text goes through `html.escape`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable

from sftprep.report.assets import CSS, JS
from sftprep.report.health import Check, Health
from sftprep.report.views import ExampleView

GENERATOR = "<meta name=generator content=sftprep-report>"  # `inspect --html` replaces only files with this
MAX_TOKENS_SHOWN = 8_192  # per example; the rest is summarised, to keep --sample 50 of long examples small

_ROLE_SAFE = re.compile(r"[^a-z0-9_-]")


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def visible(text: str) -> str:
    """Token text with whitespace and invisible characters made visible (before escaping)."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("↵\n")
        elif ch == "\t":
            out.append("⇥")
        elif ch == "\r":
            out.append("␍")
        else:
            cat = unicodedata.category(ch)
            if cat == "Cs":
                out.append("\ufffd")
            elif cat in ("Cc", "Cf", "Zl", "Zp"):
                out.append(f"⟨U+{ord(ch):04X}⟩")
            else:
                out.append(ch)
    return "".join(out)


def role_class(role: str) -> str:
    return "r-" + (_ROLE_SAFE.sub("", role.lower()) or "unknown")


def tokens_html(ev: ExampleView) -> str:
    parts: list[str] = []
    role: str | None = None
    for t in ev.tokens[:MAX_TOKENS_SHOWN]:
        if t.role != role:
            if role is not None:
                parts.append("</span>")
            role = t.role
            name = role or "unknown"
            parts.append(f'<span class="rs {role_class(name)}" data-role="{esc(name)}"><b class=rl>{esc(name)}</b>')
        cls = ("t" if t.trained else "m") if t.text != "\ufffd" else ('"t c"' if t.trained else '"m c"')
        parts.append(f"<i class={cls} data-id={int(t.id)}>{esc(visible(t.text))}</i>")  # c: a character's next bytes
    if role is not None:
        parts.append("</span>")
    return "".join(parts)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def example_html(ev: ExampleView) -> str:
    n = len(ev.tokens)
    turn = "whole conversation" if ev.turn < 0 else f"assistant turn {ev.turn}"
    head = (
        f"#{ev.index} · <span class=src>{esc(ev.source_file)}:{ev.source_line}</span> · {turn} · "
        f"{n} tokens · {ev.n_trained} trained ({_percent(ev.n_trained, n)})"
    )
    notes = []
    if not ev.roles_known:
        notes.append("source record unavailable or changed: roles unknown, tokens decoded one by one")
    if n > MAX_TOKENS_SHOWN:
        rest = ev.tokens[MAX_TOKENS_SHOWN:]
        notes.append(f"{len(rest)} more tokens not shown ({sum(t.trained for t in rest)} of them trained)")
    note = "".join(f"<p class=note>{esc(x)}</p>" for x in notes)
    return (
        f'<article class=ex id="ex-{ev.index}" data-index={ev.index}><h3>{head}</h3>{note}'
        f"<div class=tk>{tokens_html(ev)}</div></article>"
    )


def nav_html(examples: list[ExampleView], total: int) -> str:
    items = []
    for ev in examples:
        name = ev.source_file.replace("\\", "/").rsplit("/", 1)[-1]
        turn = "" if ev.turn < 0 else f"turn {ev.turn} · "
        items.append(
            f'<li><a href="#ex-{ev.index}" title="{esc(ev.source_file)}:{ev.source_line}"><b>#{ev.index}</b> '
            f"<span class=src>{esc(name)}:{ev.source_line}</span></a>"
            f"<br><small>{turn}{len(ev.tokens)} tok · {ev.n_trained} trained</small></li>"
        )
    return (
        '<nav id=nav><strong>sftprep report</strong><h2><a href="#health">Dataset health</a></h2>'
        f'<h2><a href="#examples">Examples</a> ({len(examples)} of {total})</h2><ul>{"".join(items)}</ul></nav>'
    )


def _numeric(v: object) -> bool:
    return isinstance(v, int) or bool(re.match(r"\d", str(v)))


def _table(header: Iterable[str], rows: Iterable[Iterable[object]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f"<td class=n>{esc(v)}</td>" if _numeric(v) else f"<td>{esc(v)}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="{cls}"><tr>{head}</tr>{"".join(body)}</table>'


def _check_row(c: Check) -> str:
    cls = "info" if c.ok is None else ("ok" if c.ok else "fail")
    return f"<tr class={cls}><td>{esc(c.name)}</td><td>{esc(c.detail)}</td></tr>"


def rejects_html(h: Health) -> str:
    rows = "".join(
        f'<tr class=reject data-reason="{esc(r)}"><td>{esc(r)}</td><td class=n>{a}</td><td class=n>{b}</td></tr>'
        for r, a, b in h.rejected_rows()
    )
    if not rows:
        return "<p>No record was rejected.</p>"
    head = "<tr><th>reason</th><th>manifest</th><th>rejects.jsonl</th></tr>"
    return f"<table class=rejects>{head}{rows}</table>"


def template_html(h: Health) -> str:
    t = h.template
    marker = "<em>unknown</em>" if t.end_of_turn is None else f"<code>{esc(visible(t.end_of_turn))}</code>"
    rows = [
        ("name", esc(t.name)),
        ("kind", esc(t.kind)),
        ("sha256", f"<code>{esc(t.sha256)}</code>"),
        ("end-of-turn marker", marker),
        ("tokenizer eos", f"<code>{esc(t.eos_token)}</code>"),
        ("--mask", esc(t.mask)),
        ("prefix-preserving", esc(t.prefix_detail())),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class=template>{body}</table>"


def health_html(h: Health, plots: list[str]) -> str:
    dropped = h.dropped_rows()
    parts = [
        "<section id=health><h2>Dataset health</h2><div class=plots>",
        *(f"<figure>{p}</figure>" for p in plots),
        "</div><h3>Counts</h3>",
        _table(("what", "count"), h.counts(), "counts"),
        *(["<h3>Sources</h3>", _table(h.SOURCE_HEADER, h.source_rows(), "sources")] if h.show_sources() else []),
        "<h3>Rejected records by reason</h3>",
        rejects_html(h),
    ]
    if dropped:
        rows = [(r, a, "-" if b is None else b) for r, a, b in dropped]
        header = ("reason", "manifest", "rejects.jsonl (turn lines)")
        parts += ["<h3>Dropped examples (turns) by reason</h3>", _table(header, rows, "dropped")]
    parts += [
        "<h3>Lengths</h3>",
        _table(("what", "value"), h.length_summary(), "lengths"),
        "<h3>Template</h3>",
        template_html(h),
        "<h3>Checks</h3><table class=checks>",
        *(_check_row(c) for c in h.checks()),
        "</table></section>",
    ]
    return "".join(parts)


def legend_html() -> str:
    roles = "".join(
        f'<span class="rs {role_class(r)}"><b class=rl>{r}</b></span>'
        for r in ("system", "user", "assistant", "tool", "template")
    )
    return (
        '<p class=legend><span><span class="sw" style="background:var(--t0)">trained</span> '
        '<span class="sw" style="background:var(--m0)">masked (label -100)</span></span>'
        f"<span>roles: {roles}</span><span>alternating shades and thin rules mark token boundaries; "
        "hover a token for its id and label</span></p>"
    )


def render_page(h: Health, plots: list[str], examples: list[ExampleView], total: int) -> str:
    m = h.manifest
    title = f"sftprep report: {h.out_dir}"
    meta = (
        f"sftprep {esc(m.sftprep_version)} · tokenizer <span class=src>{esc(m.tokenizer.path)}</span>"
        f" · template {esc(m.template.name)} · {m.examples_written} examples"
    )
    body = "".join(example_html(ev) for ev in examples)
    return (
        f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>{GENERATOR}"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"{nav_html(examples, total)}<main><h1>{esc(title)}</h1><p class=meta>{meta}</p>"
        f"{health_html(h, plots)}<section id=examples><h2>Examples ({len(examples)} of {total})</h2>"
        f"{legend_html()}{body}</section></main><div id=tip role=tooltip hidden></div>"
        f"<script>{JS}</script></body></html>\n"
    )
