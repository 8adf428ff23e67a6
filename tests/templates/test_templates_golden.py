"""Golden renders of every built-in template through the public API, with the dummy tokenizer.

Each expected text and each trained substring below is written out by hand. The expected ids are
derived from the literal by the dummy rule (a marker's fixed id, else ord(c)) in `hand_ids`, which does
not use the tokenizers library; labels must be exactly those ids on the trained substrings and -100
everywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dummy_tokenizer import hand_decode, hand_ids, hand_labels, hand_trained_runs, write_dummy_tokenizer

import sftprep
from sftprep.templates.spec import builtin_specs

SYSTEM = "Be brief."
CONV: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dummy_tokenizer(tmp_path_factory.mktemp("tok"))


def run(
    tmp_path: Path, records: list[dict[str, Any]], template: str, tok: Path, **options: Any
) -> list[dict[str, Any]]:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out"
    manifest = sftprep.prepare([str(src)], out_dir=str(out), tokenizer=str(tok), template=template, **options)
    assert manifest["records_rejected"] == 0, (out / "rejects.jsonl").read_text()
    return list(sftprep.load(out, as_dataset=False))


def check(row: dict[str, Any], text: str, trained: list[str]) -> None:
    assert hand_decode(row["input_ids"]) == text
    assert row["input_ids"] == hand_ids(text)
    assert row["labels"] == hand_labels(text, trained)
    assert hand_trained_runs(row["labels"]) == trained


# template -> (bos, eos, expected text, trained substrings); the conversation is CONV.
GOLDEN: dict[str, tuple[str, str, str, list[str]]] = {
    "chatml": (
        "<s>",
        "</s>",
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n",
        ["Hello.<|im_end|>", "Paris.<|im_end|>"],
    ),
    "llama3": (
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>",
        ["Hello.<|eot_id|>", "Paris.<|eot_id|>"],
    ),
    # the system message is folded into the first user turn inside <<SYS>>
    "llama2": (
        "<s>",
        "</s>",
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST] Hello. </s>"
        "<s>[INST] Capital of France? [/INST] Paris. </s>",
        [" Hello. </s>", " Paris. </s>"],
    ),
    # the system message is folded into the first user turn, separated by a blank line
    "mistral": (
        "<s>",
        "</s>",
        "<s>[INST] Be brief.\n\nHi? [/INST]Hello.</s>[INST] Capital of France? [/INST]Paris.</s>",
        ["Hello.</s>", "Paris.</s>"],
    ),
    "alpaca": (
        "<s>",
        "</s>",
        "Be brief.\n\n### Instruction:\nHi?\n\n### Response:\nHello.</s>\n\n"
        "### Instruction:\nCapital of France?\n\n### Response:\nParis.</s>\n\n",
        ["Hello.</s>", "Paris.</s>"],
    ),
    "vicuna": (
        "<s>",
        "</s>",
        "Be brief. USER: Hi? ASSISTANT: Hello.</s>USER: Capital of France? ASSISTANT: Paris.</s>",
        [" Hello.</s>", " Paris.</s>"],
    ),
    "zephyr": (
        "<s>",
        "</s>",
        "<|system|>\nBe brief.</s>\n<|user|>\nHi?</s>\n<|assistant|>\nHello.</s>\n"
        "<|user|>\nCapital of France?</s>\n<|assistant|>\nParis.</s>\n",
        ["Hello.</s>", "Paris.</s>"],
    ),
    "phi3": (
        "<s>",
        "<|endoftext|>",
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi?<|end|>\n<|assistant|>\nHello.<|end|>\n"
        "<|user|>\nCapital of France?<|end|>\n<|assistant|>\nParis.<|end|>\n",
        ["Hello.<|end|>", "Paris.<|end|>"],
    ),
    # system folded into the first user turn; the assistant role is "model"
    "gemma": (
        "<bos>",
        "<eos>",
        "<bos><start_of_turn>user\nBe brief.\n\nHi?<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\nParis.<end_of_turn>\n",
        ["Hello.<end_of_turn>", "Paris.<end_of_turn>"],
    ),
    "minimind": (
        "<s>",
        "</s>",
        "<s>system\nBe brief.</s><s>user\nHi?</s><s>assistant\nHello.</s>"
        "<s>user\nCapital of France?</s><s>assistant\nParis.</s>",
        ["Hello.</s>", "Paris.</s>"],
    ),
    "role-tokens": (
        "<s>",
        "</s>",
        "<|SYSTEM|> Be brief.\n<|USER|> Hi?\n<|ASSISTANT|> Hello.</s>\n"
        "<|USER|> Capital of France?\n<|ASSISTANT|> Paris.</s>\n",
        [" Hello.</s>", " Paris.</s>"],
    ),
}


def test_every_builtin_template_has_a_golden() -> None:
    assert set(GOLDEN) == set(builtin_specs())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_render(name: str, tmp_path: Path) -> None:
    bos, eos, text, trained = GOLDEN[name]
    tok = write_dummy_tokenizer(tmp_path / "tok", bos=bos, eos=eos)
    rows = run(tmp_path, [CONV], name, tok)
    assert len(rows) == 1
    assert rows[0]["turn"] == -1 and rows[0]["source_line"] == 1
    check(rows[0], text, trained)


ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\nName a color.\n\n### Response:\nBlue.</s>\n\n"
)
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
    "\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n5</s>\n\n"
)


def test_alpaca_records_with_and_without_input(tmp_path: Path, tok_dir: Path) -> None:
    records = [
        {"instruction": "Name a color.", "output": "Blue."},
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    ]
    rows = run(tmp_path, records, "alpaca", tok_dir)
    assert [r["source_line"] for r in rows] == [1, 2]
    check(rows[0], ALPACA_NO_INPUT, ["Blue.</s>"])
    check(rows[1], ALPACA_WITH_INPUT, ["5</s>"])


def test_alpaca_input_is_folded_into_user_text_by_other_templates(tmp_path: Path, tok_dir: Path) -> None:
    rows = run(tmp_path, [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}], "chatml", tok_dir)
    text = "<|im_start|>user\nAdd the numbers.\n\n2 and 3<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
    check(rows[0], text, ["5<|im_end|>"])


def test_vicuna_default_system_when_the_record_has_none(tmp_path: Path, tok_dir: Path) -> None:
    rows = run(tmp_path, [{"messages": CONV["messages"][1:3]}], "vicuna", tok_dir)
    text = (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: Hi? ASSISTANT: Hello.</s>"
    )
    check(rows[0], text, [" Hello.</s>"])


CHATML = GOLDEN["chatml"][2]
CHATML_TURN0 = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>"
)


def test_no_train_on_eos_leaves_the_marker_untrained(tmp_path: Path, tok_dir: Path) -> None:
    rows = run(tmp_path, [CONV], "chatml", tok_dir, train_on_eos=False)
    check(rows[0], CHATML, ["Hello.", "Paris."])


def test_no_train_on_eos_with_eos_token_template(tmp_path: Path, tok_dir: Path) -> None:
    rows = run(tmp_path, [CONV], "mistral", tok_dir, train_on_eos=False)
    check(rows[0], GOLDEN["mistral"][2], ["Hello.", "Paris."])


def test_weight_zero_turn_is_not_trained(tmp_path: Path, tok_dir: Path) -> None:
    messages = [dict(m) for m in CONV["messages"]]
    messages[2]["weight"] = 0
    rows = run(tmp_path, [{"messages": messages}], "chatml", tok_dir)
    check(rows[0], CHATML, ["Paris.<|im_end|>"])


def test_mask_last_turn(tmp_path: Path, tok_dir: Path) -> None:
    rows = run(tmp_path, [CONV], "chatml", tok_dir, mask="last-turn")
    assert len(rows) == 1
    check(rows[0], CHATML, ["Paris.<|im_end|>"])


def test_mask_split_turns(tmp_path: Path, tok_dir: Path) -> None:
    rows = run(tmp_path, [CONV], "chatml", tok_dir, mask="split-turns")
    assert [r["turn"] for r in rows] == [0, 1]
    assert [r["source_line"] for r in rows] == [1, 1]
    # each example is history + generation prompt + that turn (ending at its marker), only that turn trained
    check(rows[0], CHATML_TURN0, ["Hello.<|im_end|>"])
    turn1 = CHATML_TURN0 + "\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>"
    check(rows[1], turn1, ["Paris.<|im_end|>"])


def test_mask_split_turns_with_folded_system(tmp_path: Path, tok_dir: Path) -> None:
    rows = run(tmp_path, [CONV], "mistral", tok_dir, mask="split-turns")
    assert [r["turn"] for r in rows] == [0, 1]
    check(rows[0], "<s>[INST] Be brief.\n\nHi? [/INST]Hello.</s>", ["Hello.</s>"])
    check(rows[1], GOLDEN["mistral"][2], ["Paris.</s>"])


def test_mask_none_trains_every_token(tmp_path: Path, tok_dir: Path) -> None:
    rows = run(tmp_path, [CONV], "chatml", tok_dir, mask="none")
    check(rows[0], CHATML, [CHATML])
    assert rows[0]["labels"] == rows[0]["input_ids"]


def test_prompt_completion_is_verbatim(tmp_path: Path, tok_dir: Path) -> None:
    rows = run(tmp_path, [{"prompt": "Q: 1+1?\nA:", "completion": " 2"}], "chatml", tok_dir)
    check(rows[0], "Q: 1+1?\nA: 2</s>", [" 2</s>"])


def test_prompt_completion_no_train_on_eos_keeps_eos_untrained(tmp_path: Path, tok_dir: Path) -> None:
    # README: "--no-train-on-eos leaves the end-of-turn marker untrained" (as the templated renders above do)
    rows = run(tmp_path, [{"prompt": "Q: 1+1?\nA:", "completion": " 2"}], "chatml", tok_dir, train_on_eos=False)
    check(rows[0], "Q: 1+1?\nA: 2</s>", [" 2"])
