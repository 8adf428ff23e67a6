"""Golden renders of real Jinja chat templates committed in tests/data/templates (see its NOTICE.md), through
`sftprep.prepare` with the hand-checkable dummy tokenizer: the Jinja path without ../shared.

Each expected text and each trained substring is written out by hand from reading the template. The ids are the
dummy rule's (`hand_ids`: a marker's fixed id, else ord(c)); labels must be exactly those ids on the trained
substrings and -100 everywhere else.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA_DIR
from dummy_tokenizer import hand_decode, hand_ids, hand_labels, hand_trained_runs, write_dummy_tokenizer

import sftprep

TEMPLATES = DATA_DIR / "templates"
# template -> (bos, eos) of the dummy tokenizer dir it is used with: the tokens its model family has
TOKENS: dict[str, tuple[str | None, str]] = {
    "trl/qwen3": (None, "<|im_end|>"),
    "trl/glm4moe": (None, "<|endoftext|>"),
    "trl/phi3": ("<s>", "<|endoftext|>"),
    "axolotl/llama3": ("<|begin_of_text|>", "<|eot_id|>"),
}

PLAIN: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
}
REASONING: dict[str, Any] = {
    "messages": [
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "reasoning_content": "91 = 7 * 13.", "content": "No."},
        {"role": "user", "content": "And 97?"},
        {"role": "assistant", "reasoning_content": "No divisor.", "content": "Yes."},
    ]
}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
TOOL_JSON = '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}'
CALL = {"type": "function", "id": "call_1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL_CALL: dict[str, Any] = {
    "tools": [TOOL],
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'},
        {"role": "assistant", "content": "18 C."},
    ],
}


def check(row: dict[str, Any], text: str, trained: list[str]) -> None:
    assert hand_decode(row["input_ids"]) == text
    assert row["input_ids"] == hand_ids(text)
    assert row["labels"] == hand_labels(text, trained)
    assert hand_trained_runs(row["labels"]) == trained


def prepare(tmp_path: Path, template: str, record: dict[str, Any], **options: Any) -> tuple[list[dict], dict, list]:
    bos, eos = TOKENS[template]
    tok = write_dummy_tokenizer(tmp_path / "tok", bos=bos, eos=eos)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(record) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    path = TEMPLATES / f"{template}.jinja"
    manifest = sftprep.prepare([str(src)], out_dir=str(out), tokenizer=str(tok), template=str(path), **options)
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    return list(sftprep.load(out, as_dataset=False)), manifest, rejects


def test_the_committed_templates_are_the_ones_the_notice_names() -> None:
    notice = (TEMPLATES / "NOTICE.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| (\S+\.jinja) \|.*\| ([0-9a-f]{64}) \|$", notice, re.M))
    files = {str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.jinja")}
    assert set(listed) == files == {f"{t}.jinja" for t in TOKENS}
    for name, sha in listed.items():
        assert hashlib.sha256((TEMPLATES / name).read_bytes()).hexdigest() == sha, name


# -- Qwen3 (TRL): the last turn gets a think block, earlier ones lose theirs: one example per turn ------------

QWEN_TURN0 = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
QWEN_TURN1 = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    "Hello.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
)
QWEN_REASONING_TURN1 = (
    "<|im_start|>user\nIs 91 prime?<|im_end|>\n<|im_start|>assistant\nNo.<|im_end|>\n"
    "<|im_start|>user\nAnd 97?<|im_end|>\n<|im_start|>assistant\n"
)
QWEN_TOOLS = (
    "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    + TOOL_JSON
    + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
)
QWEN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_qwen3_plain(tmp_path: Path) -> None:
    rows, _, _ = prepare(tmp_path, "trl/qwen3", PLAIN)
    assert [r["turn"] for r in rows] == [0, 1]
    empty_think = "<think>\n\n</think>\n\n"
    check(rows[0], QWEN_TURN0 + empty_think + "Hello.<|im_end|>", [empty_think + "Hello.<|im_end|>"])
    check(rows[1], QWEN_TURN1 + empty_think + "Paris.<|im_end|>", [empty_think + "Paris.<|im_end|>"])


def test_qwen3_reasoning_is_trained_on_the_turn_that_has_it(tmp_path: Path) -> None:
    rows, _, _ = prepare(tmp_path, "trl/qwen3", REASONING)
    first = "<think>\n91 = 7 * 13.\n</think>\n\nNo.<|im_end|>"
    second = "<think>\nNo divisor.\n</think>\n\nYes.<|im_end|>"
    check(rows[0], "<|im_start|>user\nIs 91 prime?<|im_end|>\n<|im_start|>assistant\n" + first, [first])
    check(rows[1], QWEN_REASONING_TURN1 + second, [second])
    assert [r["template_vars"] for r in rows] == ["{}", "{}"]


def test_qwen3_non_thinking_prefills_an_empty_think_block(tmp_path: Path) -> None:
    """--reasoning-mode non-thinking: the switch enable_thinking=false, found by rendering; reasoning left out."""
    rows, manifest, _ = prepare(tmp_path, "trl/qwen3", REASONING, reasoning_mode="non-thinking")
    prefill = "<think>\n\n</think>\n\n"
    check(
        rows[0],
        "<|im_start|>user\nIs 91 prime?<|im_end|>\n<|im_start|>assistant\n" + prefill + "No.<|im_end|>",
        ["No.<|im_end|>"],
    )
    check(rows[1], QWEN_REASONING_TURN1 + prefill + "Yes.<|im_end|>", ["Yes.<|im_end|>"])
    assert [json.loads(r["template_vars"]) for r in rows] == [{"enable_thinking": False}] * 2
    assert manifest["turns"]["reasoning_dropped"] == 2 and manifest["reasoning_not_rendered"] == 2


def test_qwen3_tool_call(tmp_path: Path) -> None:
    rows, _, rejects = prepare(tmp_path, "trl/qwen3", TOOL_CALL)
    assert rejects == []
    empty_think = "<think>\n\n</think>\n\n"
    call = empty_think + QWEN_CALL + "<|im_end|>"
    check(rows[0], QWEN_TOOLS + call, [call])
    history = (
        QWEN_TOOLS + QWEN_CALL + "<|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"temp_c": 18}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
    )
    check(rows[1], history + empty_think + "18 C.<|im_end|>", [empty_think + "18 C.<|im_end|>"])


# -- GLM-4 MoE (TRL): no end marker, a turn is ended by the next header ---------------------------------------


def test_glm4moe_plain_turns_stop_at_the_next_user_header(tmp_path: Path) -> None:
    rows, manifest, _ = prepare(tmp_path, "trl/glm4moe", PLAIN)
    (row,) = rows
    assert row["turn"] == -1
    text = (
        "[gMASK]<sop><|system|>\nBe brief.<|user|>\nHi?<|assistant|>\n<think></think>\nHello.<|user|>\n"
        "Capital of France?<|assistant|>\n<think></think>\nParis.<|user|>"
    )
    check(row, text, ["\n<think></think>\nHello.<|user|>", "\n<think></think>\nParis.<|user|>"])
    assert manifest["turns"]["stop:next_header"] == 2


def test_glm4moe_reasoning(tmp_path: Path) -> None:
    rows, _, _ = prepare(tmp_path, "trl/glm4moe", REASONING)
    first = "\n<think>91 = 7 * 13.</think>\nNo.<|user|>"
    check(rows[0], "[gMASK]<sop><|user|>\nIs 91 prime?<|assistant|>" + first, [first])
    second = "\n<think>No divisor.</think>\nYes.<|user|>"
    before = "[gMASK]<sop><|user|>\nIs 91 prime?<|assistant|>\n<think></think>\nNo.<|user|>\nAnd 97?<|assistant|>"
    check(rows[1], before + second, [second])


def test_glm4moe_a_tool_call_stops_at_the_observation_header(tmp_path: Path) -> None:
    rows, _, _ = prepare(tmp_path, "trl/glm4moe", TOOL_CALL)
    (row,) = rows
    system = (
        "[gMASK]<sop><|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + TOOL_JSON
        + "\n</tools>\n\nFor each function call, output the function name and arguments within the following "
        "XML format:\n<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}"
        "</arg_value>\n<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
    )
    call = (
        "\n<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
        "</tool_call><|observation|>"
    )
    reply = "\n<think></think>\n18 C.<|user|>"
    text = (
        system
        + "<|user|>\nWeather in Paris?<|assistant|>"
        + call
        + '\n<tool_response>\n{"temp_c": 18}\n</tool_response><|assistant|>'
        + reply
    )
    check(row, text, [call, reply])


# -- Phi-3 (TRL): eos written only after the last message: part of no turn ----------------------------------


def test_phi3_eos_at_the_end_is_not_trained(tmp_path: Path) -> None:
    rows, _, _ = prepare(tmp_path, "trl/phi3", PLAIN)
    (row,) = rows
    text = (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi?<|end|>\n<|assistant|>\nHello.<|end|>\n"
        "<|user|>\nCapital of France?<|end|>\n<|assistant|>\nParis.<|end|>\n<|endoftext|>"
    )
    check(row, text, ["Hello.<|end|>", "Paris.<|end|>"])


def test_phi3_drops_reasoning_and_says_so(tmp_path: Path) -> None:
    rows, manifest, _ = prepare(tmp_path, "trl/phi3", REASONING)
    text = (
        "<|user|>\nIs 91 prime?<|end|>\n<|assistant|>\nNo.<|end|>\n"
        "<|user|>\nAnd 97?<|end|>\n<|assistant|>\nYes.<|end|>\n<|endoftext|>"
    )
    check(rows[0], text, ["No.<|end|>", "Yes.<|end|>"])
    assert manifest["reasoning_not_rendered"] == 2


# -- Llama 3 (axolotl) ---------------------------------------------------------------------------------------

LLAMA_PLAIN = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>"
)


def test_llama3_plain(tmp_path: Path) -> None:
    rows, _, _ = prepare(tmp_path, "axolotl/llama3", PLAIN)
    (row,) = rows
    check(row, LLAMA_PLAIN, ["Hello.<|eot_id|>", "Paris.<|eot_id|>"])


def test_llama3_a_tool_call_it_does_not_render_is_not_trained(tmp_path: Path) -> None:
    """The template renders no tool calls: that turn would train a lone <|eot_id|>; it is left out (a turn
    reject naming the fix), the reply after the tool result is trained."""
    rows, _, rejects = prepare(tmp_path, "axolotl/llama3", TOOL_CALL)
    (row,) = rows
    text = (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>"
        '<|start_header_id|>tool<|end_header_id|>\n\n{"temp_c": 18}<|eot_id|>'
        "<|start_header_id|>assistant<|end_header_id|>\n\n18 C.<|eot_id|>"
    )
    check(row, text, ["18 C.<|eot_id|>"])
    assert [(r["reason"], r["turn"]) for r in rejects] == [("nothing_to_train", 0)]
    assert "--train-marker-only" in rejects[0]["message"] and "messages[1]" in rejects[0]["message"]


@pytest.mark.parametrize("template", sorted(TOKENS))
def test_every_id_is_a_known_token(template: str, tmp_path: Path) -> None:
    """The dummy tokenizer has every marker these templates write (no <unk>, id 999)."""
    rows, _, _ = prepare(tmp_path, template, PLAIN)
    assert all(999 not in r["input_ids"] for r in rows)
