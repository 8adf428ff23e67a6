"""The turn rule on small hand-written Jinja templates, with the hand-checkable dummy tokenizer (no ../shared).

For each trained assistant turn: the tokens in front are the conversation so far rendered with the generation
prompt; the trained tokens are what the model generates after it through the token it stops at (the end
marker, or the next header where the template has none); nothing of another message; settings of a reasoning
switch are found by rendering and recorded per example.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dummy_tokenizer import hand_decode, hand_ids, write_dummy_tokenizer

import sftprep

IGNORE = -100

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }}</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# GLM-4 style: no end marker; a reply is ended by the next header (<|user|>), a tool call by <|observation|>
NEXT_HEADER = (
    "{% for m in messages %}{% if m.role == 'user' %}<|user|>\\n{{ m.content }}"
    "{% elif m.role == 'assistant' %}<|assistant|>\\n{% if m.tool_calls %}"
    "{% for c in m.tool_calls %}<tool_call>{{ c.function.name }}</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}"
    "{% elif m.role == 'tool' %}<|observation|>\\n{{ m.content }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\\n{% endif %}"
)
# an eos only at the very end of a conversation (TRL's phi3): not part of any turn
EOS_AT_END = (
    "{% for m in messages %}{{ '<|' + m.role + '|>\\n' + m.content + '<|end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
# a no-think prefill unless enable_thinking: a turn with reasoning needs the switch
PREFILL = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}"
    "{% if m.role == 'assistant' and loop.last and m.reasoning_content %}"
    "{{ '<think>\\n' + m.reasoning_content + '\\n</think>\\n\\n' }}"
    "{% elif m.role == 'assistant' and loop.last %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{{ m.content + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if not enable_thinking is defined or not enable_thinking %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
CALL = {"type": "function", "id": "call_1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def chat(*turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


def run(tmp_path: Path, source: str, records: list[dict[str, Any]], **opts: Any) -> tuple[list[dict], list[dict], dict]:
    tok = write_dummy_tokenizer(tmp_path / "tok", bos="<s>", eos="</s>")
    template = tmp_path / "t.jinja"
    template.write_text(source, encoding="utf-8")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    try:
        manifest = sftprep.prepare(
            [str(data)], out_dir=str(tmp_path / "out"), tokenizer=str(tok), template=str(template), **opts
        )
    except sftprep.errors.SftprepError:  # nothing written (exit 3): the rejects say why
        manifest = {}
    out = tmp_path / "out"
    rows = list(sftprep.load(out, as_dataset=False)) if (out / "manifest.json").exists() else []
    rejects_file = out / "rejects.jsonl"
    rejects = [json.loads(x) for x in rejects_file.read_text().splitlines()] if rejects_file.exists() else []
    return rows, rejects, manifest


def runs(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(text before, trained text) of every maximal trained run."""
    out, start = [], None
    labels = [*row["labels"], IGNORE]
    for k, lab in enumerate(labels):
        if lab != IGNORE and start is None:
            start = k
        elif lab == IGNORE and start is not None:
            out.append((hand_decode(row["input_ids"][:start]), hand_decode(row["input_ids"][start:k])))
            start = None
    return out


def test_marker_template_trains_content_and_marker(tmp_path: Path) -> None:
    rows, rejects, _ = run(
        tmp_path, CHATML, [chat(("user", "Hi?"), ("assistant", "Hello."), ("user", "Bye?"), ("assistant", "Bye."))]
    )
    assert not rejects and len(rows) == 1
    (p1, t1), (p2, t2) = runs(rows[0])
    assert p1 == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n" and t1 == "Hello.<|im_end|>"
    assert p2.endswith("<|im_start|>user\nBye?<|im_end|>\n<|im_start|>assistant\n") and t2 == "Bye.<|im_end|>"
    assert rows[0]["input_ids"] == hand_ids(p2 + t2 + "\n")
    assert rows[0]["template_vars"] == "{}"


