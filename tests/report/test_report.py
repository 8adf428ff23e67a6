"""The inspection report: `inspect --html` (self-contained HTML) and `stats` (dataset health)."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT
from rich.console import Console

import sftprep
from sftprep.errors import ConfigError
from sftprep.report import health as health_mod
from sftprep.report import html as html_mod
from sftprep.report import html_report, stats_command

ROOT = REPO_ROOT
SAMPLE = ROOT / "examples" / "sample.jsonl"
HOSTILE = [
    {
        "messages": [
            {"role": "user", "content": "Is <script>alert('x')</script> & \"quoted\" <b>bold</b> ok? <|im_start|>"},
            {"role": "assistant", "content": "Escaped: </i></span><!-- c --> 'single' \u202e done."},
        ]
    }
]
TOKEN = re.compile(r'<i class="?(t|m)(?: c")? data-id=(\d+)>')
ARTICLE = re.compile(r'<article class=ex id="ex-(\d+)"')


def make_out_dir(tmp: Path, **options: Any) -> Path:
    """OUT_DIR from the bundled sample plus a record of hostile text, with the embedded default tokenizer."""
    hostile = tmp / "hostile.jsonl"
    hostile.write_text("".join(json.dumps(r) + "\n" for r in HOSTILE), encoding="utf-8")
    out = tmp / "out"
    sftprep.prepare([str(SAMPLE), str(hostile)], out_dir=str(out), tokenizer=None, **options)
    return out


def rows(out: Path) -> list[dict[str, Any]]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [r for name in manifest["shards"] for r in pq.read_table(out / name).to_pylist()]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_out_dir(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page(out_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    target = tmp_path_factory.mktemp("html") / "report.html"
    assert html_report(out_dir, target, sample=None, indices=None) == target
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # one file, nothing beside it
    return target.read_text(encoding="utf-8")


def articles(page: str) -> dict[int, str]:
    parts = ARTICLE.split(page)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def shown_text(fragment: str) -> str:
    parser = TagCounter()
    parser.feed(fragment)
    return "".join(parser.text)


class TagCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: dict[str, int] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_self_contained_no_external_urls(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//|@import|<link\b|<script[^>]+src", page, re.I)
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page


def test_every_token_shown_with_its_trained_class_and_id(out_dir: Path, page: str) -> None:
    data = rows(out_dir)
    shown = articles(page)
    assert sorted(shown) == list(range(len(data)))  # the default shows the first 20 (here: all)
    for i, body in shown.items():
        tokens = [(cls == "t", int(tid)) for cls, tid in TOKEN.findall(body)]
        expected = [(lab != -100, tid) for tid, lab in zip(data[i]["input_ids"], data[i]["labels"])]
        assert tokens == expected, f"example {i}"
    assert "<i class=t " in page and "<i class=m " in page
    assert '<i class="m c" ' in page  # the later bytes of one character (Chinese sample text)


def test_roles_labelled_and_navigation(out_dir: Path, page: str) -> None:
    roles = set(re.findall(r'<span class="rs r-[a-z]+" data-role="([a-z]+)"><b class=rl>\1</b>', page))
    assert roles == {"system", "user", "assistant", "tool", "template"}
    nav = re.findall(
        r'<li><a href="#ex-(\d+)" title="([^"]+):(\d+)"><b>#\1</b> <span class=src>([^<]+):\3</span></a>'
        r"<br><small>(?:turn \d+ · )?(\d+) tok · (\d+) trained</small></li>",
        page,
    )
    data = rows(out_dir)
    assert len(nav) == len(data)
    for (idx, src, line, name, n_tok, n_trained), row in zip(nav, data):
        assert (src, int(line)) == (row["source_file"], row["source_line"]) and name == Path(src).name
        assert f'<article class=ex id="ex-{idx}"' in page
        assert int(n_tok) == len(row["input_ids"])
        assert int(n_trained) == sum(lab != -100 for lab in row["labels"])


def test_special_strings_are_escaped(page: str) -> None:
    # raw markup never reaches the page: tags, comments, bidi overrides and special strings are all escaped
    for raw in ("<script>alert", "<|im_end|>", "<|im_start|>", "<!-- c", "<b>bold", "\u202e"):
        assert raw not in page, raw
    assert "&lt;|im_end|&gt;" in page and "&quot;" in page and "&#x27;" in page
    parser = TagCounter()
    parser.feed(page)
    assert parser.tags["script"] == 1 and parser.tags["b"] == page.count("<b class=rl>") + page.count("<b>#")
    assert parser.tags["i"] == len(TOKEN.findall(page))
    assert parser.tags["article"] == len(articles(page))
    text = "".join(parser.text)  # what the browser shows: the original strings, as text
    assert "Is <script>alert('x')</script> & \"quoted\" <b>bold</b> ok? <|im_start|>" in text
    assert "Escaped: </i></span><!-- c --> 'single' ⟨U+202E⟩\ufffd done." in text  # 2 tokens: 1 char
    assert "What does <|im_end|> mean in ChatML?" in text


def test_hover_attributes_and_tooltip_script(page: str) -> None:
    assert re.search(r"<i class=t data-id=\d+>", page)
    assert "getAttribute('data-id')" in page and "(trained)" in page and "-100 (masked)" in page
    assert "<div id=tip role=tooltip hidden></div>" in page


def test_svg_plots_inline(page: str) -> None:
    plots = re.findall(r'<svg class="plot" id="plot-(length|fraction)"', page)
    assert plots == ["length", "fraction"]
    assert page.count("</svg>") >= 2 and "<metadata>" not in page


def test_health_section_matches_manifest(out_dir: Path, page: str) -> None:
    manifest = json.loads((out_dir / "manifest.json").read_text())
    shown = dict(re.findall(r'<tr class=reject data-reason="([a-z_]+)"><td>\1</td><td class=n>(\d+)</td>', page))
    assert {k: int(v) for k, v in shown.items()} == manifest["rejected_by_reason"]
    assert manifest["rejected_by_reason"] == {"invalid_json": 1, "no_assistant_turn": 1, "unknown_role": 1}
    counts = dict(
        re.findall(r"<tr><td>([^<]+)</td><td class=n>(\d+)[^<]*</td></tr>", page.split('<table class="counts">')[1])
    )
    assert int(counts["truncated"]) == manifest["truncated"]
    assert int(counts["straddling tokens (joint encoding would differ)"]) == manifest["straddling_tokens"]
    assert int(counts["special-token strings in user text (encoded as text)"]) == 2  # sample + hostile record
    assert manifest["special_tokens_in_content"] == 2
    template = page.split("<table class=template>")[1].split("</table>")[0]
    assert "chatml" in template and manifest["template"]["sha256"] in template
    assert "<code>&lt;|im_end|&gt;</code>" in template and "yes: every conversation is one example" in template
    assert "<tr class=fail>" not in page


def test_stats_command_prints_health(out_dir: Path) -> None:
    console = Console(record=True, width=130)
    stats_command(out_dir, console)
    text = console.export_text()
    for reason in ("invalid_json", "no_assistant_turn", "unknown_role"):
        assert re.search(rf"{reason}\s*│\s*1\s*│\s*1", text)
    assert "Sequence length" in text and "Trainable fraction" in text and "█" in text
    assert "'<|im_end|>'" in text and "✗" not in text and "✓" in text
    assert re.search(r"truncated\s*│\s*0", text)


def test_stats_streams_many_batches_and_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = make_out_dir(tmp_path, shard_size=3, batch_size=2)
    monkeypatch.setattr(health_mod, "BATCH_ROWS", 2)
    h = health_mod.compute_health(out)
    data = rows(out)
    assert len(h.manifest.shards) > 2
    assert h.shards.examples == len(data) == h.manifest.examples_written
    lengths = sorted(len(r["input_ids"]) for r in data)
    assert (h.shards.min_length, h.shards.max_length) == (lengths[0], lengths[-1])
    assert sum(h.length_histogram().counts) == len(data) == sum(h.fraction_histogram().counts)
    assert all(c.ok is not False for c in h.checks())


def test_selection_sample_index_and_errors(out_dir: Path, tmp_path: Path) -> None:
    a = articles(html_report(out_dir, tmp_path / "a.html", sample=5, indices=None, seed=1).read_text())
    b = articles(html_report(out_dir, tmp_path / "b.html", sample=5, indices=None, seed=1).read_text())
    assert len(a) == 5 and list(a) == list(b)
    page = html_report(out_dir, tmp_path / "c.html", sample=None, indices=[9, 2, 9]).read_text()
    assert list(articles(page)) == [9, 2]
    with pytest.raises(ConfigError, match="--index 99"):
        html_report(out_dir, tmp_path / "d.html", sample=None, indices=[99])
    with pytest.raises(ConfigError, match=r"no manifest\.json"):
        html_report(tmp_path, tmp_path / "d.html", sample=None, indices=None)
    with pytest.raises(ConfigError, match=r"absent does not exist"):
        stats_command(tmp_path / "absent", Console())
    with pytest.raises(ConfigError, match="not both"):
        html_report(out_dir, tmp_path / "d.html", sample=2, indices=[1])


def test_missing_source_still_shows_tokens(tmp_path: Path) -> None:
    out = make_out_dir(tmp_path)
    (tmp_path / "hostile.jsonl").unlink()
    page = html_report(out, tmp_path / "r.html", sample=None, indices=None).read_text()
    last = articles(page)[len(rows(out)) - 1]
    assert "roles unknown" in last and 'data-role="unknown"' in last
    assert "<script>alert" not in last and "<script>alert" in shown_text(last)  # decoded one by one, escaped


def test_split_turns_and_truncation_reported(tmp_path: Path) -> None:
    out = make_out_dir(tmp_path, mask="split-turns", max_length=45, truncation="right")
    manifest = json.loads((out / "manifest.json").read_text())
    h = health_mod.compute_health(out)
    assert manifest["truncated"] > 0 and h.shards.per_turn_examples > 0
    assert "--mask split-turns" in h.template.prefix_detail()
    page = html_report(out, tmp_path / "r.html", sample=None, indices=None).read_text()
    assert re.search(rf"<tr><td>truncated</td><td class=n>{manifest['truncated']}</td></tr>", page)
    assert "assistant turn 1" in page
    dropped = manifest["examples_dropped_by_reason"]
    assert dropped == {"no_trainable_tokens": 1}  # a later turn cut off by --max-length
    table = page.split('<table class="dropped">')[1].split("</table>")[0]
    assert "<td>no_trainable_tokens</td><td class=n>1</td>" in table


def test_count_rejects_separates_dropped_turns(tmp_path: Path) -> None:
    lines = [
        {"reason": "invalid_json"},
        {"reason": "too_long", "turn": 2},
        {"reason": "invalid_json"},
        {"reason": "unknown_role", "turn": None},
    ]
    path = tmp_path / "rejects.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n\n", encoding="utf-8")
    records, turns = health_mod.count_rejects(path)
    assert records == {"invalid_json": 2, "unknown_role": 1, "(unreadable line)": 1}
    assert turns == {"too_long": 1}
    assert health_mod.count_rejects(tmp_path / "absent.jsonl") == ({}, {})


def test_health_plots_are_svg_without_a_plotting_library(
    out_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import xml.dom.minidom

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the default install: no plotting library
    page = html_report(out_dir, tmp_path / "r.html", sample=None, indices=[0]).read_text()
    svgs = re.findall(r'<svg class="plot".*?</svg>', page, re.S)
    assert len(svgs) == 2 and '<pre class="hist">' not in page
    for svg, h in zip(svgs, (health_mod.compute_health(out_dir).length_histogram(),
                             health_mod.compute_health(out_dir).fraction_histogram())):  # fmt: skip
        xml.dom.minidom.parseString(svg)  # well-formed
        assert svg.count("<rect ") == sum(1 for n in h.counts if n)  # one bar per non-empty bin
        assert f"{max(h.counts)} examples</title>" in svg
    again = html_report(out_dir, tmp_path / "r2.html", sample=None, indices=[0]).read_text()
    assert re.findall(r'<svg class="plot".*?</svg>', again, re.S) == svgs  # deterministic bytes


def test_size_stays_reasonable_for_long_examples(tmp_path: Path) -> None:
    words = " ".join(f"word{i} <b>&" for i in range(300))
    records = [{"messages": [{"role": "user", "content": words}, {"role": "assistant", "content": words}]}] * 60
    src = tmp_path / "long.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out"
    sftprep.prepare([str(src)], out_dir=str(out), tokenizer=None)
    page = html_report(out, tmp_path / "r.html", sample=50, indices=None)
    n_tokens = sum(len(r["input_ids"]) for r in rows(out)) * 50 // 60
    assert n_tokens > 100_000
    assert page.stat().st_size < 35 * n_tokens + 200_000, (page.stat().st_size, n_tokens)


def test_long_examples_are_capped(out_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html_mod, "MAX_TOKENS_SHOWN", 10)
    body = articles(html_report(out_dir, tmp_path / "r.html", sample=None, indices=[9]).read_text())[9]
    n = len(rows(out_dir)[9]["input_ids"])
    assert len(TOKEN.findall(body)) == 10 and f"{n - 10} more tokens not shown" in body


def test_disagreements_are_flagged(out_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "out"
    shutil.copytree(out_dir, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["tokens"] += 1
    manifest["rejected_by_reason"]["invalid_json"] = 2
    (broken / "manifest.json").write_text(json.dumps(manifest))
    failed = {c.name for c in health_mod.compute_health(broken).checks() if c.ok is False}
    assert failed == {"tokens in Parquet = manifest tokens", "rejects.jsonl = manifest rejected_by_reason"}
    page = html_report(broken, tmp_path / "r.html", sample=None, indices=[0]).read_text()
    assert page.count("<tr class=fail>") == 2
    console = Console(record=True, width=130)
    stats_command(broken, console)
    assert console.export_text().count("✗") == 2
