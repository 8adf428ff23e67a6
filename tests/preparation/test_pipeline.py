"""End-to-end `prepare`: determinism, truncation, reconciliation, special strings, shards, gzip, the sample."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT
from dummy_tokenizer import MARKER_IDS, hand_decode, hand_ids, write_dummy_tokenizer

import sftprep
from sftprep.api import read_manifest
from sftprep.tokenize.tokenizer import BPETokenizer

IGNORE = -100
SAMPLE = REPO_ROOT / "examples" / "sample.jsonl"
IM_START = MARKER_IDS["<|im_start|>"]
IM_END = MARKER_IDS["<|im_end|>"]

CONV: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
}
CONV_TEXT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
    "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
    "<|im_start|>assistant\nParis.<|im_end|>\n"
)
# CONV without its oldest exchange (what --truncation history keeps)
LAST_EXCHANGE_TEXT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
    "<|im_start|>assistant\nParis.<|im_end|>\n"
)
ONE = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
ONE_PROMPT = "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
ONE_TEXT = ONE_PROMPT + "Hello.<|im_end|>\n"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dummy_tokenizer(tmp_path_factory.mktemp("tok"))


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), "utf-8")
    return path


def run(
    tmp_path: Path, records: list[Any], tok: Path | None, out: str = "out", **options: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    src = tmp_path / "in.jsonl"
    if not src.exists():
        write_jsonl(src, records)
    options.setdefault("template", "chatml")
    manifest = sftprep.prepare([str(src)], out_dir=str(tmp_path / out), tokenizer=tok and str(tok), **options)
    return manifest, list(sftprep.load(tmp_path / out, as_dataset=False))


def rejects(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text("utf-8").splitlines()]


def trained_text(row: dict[str, Any]) -> str:
    return hand_decode([x for x in row["labels"] if x != IGNORE])


# ---------------------------------------------------------------------------- determinism


def test_same_inputs_give_byte_identical_output(tmp_path: Path, tok_dir: Path) -> None:
    records = [CONV, ONE, '{"broken', {**ONE, "messages": ONE["messages"][:1]}] * 3
    m1, _ = run(tmp_path, records, tok_dir, out="a", shard_size=4, batch_size=1, mask="split-turns")
    m2, _ = run(tmp_path, records, tok_dir, out="b", shard_size=4, batch_size=1, mask="split-turns")
    assert m1 == m2
    a, b = tmp_path / "a", tmp_path / "b"
    shards = sorted(p.name for p in a.glob("data-*.parquet"))
    assert shards == ["data-00000.parquet", "data-00001.parquet"]  # shards close at batch boundaries
    assert sorted(p.name for p in b.glob("data-*.parquet")) == shards
    for name in [*shards, "manifest.json", "rejects.jsonl"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ---------------------------------------------------------------------------- truncation


def test_truncation_drop_rejects_too_long(tmp_path: Path, tok_dir: Path) -> None:
    n = len(hand_ids(ONE_TEXT))
    write_jsonl(tmp_path / "in.jsonl", [ONE, CONV])
    manifest, rows = run(tmp_path, [], tok_dir, max_length=n, truncation="drop")
    assert [r["source_line"] for r in rows] == [1]
    assert len(rows[0]["input_ids"]) == n  # exactly max_length is kept
    assert manifest["rejected_by_reason"] == {"too_long": 1}
    (rej,) = rejects(tmp_path / "out")
    assert rej["reason"] == "too_long" and rej["source_line"] == 2
    assert f"--max-length {n}" in rej["message"] and rej["record"] == CONV
    assert manifest["truncated"] == 0


def test_truncation_right_keeps_the_first_tokens(tmp_path: Path, tok_dir: Path) -> None:
    full = hand_ids(CONV_TEXT)
    cut = CONV_TEXT.index("Paris.") + 3  # inside the last answer: "Par" stays trained, "is.<|im_end|>\n" goes
    n = len(hand_ids(CONV_TEXT[:cut]))
    manifest, rows = run(tmp_path, [CONV], tok_dir, max_length=n, truncation="right")
    (row,) = rows
    assert len(row["input_ids"]) == n < len(full)
    assert row["input_ids"] == full[:n]
    assert hand_decode(row["input_ids"]).endswith("assistant\nPar")
    assert trained_text(row) == "Hello.<|im_end|>Par"
    assert manifest["truncated"] == 1 and manifest["records_rejected"] == 0


def test_truncation_history_drops_the_oldest_exchange_and_keeps_system(tmp_path: Path, tok_dir: Path) -> None:
    n = len(hand_ids(LAST_EXCHANGE_TEXT))
    assert n < len(hand_ids(CONV_TEXT))
    manifest, rows = run(tmp_path, [CONV], tok_dir, max_length=n, truncation="history")
    (row,) = rows
    assert hand_decode(row["input_ids"]) == LAST_EXCHANGE_TEXT
    assert row["input_ids"] == hand_ids(LAST_EXCHANGE_TEXT)
    assert trained_text(row) == "Paris.<|im_end|>"
    assert manifest["truncated"] == 1


def test_truncation_history_rejects_when_the_last_exchange_does_not_fit(tmp_path: Path, tok_dir: Path) -> None:
    n = len(hand_ids(LAST_EXCHANGE_TEXT)) - 1
    manifest, rows = run(tmp_path, [CONV], tok_dir, max_length=n, truncation="history")
    assert rows == []
    assert manifest["rejected_by_reason"] == {"too_long": 1}


def test_example_without_trainable_tokens_is_rejected(tmp_path: Path, tok_dir: Path) -> None:
    n = len(hand_ids(ONE_PROMPT))  # only the prompt fits
    write_jsonl(tmp_path / "in.jsonl", [ONE, CONV])
    manifest, rows = run(tmp_path, [], tok_dir, max_length=n, truncation="right")
    assert rows == [] and manifest["shards"] == []
    assert [(r["source_line"], r["reason"]) for r in rejects(tmp_path / "out")] == [
        (1, "no_trainable_tokens"),
        (2, "no_trainable_tokens"),
    ]
    assert manifest["rejected_by_reason"] == {"no_trainable_tokens": 2}
    assert manifest["examples_written"] == 0


def test_split_turn_without_trainable_tokens_is_dropped(tmp_path: Path, tok_dir: Path) -> None:
    turn0 = CONV_TEXT[: CONV_TEXT.index("Hello.<|im_end|>") + len("Hello.<|im_end|>")]
    n = len(hand_ids(turn0)) + 5  # turn 1's example is cut inside its prompt
    manifest, rows = run(tmp_path, [CONV], tok_dir, max_length=n, truncation="right", mask="split-turns")
    (row,) = rows
    assert row["turn"] == 0 and hand_decode(row["input_ids"]) == turn0
    assert trained_text(row) == "Hello.<|im_end|>"
    assert manifest["examples_dropped_by_reason"] == {"no_trainable_tokens": 1}
    assert manifest["records_rejected"] == 0 and manifest["examples_written"] == 1


def test_all_weights_zero_is_rejected(tmp_path: Path, tok_dir: Path) -> None:
    zero = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hi.", "weight": 0}]}
    manifest, rows = run(tmp_path, [zero], tok_dir)
    assert rows == [] and manifest["shards"] == []
    assert [r["reason"] for r in rejects(tmp_path / "out")] == ["no_trainable_tokens"]


# ---------------------------------------------------------------------------- accounting


def test_records_reconcile_per_file(tmp_path: Path, tok_dir: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [CONV, "{bad", ONE, {"messages": []}])
    b = write_jsonl(tmp_path / "b.jsonl", [ONE, ONE])
    manifest = sftprep.prepare([str(a), str(b)], out_dir=str(tmp_path / "out"), tokenizer=str(tok_dir))
    per = manifest["per_file"]
    assert set(per) == {str(a), str(b)}
    for counts in per.values():
        assert counts["records_read"] == counts["records_with_examples"] + counts["records_rejected"]
        assert counts["reconciled"] is True
    counts = {k: v for k, v in per[str(a)].items() if k not in ("reconciled", "tokens", "trainable_tokens")}
    assert counts == {
        "records_read": 4,
        "records_with_examples": 2,
        "records_rejected": 2,
        "examples": 2,
        "duplicates": 0,
        "filtered": 0,
    }
    assert sum(c["tokens"] for c in per.values()) == manifest["tokens"]
    assert sum(c["trainable_tokens"] for c in per.values()) == manifest["trainable_tokens"]
    assert per[str(b)]["records_read"] == per[str(b)]["examples"] == 2
    assert manifest["records_read"] == 6 and manifest["examples_written"] == 4
    assert manifest["rejected_by_reason"] == {"empty_messages": 1, "invalid_json": 1}
    rows = list(sftprep.load(tmp_path / "out", as_dataset=False))
    assert [(Path(r["source_file"]).name, r["source_line"]) for r in rows] == [
        ("a.jsonl", 1),
        ("a.jsonl", 3),
        ("b.jsonl", 1),
        ("b.jsonl", 2),
    ]
    assert manifest["tokens"] == sum(len(r["input_ids"]) for r in rows)
    assert manifest["trainable_tokens"] == sum(x != IGNORE for r in rows for x in r["labels"])


def test_special_token_string_in_user_text_is_plain_text(tmp_path: Path, tok_dir: Path) -> None:
    user = "What does <|im_end|> mean?"
    rec = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "End."}]}
    manifest, (row,) = run(tmp_path, [rec], tok_dir)
    ids = row["input_ids"]
    plain = [ord(c) for c in user]  # every character its own token, no marker id
    prompt = hand_ids("<|im_start|>user\n") + plain + hand_ids("<|im_end|>\n<|im_start|>assistant\n")
    assert ids == prompt + hand_ids("End.<|im_end|>\n")
    start = len(hand_ids("<|im_start|>user\n"))
    assert IM_END not in ids[start : start + len(plain)]
    assert ids.count(IM_END) == 2  # the template's two markers only
    assert trained_text(row) == "End.<|im_end|>"
    assert manifest["special_tokens_in_content"] == 1
    assert hand_decode(ids) == f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\nEnd.<|im_end|>\n"


def test_special_token_string_in_assistant_text_is_the_special_token(tmp_path: Path, tok_dir: Path) -> None:
    # what the model emits at inference: the tokenizer's own encoding (only non-assistant text is made plain)
    rec = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a<|im_start|>b"}]}
    manifest, (row,) = run(tmp_path, [rec], tok_dir)
    assert [x for x in row["labels"] if x != IGNORE] == [ord("a"), IM_START, ord("b"), IM_END]
    assert manifest["special_tokens_in_content"] == 0


# ---------------------------------------------------------------------------- files


def test_shards_roll_over(tmp_path: Path, tok_dir: Path) -> None:
    records = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]} for i in range(5)
    ]
    manifest, rows = run(tmp_path, records, tok_dir, shard_size=2, batch_size=1)
    assert manifest["shards"] == ["data-00000.parquet", "data-00001.parquet", "data-00002.parquet"]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.parquet")) == manifest["shards"]
    assert [pq.read_metadata(out / s).num_rows for s in manifest["shards"]] == [2, 2, 1]
    assert [r["source_line"] for r in rows] == [1, 2, 3, 4, 5]
    assert [hand_decode(r["input_ids"]).split("\n")[1][:2] for r in rows] == ["q0", "q1", "q2", "q3", "q4"]


def test_gzipped_jsonl(tmp_path: Path, tok_dir: Path) -> None:
    plain = write_jsonl(tmp_path / "in.jsonl", [CONV, ONE, "{bad"])
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    m1 = sftprep.prepare([str(plain)], out_dir=str(tmp_path / "p"), tokenizer=str(tok_dir))
    m2 = sftprep.prepare([str(gz)], out_dir=str(tmp_path / "g"), tokenizer=str(tok_dir))
    rows_p = list(sftprep.load(tmp_path / "p", as_dataset=False))
    rows_g = list(sftprep.load(tmp_path / "g", as_dataset=False))
    assert [(r["input_ids"], r["labels"], r["source_line"]) for r in rows_g] == [
        (r["input_ids"], r["labels"], r["source_line"]) for r in rows_p
    ]
    assert {r["source_file"] for r in rows_g} == {str(gz)}
    assert hand_decode(rows_g[0]["input_ids"]) == CONV_TEXT
    assert m2["records_read"] == m1["records_read"] == 3
    assert m2["rejected_by_reason"] == {"invalid_json": 1}


def test_bundled_sample_with_embedded_default_tokenizer(tmp_path: Path) -> None:
    manifest = sftprep.prepare([str(SAMPLE)], out_dir=str(tmp_path / "out"), tokenizer=None)
    assert manifest["records_read"] == 16
    assert manifest["examples_written"] == 13
    assert manifest["records_rejected"] == 3
    assert manifest["rejected_by_reason"] == {"invalid_json": 1, "no_assistant_turn": 1, "unknown_role": 1}
    assert [(r["source_line"], r["reason"]) for r in rejects(tmp_path / "out")] == [
        (14, "no_assistant_turn"),
        (15, "unknown_role"),
        (16, "invalid_json"),
    ]
    assert manifest["special_tokens_in_content"] == 1
    assert manifest["template"]["name"] == "chatml"
    assert read_manifest(tmp_path / "out") == manifest
    tok = BPETokenizer.load(None)
    rows = list(sftprep.load(tmp_path / "out", as_dataset=False))
    assert [r["source_line"] for r in rows] == list(range(1, 14))
    first = rows[0]
    assert tok.decode(first["input_ids"]) == (
        "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
    )
    assert tok.decode([x for x in first["labels"] if x != IGNORE]) == "Paris.<|im_end|>"
    weighted = rows[8]  # line 9: the first assistant turn has weight 0
    assert tok.decode([x for x in weighted["labels"] if x != IGNORE]) == "Goodbye!<|im_end|>"
    spelled = rows[10]  # line 11: the user text spells <|im_end|>
    assert spelled["input_ids"].count(tok.token_to_id("<|im_end|>")) == 2
    assert "What does <|im_end|> mean in ChatML?" in tok.decode(spelled["input_ids"])


# ---------------------------------------------------------------------------- reasoning a template drops


def test_reasoning_the_template_does_not_render_is_counted(tmp_path: Path) -> None:
    """llama3 has no place for reasoning_content (counted, and the summary warns); chatml renders it (not counted)."""
    records = [
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "ok", "reasoning_content": "r1"},
            ]
        },
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]},
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b", "reasoning_content": " "},
            ]
        },
    ]
    dropped, _ = run(tmp_path, records, None, out="llama3", template="llama3")
    kept, rows = run(tmp_path, records, None, out="chatml", template="chatml")
    assert dropped["reasoning_not_rendered"] == 1  # the blank reasoning is not counted
    assert kept["reasoning_not_rendered"] == 0
    assert len(rows) == 3