def test_tool_call_turn_is_trained_through_its_end_marker(tmp_path: Path) -> None:
    rec = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "Sunny."},
        ],
        "tools": TOOLS,
    }
    rows, rejects, _ = run(tmp_path, CHATML, [rec])
    assert not rejects
    trained = [t for _, t in runs(rows[0])]
    assert trained == ["<tool_call>get_weather</tool_call><|im_end|>", "Sunny.<|im_end|>"]  # the tool result never


def test_next_header_ends_turns_of_a_template_without_markers(tmp_path: Path) -> None:
    rec = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "Bye."},
        ],
        "tools": TOOLS,
    }
    rows, rejects, m = run(tmp_path, NEXT_HEADER, [rec])
    assert not rejects and len(rows) == 1
    trained = [t for _, t in runs(rows[0])]
    # the model stops a tool call with <|observation|>, a reply with <|user|> (the last one too: no eos appended)
    assert trained == ["<tool_call>get_weather</tool_call><|observation|>", "Sunny.<|user|>", "Bye.<|user|>"]
    assert m["turns"]["stop:next_header"] == 3 and "stop:eos_appended" not in m["turns"]


def test_eos_written_only_at_the_end_of_a_conversation_is_not_trained(tmp_path: Path) -> None:
    rows, rejects, _ = run(
        tmp_path, EOS_AT_END, [chat(("user", "Hi?"), ("assistant", "Hello."), ("user", "Q"), ("assistant", "A."))]
    )
    assert not rejects and len(rows) == 1
    assert [t for _, t in runs(rows[0])] == ["Hello.<|end|>", "A.<|end|>"]


def test_a_reasoning_switch_is_found_by_rendering_and_recorded(tmp_path: Path) -> None:
    plain = chat(("user", "Q?"), ("assistant", "A."))
    thought = {
        "messages": [
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "A.", "reasoning_content": "R."},
        ]
    }
    rows, rejects, m = run(tmp_path, PREFILL, [plain, thought])
    assert not rejects
    by_line = {r["source_line"]: r for r in rows}
    ((p1, t1),) = runs(by_line[1])
    assert p1.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and t1 == "A.<|im_end|>"
    assert by_line[1]["template_vars"] == "{}"
    ((p2, t2),) = runs(by_line[2])
    assert p2.endswith("<|im_start|>assistant\n<think>\n") and t2 == "R.\n</think>\n\nA.<|im_end|>"
    assert json.loads(by_line[2]["template_vars"]) == {"enable_thinking": True}
    assert m["turns"]["mode:default"] == 1 and m["turns"]["mode:switch"] == 1


def test_reasoning_modes(tmp_path: Path) -> None:
    thought = {
        "messages": [
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "A.", "reasoning_content": "R."},
        ]
    }
    rows, rejects, m = run(tmp_path / "nt", PREFILL, [thought], reasoning_mode="non-thinking")
    assert [t for _, t in runs(rows[0])] == ["A.<|im_end|>"] and m["turns"]["reasoning_dropped"] == 1
    assert rows[0]["template_vars"] == "{}"
    rows, rejects, _ = run(tmp_path / "rj", PREFILL, [thought], reasoning_mode="reject")
    assert not rows and rejects[0]["reason"] == "generation_prompt_mismatch"
    hint = rejects[0]["message"]
    assert "--template-var enable_thinking=true" in hint
    rows, rejects, _ = run(
        tmp_path / "fixed", PREFILL, [thought], reasoning_mode="reject", template_vars={"enable_thinking": True}
    )
    assert not rejects and [t for _, t in runs(rows[0])] == ["R.\n</think>\n\nA.<|im_end|>"]  # the hint works
    assert json.loads(rows[0]["template_vars"]) == {"enable_thinking": True}


