"""`sftprep template check`: how a template behaves on probe conversations, before any data is run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sftprep.preparation.options import PrepareOptions
from sftprep.preparation.pipeline import Preparer, load_components
from sftprep.templates.base import ChatTemplate
from sftprep.templates.hf_jinja import template_variables as hf_template_variables
from sftprep.templates.jinja_template import JinjaTemplate
from sftprep.types import RawRecord

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def _turns(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        out += [{"role": "user", "content": f"Question {i + 1}?"}, {"role": "assistant", "content": f"Answer {i + 1}."}]
    return out


def probe_conversations() -> dict[str, dict[str, Any]]:
    system = {"role": "system", "content": "You are terse."}
    probes: dict[str, dict[str, Any]] = {f"{n} turn{'s' * (n > 1)}": {"messages": _turns(n)} for n in (1, 2, 3, 6)}
    probes["system + 2 turns"] = {"messages": [system, *_turns(2)]}
    probes["empty assistant content"] = {
        "messages": [{"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": ""}]
    }
    probes["unicode"] = {
        "messages": [
            {"role": "user", "content": "写一句诗 🌸 café"},
            {"role": "assistant", "content": "春风拂面 🌸 naïve"},
        ]
    }
    probes["reasoning"] = {
        "messages": [
            {"role": "user", "content": "Is 91 prime?"},
            {"role": "assistant", "reasoning_content": "91 = 7 * 13.", "content": "No."},
            {"role": "user", "content": "And 97?"},
            {"role": "assistant", "reasoning_content": "No divisor.", "content": "Yes."},
        ]
    }
    probes["tools"] = {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 18}'},
            {"role": "assistant", "content": "18 °C."},
        ],
    }
    return probes


@dataclass
class ProbeResult:
    name: str
    status: str  # "one example" | "per-turn examples" | "rejected"
    trained: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class TemplateReport:
    template: str
    marker: str | None
    variables: list[str]
    probes: list[ProbeResult]

    @property
    def prefix_preserving(self) -> bool:
        return all(p.status != "per-turn examples" for p in self.probes)


def template_variables(template: ChatTemplate) -> list[str]:
    """Variables a Jinja template reads beyond the HF conventions (give them with --template-var)."""
    return hf_template_variables(template.source_text) if isinstance(template, JinjaTemplate) else []


def check_template(
    template: str | None, tokenizer: str | None, template_vars: dict[str, str] | None = None, mask: str = "assistant"
) -> TemplateReport:
    opts = PrepareOptions(
        inputs=["<probe>"], tokenizer=tokenizer, template=template, template_vars=dict(template_vars or {}), mask=mask
    )
    tok, tmpl = load_components(opts)
    preparer = Preparer(opts, tok, tmpl)
    marker = tmpl.end_of_turn(preparer.ropts)
    results = []
    for n, (name, record) in enumerate(probe_conversations().items(), 1):
        p = preparer.process([RawRecord("<probe>", n, record)])[0]
        if p.reject is not None:
            results.append(ProbeResult(name, "rejected", detail=f"{p.reject.reason}: {p.reject.message}"))
            continue
        per_turn = any(e.rendered.turn >= 0 for e in p.encoded)
        trained = [tok.decode([int(i) for i in _run]) for e in p.encoded for _run in _runs(e.labels)]
        results.append(ProbeResult(name, "per-turn examples" if per_turn else "one example", trained))
    return TemplateReport(tmpl.name, marker, template_variables(tmpl), results)


def _runs(labels: Any) -> list[list[int]]:
    runs: list[list[int]] = []
    current: list[int] = []
    for x in labels.tolist():
        if x != -100:
            current.append(x)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def print_report(report: TemplateReport, console: Any) -> None:
    from rich.table import Table

    console.print(f"[bold]template[/] {report.template}")
    console.print(f"  end-of-turn marker: {report.marker!r}" + ("" if report.marker else " (none: eos appended)"))
    pp = "yes" if report.prefix_preserving else "no: some conversations are rendered one example per turn"
    console.print(f"  prefix-preserving on the probes: {pp}")
    console.print(f"  variables beyond the HF conventions: {', '.join(report.variables) or 'none'}")
    table = Table(show_lines=False)
    for col in ("probe", "result", "trained text per turn"):
        table.add_column(col)
    for p in report.probes:
        text = " | ".join(repr(t) for t in p.trained) if p.trained else p.detail
        table.add_row(p.name, p.status, text)
    console.print(table)
