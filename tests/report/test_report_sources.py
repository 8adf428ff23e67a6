"""The report of a mixture (issue #13): the summary, `sftprep stats` and the HTML report show each source
(read, rejected, duplicates, prepared, eval, written, requested and realised share) and check the shares."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_helpers import run_main
from rich.console import Console

from sftprep.report import html_report, stats_command


def write(path: Path, tag: str, n: int) -> None:
    rows = [{"messages": [{"role": "user", "content": f"{tag} {i}?"}, {"role": "assistant", "content": f"{i}"}]}
            for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:2]))  # two duplicates each


def test_sources_in_summary_stats_and_html(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", "A", 60)
    write(tmp_path / "b.jsonl", "B", 40)
    (tmp_path / "c.yaml").write_text(
        "workers: 1\ndedup: true\nseed: 1\nsources:\n"
        "  - {name: alpha, paths: a.jsonl, weight: 3}\n  - {name: beta, paths: b.jsonl, weight: 1}\n"
        "eval: {fraction: 0.1}\n"
    )
    r = run_main(tmp_path, "prepare", "--config", "c.yaml", "-o", "out")
    assert r.returncode == 0, r.stderr
    assert "alpha" in r.stdout and r.stdout.count("75.00%") == 2 and r.stdout.count("25.00%") == 2
    assert "eval split: 10 records, 10 examples in out/eval" in " ".join(r.stdout.split())
    console = Console(record=True, width=250)
    stats_command(tmp_path / "out", console)
    text = console.export_text()
    assert re.search(r"beta\s+│\s+weight 1\s+│\s+42\s+│\s+2\s+│\s+2\s+│\s+40\s+│\s+4\s+│\s+18\s+│", text), text
    assert "mixture as requested (each share within 1 point)" in text
    page = html_report(tmp_path / "out", tmp_path / "r.html").read_text()
    table = page.split('<table class="sources">')[1].split("</table>")[0]
    assert "<td>alpha</td><td>weight 3</td><td class=n>62</td>" in table and "75.00%" in table
    assert "<tr class=ok><td>mixture as requested" in page


def test_one_plain_source_shows_no_sources_table(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", "A", 5)
    assert run_main(tmp_path, "prepare", "a.jsonl", "-o", "out", "--workers", "1").returncode == 0
    page = html_report(tmp_path / "out", tmp_path / "r.html").read_text()
    assert '<table class="sources">' not in page and "mixture as requested" not in page
