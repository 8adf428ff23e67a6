"""report/template_check.py (`sftprep template check`): each probe conversation through the real pipeline, with
what is trained per turn, whether a template keeps prefixes, the variables it reads; and the printed report.

The dummy tokenizer (tests/dummy_tokenizer.py) makes the trained text exact; the Jinja templates are the real
ones committed in tests/data/templates.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA_DIR
from dummy_tokenizer import write_dummy_tokenizer
from rich.console import Console

from sftprep.report.template_check import ProbeResult, TemplateReport, check_template, print_report, probe_conversations

QWEN3 = str(DATA_DIR / "templates" / "trl" / "qwen3.jinja")
GLM4 = str(DATA_DIR / "templates" / "trl" / "glm4moe.jinja")
THINK = "<think>\n\n</think>\n\n"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_dummy_tokenizer(tmp_path_factory.mktemp("tok"), bos=None, eos="<|im_end|>"))


@pytest.fixture(scope="module")
def chatml(tok: str) -> TemplateReport:
    return check_template("chatml", tok)


@pytest.fixture(scope="module")
def qwen3(tok: str) -> TemplateReport:
    return check_template(QWEN3, tok)


def probe(report: TemplateReport, name: str) -> ProbeResult:
    (found,) = [p for p in report.probes if p.name == name]
    return found


def printed(report: TemplateReport) -> str:
    console = Console(record=True, width=400)
    print_report(report, console)
    return console.export_text()


def test_every_probe_is_run_in_order(chatml: TemplateReport) -> None:
    assert [p.name for p in chatml.probes] == list(probe_conversations())


def test_chatml_trains_each_answer_with_its_marker(chatml: TemplateReport) -> None:
    assert (chatml.template, chatml.marker, chatml.variables) == ("chatml", "<|im_end|>", [])
    assert chatml.prefix_preserving
    assert probe(chatml, "2 turns") == ProbeResult(
        "2 turns", "one example", ["Answer 1.<|im_end|>", "Answer 2.<|im_end|>"]
    )
    assert probe(chatml, "6 turns").trained == [f"Answer {i}.<|im_end|>" for i in range(1, 7)]
    assert probe(chatml, "system + 2 turns").trained == ["Answer 1.<|im_end|>", "Answer 2.<|im_end|>"]
    assert probe(chatml, "empty assistant content").trained == ["<|im_end|>"]
    assert probe(chatml, "tools").trained == [CALL + "<|im_end|>", "18 °C.<|im_end|>"]


def test_a_template_that_drops_earlier_thinking_gives_per_turn_examples(qwen3: TemplateReport) -> None:
    assert (qwen3.template, qwen3.marker, qwen3.variables) == ("qwen3.jinja", "<|im_end|>", ["enable_thinking"])
    assert not qwen3.prefix_preserving
    assert probe(qwen3, "1 turn") == ProbeResult("1 turn", "one example", [THINK + "Answer 1.<|im_end|>"])
    assert probe(qwen3, "2 turns") == ProbeResult(
        "2 turns", "per-turn examples", [THINK + "Answer 1.<|im_end|>", THINK + "Answer 2.<|im_end|>"]
    )
    assert probe(qwen3, "reasoning").trained == [
        "<think>\n91 = 7 * 13.\n</think>\n\nNo.<|im_end|>",
        "<think>\nNo divisor.\n</think>\n\nYes.<|im_end|>",
    ]


def test_a_probe_with_nothing_to_train_is_reported_with_its_reason(qwen3: TemplateReport) -> None:
    empty = probe(qwen3, "empty assistant content")
    assert (empty.status, empty.trained) == ("rejected", [])
    assert empty.detail.startswith("nothing_to_train: ") and "--train-marker-only" in empty.detail


def test_template_variables_are_used(tok: str) -> None:
    """enable_thinking=false prefills the empty think block: it is prompt, not trained."""
    report = check_template(QWEN3, tok, {"enable_thinking": False})  # typed, as the CLI parses --template-var
    assert probe(report, "1 turn").trained == ["Answer 1.<|im_end|>"]


def test_mask_is_applied(tok: str) -> None:
    report = check_template("chatml", tok, mask="last-turn")
    assert probe(report, "3 turns").trained == ["Answer 3.<|im_end|>"]


def test_a_template_without_tools_names_one_that_renders_them(tok: str) -> None:
    tools = probe(check_template("alpaca", tok), "tools")
    assert tools.status == "rejected"
    assert tools.detail.startswith("template_unsupported: ") and "tool messages" in tools.detail
    assert tools.detail.endswith("fix: --template chatml")


def test_the_next_header_is_the_marker_of_a_template_without_one(tmp_path: Path) -> None:
    tok = write_dummy_tokenizer(tmp_path / "tok", bos=None, eos="<|endoftext|>")
    report = check_template(GLM4, str(tok))
    assert report.marker == "<|user|>"
    assert probe(report, "1 turn").trained == ["\n<think></think>\nAnswer 1.<|user|>"]
    call = "\n<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
    assert probe(report, "tools").trained == [call + "</tool_call><|observation|>", "\n<think></think>\n18 °C.<|user|>"]


def test_print_report(qwen3: TemplateReport) -> None:
    text = printed(qwen3)
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[:4] == [
        "template qwen3.jinja",
        "  end-of-turn marker: '<|im_end|>'",
        "  prefix-preserving on the probes: no: some conversations are rendered one example per turn",
        "  variables beyond the HF conventions: enable_thinking",
    ]
    row = next(line for line in lines if "│ 2 turns " in line)
    assert "per-turn examples" in row and repr(THINK + "Answer 1.<|im_end|>") + " | " in row
    row = next(line for line in lines if "│ empty assistant content" in line)
    assert "rejected" in row and "nothing_to_train: <probe>:6: " in row


def test_print_report_of_a_prefix_preserving_template(chatml: TemplateReport) -> None:
    text = printed(chatml)
    assert "  prefix-preserving on the probes: yes\n" in text
    assert "  variables beyond the HF conventions: none\n" in text
