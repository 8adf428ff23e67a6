"""The agentic checker catches what it must: a hand-built correct output passes, and each corruption of it
(one more or one less trained token, a trained user token or tool result, a shifted prompt, a dropped or wrong
stop token, an eos the template never renders, broken reconciliation, a reject without a reason) is reported."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DIR

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not (SHARED_DIR / "tokenizers").is_dir(), reason=f"{SHARED_DIR} is absent (optional checkout)"),
]
pytest.importorskip("transformers")

from agentic_convert import to_hf  # noqa: E402
from agentic_oracle import IGNORE, Checker, TemplateReport  # noqa: E402

TOKENIZER = SHARED_DIR / "tokenizers" / "qwen2.5"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
RECORDS: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France, please?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy? Answer in one word."},
            {"role": "assistant", "content": "Rome."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "a1b2c3d4e", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "a1b2c3d4e", "name": "get_weather", "content": "Sunny, 21 degrees C."},
            {"role": "assistant", "content": "It is sunny and 21 degrees."},
        ],
        "tools": TOOLS,
    },
    {"messages": [{"role": "user", "content": "no answer"}]},  # rejected: no assistant turn
]
Rows = list[dict[str, Any]]
Rejects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker(TOKENIZER, TOKENIZER)


def example(checker: Checker, line: int, turn: int, turns: list[int]) -> dict[str, Any]:
    """A correct example: the turns' prompts and trained texts encoded piecewise, what follows untrained."""
    hf = to_hf(RECORDS[line - 1])
    assert hf.trainable_turns() == hf.assistant_turns()
    ids: list[int] = []
    labels: list[int] = []
    for i in turns:
        pids, options, ref = checker.expect(hf, i, {})
        assert pids[: len(ids)] == ids, "the test conversation must encode prefix-consistently"
        labels += [IGNORE] * (len(pids) - len(ids))
        ids = pids + options[0]
        labels += options[0]
    tail = checker.ref.encode(ref.after)
    return {"input_ids": ids + tail, "labels": labels + [IGNORE] * len(tail), "source_line": line, "turn": turn}


RECORD3_REJECT = {"source_line": 3, "reason": "no_assistant_turn", "message": "corpus.jsonl:3: no assistant turn"}


@pytest.fixture(scope="module")
def correct(checker: Checker) -> tuple[Rows, Rejects]:
    rows = [example(checker, 1, -1, [2, 4]), example(checker, 2, 0, [1]), example(checker, 2, 1, [3])]
    return rows, [dict(RECORD3_REJECT)]


def check(tmp_path: Path, checker: Checker, rows: Rows, rejects: Rejects) -> TemplateReport:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    table = {
        "input_ids": pa.array([r["input_ids"] for r in rows], pa.list_(pa.int32())),
        "labels": pa.array([r["labels"] for r in rows], pa.list_(pa.int32())),
        "source_file": pa.array([str(corpus)] * len(rows), pa.string()),
        "source_line": pa.array([r["source_line"] for r in rows], pa.int64()),
        "turn": pa.array([r["turn"] for r in rows], pa.int32()),
    }
    pq.write_table(pa.table(table), out / "data-00000.parquet")
    manifest = {"shards": ["data-00000.parquet"], "records_read": len(RECORDS)}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    lines = [json.dumps({"source_file": str(corpus), **r}) + "\n" for r in rejects]
    (out / "rejects.jsonl").write_text("".join(lines), encoding="utf-8")
    return checker.check_dir(out, corpus)


def test_correct_output_passes(tmp_path: Path, checker: Checker, correct: tuple[Rows, Rejects]) -> None:
    rep = check(tmp_path, checker, *correct)
    assert rep.ok, rep.format()
    assert (rep.turns_trained, rep.exact, rep.lost) == (4, 4, 0)
    assert rep.rejected == {"no_assistant_turn": 1}
    assert rep.by_kind == {"plain": [2, 2], "agentic": [2, 2]}


def first_run(row: dict[str, Any], n: int = 0) -> tuple[int, int]:
    on = [k for k, lab in enumerate(row["labels"]) if lab != IGNORE]
    starts = [k for k in on if k - 1 not in on]
    ends = [k + 1 for k in on if k + 1 not in on]
    return starts[n], ends[n]


def train(row: dict[str, Any], k: int) -> None:
    row["labels"][k] = row["input_ids"][k]


def one_more(rows: Rows, rejects: Rejects) -> None:
    train(rows[0], first_run(rows[0])[1])  # the "\n" after <|im_end|>


def one_less(rows: Rows, rejects: Rejects) -> None:
    rows[0]["labels"][first_run(rows[0])[1] - 1] = IGNORE


def find_text(ids: list[int], text: str) -> tuple[int, int]:
    """The token positions [s, e) that decode to exactly `text`."""
    from agentic_reference import load_tokenizer

    tok = load_tokenizer(str(TOKENIZER))
    for s in range(len(ids)):
        for e in range(s + 1, len(ids) + 1):
            piece = tok.decode(ids[s:e])
            if piece == text:
                return s, e
            if not text.startswith(piece):
                break
    raise AssertionError(f"{text!r} is not in the example")


def user_token(rows: Rows, rejects: Rejects) -> None:
    train(rows[0], find_text(rows[0]["input_ids"], " Italy")[0])


def tool_result(rows: Rows, rejects: Rejects) -> None:
    for k in range(*find_text(rows[2]["input_ids"], "Sunny, 21 degrees")):
        train(rows[2], k)


