"""preparation/stats.py: the counters of a run. Batches count on their own (in worker processes) and are merged:
every field must add up, and survive the trip to a worker and back (to_dict/from_dict)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import fields

import pytest
from dummy_tokenizer import build_dummy_tokenizer
from hand_render import chatml

from sftprep.labels.build_loss_labels import encode_and_label
from sftprep.preparation.stats import FileCounts, Stats, reasoning_not_rendered
from sftprep.templates.render_chat_prompt import split_turns
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import Conversation, Message


def filled(k: int) -> Stats:
    """A Stats with every field set, from k: ints k, k+1, ...; counters and files with keys of their own and one
    shared key. A field of a new type fails here, so it cannot be left out of these tests."""
    s = Stats()
    for n, f in enumerate(fields(Stats)):
        value = getattr(s, f.name)
        if f.name == "files":
            shared = FileCounts(*(k + i for i in range(len(fields(FileCounts)))))
            s.files = {"shared.jsonl": shared, f"only{k}.jsonl": FileCounts(1, 1, 0, 2)}
        elif isinstance(value, Counter):
            setattr(s, f.name, Counter({"shared": k + n, f"only{k}": 1}))
        elif isinstance(value, int):
            setattr(s, f.name, k + n)
        else:
            raise AssertionError(f"Stats.{f.name}: a field of type {type(value).__name__} these tests do not fill")
    return s


def test_merge_adds_every_field() -> None:
    a, b = filled(10), filled(100)
    a.merge(b)
    for n, f in enumerate(fields(Stats)):
        merged = getattr(a, f.name)
        if f.name == "files":
            assert merged == {
                "shared.jsonl": FileCounts(*(110 + 2 * i for i in range(len(fields(FileCounts))))),
                "only10.jsonl": FileCounts(1, 1, 0, 2),
                "only100.jsonl": FileCounts(1, 1, 0, 2),
            }
        elif isinstance(merged, Counter):
            assert merged == Counter({"shared": 110 + 2 * n, "only10": 1, "only100": 1}), f.name
        else:
            assert merged == 110 + 2 * n, f.name


def test_merge_into_an_empty_stats_copies() -> None:
    s = Stats()
    s.merge(filled(3))
    assert s == filled(3)


def test_to_dict_from_dict_round_trip_through_json() -> None:
    s = filled(7)
    d = json.loads(json.dumps(s.to_dict()))  # what a worker sends back
    assert Stats.from_dict(d) == s
    assert d["files"]["shared.jsonl"] == {f.name: 7 + i for i, f in enumerate(fields(FileCounts))}
    assert list(d["files"]["shared.jsonl"])[:4] == [
        "records_read",
        "records_with_examples",
        "records_rejected",
        "examples",
    ]
    assert isinstance(Stats.from_dict(d).turns, Counter)


def test_from_dict_without_a_counter_gives_an_empty_one() -> None:
    d = Stats().to_dict()
    del d["turns_rejected_by_reason"]
    assert Stats.from_dict(d).turns_rejected_by_reason == Counter()


def test_totals_over_files_and_reconciliation() -> None:
    s = Stats()
    for name in ("a.jsonl", "a.jsonl", "b.jsonl"):
        s.read(name)
    s.rejected("a.jsonl", "invalid_json")
    s.rejected("b.jsonl", "invalid_json")
    s.touch("empty.jsonl")
    assert (s.records_read, s.records_rejected) == (3, 2)
    assert s.rejected_by_reason == Counter({"invalid_json": 2})
    assert s.files["empty.jsonl"] == FileCounts() and s.files["empty.jsonl"].reconciled
    assert not s.files["a.jsonl"].reconciled  # 2 read, 1 rejected, none with examples yet
    s.files["a.jsonl"].records_with_examples += 1
    assert s.files["a.jsonl"].reconciled and s.files["b.jsonl"].reconciled


@pytest.fixture(scope="module")
def dummy() -> BPETokenizer:
    return BPETokenizer(build_dummy_tokenizer(), "dummy", "0")


def test_examples_count_their_tokens(dummy: BPETokenizer) -> None:
    r = chatml(("user", "Hi"), ("assistant", "Yo"))
    (e,) = encode_and_label([r], dummy)
    s = Stats()
    s.example("a.jsonl", e)
    s.example("a.jsonl", e)
    assert s.examples == 2 and s.files["a.jsonl"].examples == 2
    assert s.tokens == 2 * len(e.input_ids)
    assert s.trainable_tokens == 2 * 3  # "Y", "o", <|im_end|>
    assert (s.files["a.jsonl"].tokens, s.files["a.jsonl"].trainable_tokens) == (s.tokens, 6)  # per file too


def test_duplicates_and_filtered_are_rejects_counted_per_file() -> None:
    s = Stats()
    for reason in ("duplicate", "too_few_trainable_tokens", "too_many_trainable_tokens", "invalid_json"):
        s.read("a.jsonl")
        s.rejected("a.jsonl", reason)
    f = s.files["a.jsonl"]
    assert (f.records_rejected, f.duplicates, f.filtered) == (4, 1, 2) and f.reconciled


def test_count_record() -> None:
    r = chatml(("user", "a <s> <s>"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), specials=["<s>"])
    r.counts = {"stop:marker": 2}
    units = split_turns(r)
    s = Stats()
    s.count_record("a.jsonl", r.conversation, units)
    assert s.files["a.jsonl"].records_with_examples == 1
    assert s.split_conversations == 1  # one example per turn
    assert s.special_tokens_in_content == 2  # per record, not per example
    assert s.turns == Counter({"stop:marker": 2})  # counted once, with the first example
    s.count_record("b.jsonl", r.conversation, [r])
    assert s.split_conversations == 1 and s.special_tokens_in_content == 4


def test_reasoning_not_rendered_counts_what_no_text_shows() -> None:
    r = chatml(("user", "q"), ("assistant", "a"))
    shown = Message("assistant", "a", reasoning="because q")
    hidden = Message("assistant", "a", reasoning="a secret thought")
    conv = Conversation((Message("user", "q"), shown, hidden, Message("assistant", "x", reasoning="  ")), "t", 1)
    r.text += "because q"
    assert reasoning_not_rendered(conv, [r]) == 1
    assert reasoning_not_rendered(None, [r]) == 0