def test_turn_whose_content_the_template_drops_is_not_trained(tmp_path: Path) -> None:
    drops = (
        "{% for m in messages %}{{ '<|' + m.role + '|>' }}{% if m.role != 'assistant' %}{{ m.content }}{% endif %}"
        "<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    rows, rejects, _ = run(tmp_path, drops, [chat(("user", "Hi?"), ("assistant", "Hello."))])
    assert not rows and rejects[0]["reason"] == "nothing_to_train"
    rows, rejects, _ = run(
        tmp_path / "forced", drops, [chat(("user", "Hi?"), ("assistant", "Hello."))], train_marker_only=True
    )
    assert [t for _, t in runs(rows[0])] == ["<|end|>"]


def test_another_message_inside_the_turn_is_never_trained(tmp_path: Path) -> None:
    leaks = (
        "{% for m in messages %}{% if m.role == 'user' %}<|user|>{{ m.content }}<|end|>"
        "{% else %}<|assistant|>{{ m.content }} (you said: {{ messages[loop.index0 - 1].content }})<|end|>{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    rows, rejects, _ = run(tmp_path, leaks, [chat(("user", "secret question"), ("assistant", "Answer."))])
    assert not rows and rejects[0]["reason"] == "other_message_trained"


def test_template_that_never_finishes_is_rejected_and_the_run_goes_on(tmp_path: Path) -> None:
    slow = (
        "{% if messages | length > 2 %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
        "{% endfor %}{% endif %}" + CHATML
    )
    records = [
        chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")),
        chat(("user", "x"), ("assistant", "y")),
    ]
    rows, rejects, _ = run(tmp_path, slow, records, render_timeout=0.5)
    assert [r["reason"] for r in rejects] == ["template_timeout"] and len(rows) == 1


def test_template_recursing_without_end_rejects_the_record(tmp_path: Path) -> None:
    recurse = "{% macro f(x) %}{{ f(x) }}{% endmacro %}{% if tools %}{{ f(1) }}{% endif %}" + CHATML
    records = [chat(("user", "a"), ("assistant", "b"), tools=TOOLS), chat(("user", "x"), ("assistant", "y"))]
    rows, rejects, _ = run(tmp_path, recurse, records)
    assert [r["reason"] for r in rejects] == ["template_error"] and len(rows) == 1
    assert "RecursionError" in rejects[0]["message"]


def test_system_assistant_conversation_is_trained(tmp_path: Path) -> None:
    rows, rejects, _ = run(tmp_path, CHATML, [chat(("system", "Be nice."), ("assistant", "Hello!"))])
    assert not rejects and [t for _, t in runs(rows[0])] == ["Hello!<|im_end|>"]
    rows, rejects, _ = run(
        tmp_path / "req", CHATML, [chat(("system", "Be nice."), ("assistant", "Hello!"))], require_user_turn=True
    )
    assert not rows and rejects[0]["reason"] == "no_user_turn"


@pytest.mark.parametrize("content", [None, ""])
def test_null_content_is_no_content_key(tmp_path: Path, content: str | None) -> None:
    # transformers drops a None content: a template testing `content is defined` sees the difference
    probe = CHATML.replace("{% else %}{{ m.content }}", "{% else %}{{ m.content }}").replace(
        "{% if m.tool_calls %}", "{% if m.content is defined %}[has content]{% endif %}{% if m.tool_calls %}"
    )
    rec = {
        "messages": [
            {"role": "user", "content": "W?"},
            {"role": "assistant", "content": content, "tool_calls": [CALL]},
        ],
        "tools": TOOLS,
    }
    rows, rejects, _ = run(tmp_path, probe, [rec])
    assert not rejects
    text = hand_decode(rows[0]["input_ids"])
    assert text.count("[has content]") == (1 if content is None else 2)


def test_split_turns_name_the_assistant_turn_after_an_untrained_one(tmp_path: Path) -> None:
    # the one-render path (a skeleton per conversation shape) must count assistant turns, not trained ones
    rec = chat(("user", "Q1?"), ("assistant", "A1."), ("user", "Q2?"), ("assistant", "A2."), ("user", "Q3?"))
    rec["messages"].append({"role": "assistant", "content": "A3."})
    rec["messages"][1]["weight"] = 0
    for name in ("a", "b"):  # the second record of the shape takes the skeleton path
        rows, rejects, _ = run(tmp_path / name, CHATML, [rec, rec], mask="split-turns")
        assert not rejects
        assert [(r["source_line"], r["turn"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
        assert [t for r in rows for _, t in runs(r)] == ["A2.<|im_end|>", "A3.<|im_end|>"] * 2