def shift_prompt(rows: Rows, rejects: Rejects) -> None:
    rows[2]["input_ids"].insert(0, 198)
    rows[2]["labels"].insert(0, IGNORE)


def drop_stop(rows: Rows, rejects: Rejects) -> None:
    b = first_run(rows[1])[1]
    del rows[1]["input_ids"][b - 1], rows[1]["labels"][b - 1]


def replace_stop(token: str) -> Callable[[Rows, Rejects], None]:
    def corrupt(rows: Rows, rejects: Rejects) -> None:
        from agentic_reference import load_tokenizer

        new = load_tokenizer(str(TOKENIZER)).convert_tokens_to_ids(token)
        b = first_run(rows[2])[1]
        rows[2]["input_ids"][b - 1] = rows[2]["labels"][b - 1] = new

    return corrupt


def append_eos(rows: Rows, rejects: Rejects) -> None:
    b = first_run(rows[2])[1]
    rows[2]["input_ids"].insert(b, 151643)  # <|endoftext|>: the template never renders it
    rows[2]["labels"].insert(b, 151643)


def untrain_call(rows: Rows, rejects: Rejects) -> None:
    rows[1]["labels"] = [IGNORE] * len(rows[1]["labels"])


def label_value(rows: Rows, rejects: Rejects) -> None:
    a = first_run(rows[2])[0]
    rows[2]["labels"][a] += 1


def drop_record(rows: Rows, rejects: Rejects) -> None:
    del rows[0]


def no_reason(rows: Rows, rejects: Rejects) -> None:
    rejects[0]["reason"] = ""


def both(rows: Rows, rejects: Rejects) -> None:
    rejects.append({"source_line": 1, "reason": "template_error", "message": "x"})


CORRUPTIONS: dict[str, tuple[Callable[[Rows, Rejects], None], str]] = {
    "train one more token": (one_more, "whitespace_after_stop_trained"),
    "train one less token": (one_less, "stop_token_untrained"),
    "train a user token": (user_token, "user_text_trained"),
    "train the tool result": (tool_result, "tool_text_trained"),
    "shift the prompt": (shift_prompt, "prompt_ids_differ"),
    "drop the stop token": (drop_stop, "stop_token_absent"),
    "another end token": (replace_stop("<|im_start|>"), "wrong_end_token"),
    "eos where the stop is": (replace_stop("<|endoftext|>"), "eos_appended"),
    "append a trained eos": (append_eos, "eos_appended"),
    "tool call untrained": (untrain_call, "tool_calls_untrained"),
    "a label is not its input id": (label_value, "labels_not_ids"),
    "record missing": (drop_record, "reconciliation"),
    "reject without a reason": (no_reason, "reject_problems"),
    "written and rejected": (both, "reconciliation"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_is_caught(name: str, tmp_path: Path, checker: Checker, correct: tuple[Rows, Rejects]) -> None:
    rows, rejects = copy.deepcopy(correct)
    corrupt, expected = CORRUPTIONS[name]
    corrupt(rows, rejects)
    rep = check(tmp_path, checker, rows, rejects)
    assert not rep.ok, f"{name}: not caught\n{rep.format()}"
    if expected in ("reconciliation", "reject_problems"):
        assert getattr(rep, expected), rep.format()
    else:
        assert rep.wrong >= 1 and expected in rep.classes, f"{name}: {dict(rep.classes)}\n{rep.format()}"


# GLM-4 (trl/glm4moe): no end marker; a turn ends with the next message's header, <|observation|> after a tool
# call and <|user|> after a reply (appended at the end of the conversation, as GLM stops on it).
GLM = SHARED_DIR / "templates" / "trl" / "glm4moe.jinja"


@pytest.fixture(scope="module")
def glm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Checker, Rows]:
    from agentic_reference import fitted_tokenizer

    tok = fitted_tokenizer(GLM, tmp_path_factory.mktemp("glm-tok"))
    checker = Checker(tok, GLM)
    rows = [example(checker, 2, 0, [1]), example(checker, 2, 1, [3])]
    return checker, rows


def test_glm_next_header(tmp_path: Path, glm: tuple[Checker, Rows]) -> None:
    checker, rows = glm
    ends = [checker.ref.decode([row["input_ids"][first_run(row)[1] - 1]]) for row in rows]
    assert ends == ["<|observation|>", "<|user|>"]
    rows = copy.deepcopy(rows)
    for row in rows:
        row["labels"] = [IGNORE] * len(row["labels"])
    rep = check(tmp_path, checker, [*rows, example(checker, 1, -1, [2, 4])], [RECORD3_REJECT])
    assert rep.classes == {"tool_calls_untrained": 1, "turn_untrained": 1}, rep.format()
    assert all("zero trained tokens" in p for p in rep.reconciliation) and len(rep.reconciliation) == 2


@pytest.mark.parametrize("corruption", ["eos instead of <|observation|>", "no <|user|> at the end"])
def test_glm_corruption_is_caught(corruption: str, tmp_path: Path, glm: tuple[Checker, Rows]) -> None:
    checker, rows = glm
    rows = copy.deepcopy(rows)
    if corruption.startswith("eos"):
        b = first_run(rows[0])[1]
        rows[0]["input_ids"][b - 1] = rows[0]["labels"][b - 1] = checker.ref.encode("</s>")[0]
        expected = "eos_appended"
    else:
        del rows[1]["input_ids"][-1], rows[1]["labels"][-1]
        expected = "stop_token_absent"
    rep = check(tmp_path, checker, [*rows, example(checker, 1, -1, [2, 4])], [RECORD3_REJECT])
    assert rep.classes == {expected: 1}, rep.format()
