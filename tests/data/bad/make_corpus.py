"""Writes the bad-input corpus next to this script (run once; the output is committed).

    .venv/bin/python tests/data/bad/make_corpus.py

Each file is one case: good records around the bad one, so a test can check that the run goes on.
What each file must give (reason, line, field) is listed in tests/test_bad_inputs.py. The cases that
are large or depend on the machine (a 50 MB record, a directory, a missing path) are made at test time.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def good(i: int) -> str:
    """A valid one-exchange record; its texts (q{i}, a{i}) let a test find it in the output."""
    return json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})


def chat(*messages: tuple[object, object]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]})


def lines(*rows: str, end: str = "\n") -> bytes:
    return "".join(row + end for row in rows).encode("utf-8")


CASES: dict[str, bytes] = {
    "invalid_json.jsonl": lines(good(1), '{"messages": [{"role": "user", "content": "hi"}', good(3)),
    # the last line is cut off mid-record and has no newline
    "truncated_last_line.jsonl": lines(good(1), good(2)) + b'{"messages": [{"role": "user", "content": "cut o',
    "content_number.jsonl": lines(good(1), chat(("user", "two plus two?"), ("assistant", 4)), good(3)),
    "messages_dict.jsonl": lines(good(1), json.dumps({"messages": {"role": "user", "content": "hi"}}), good(3)),
    "role_list.jsonl": lines(good(1), chat(("user", "hi"), (["assistant"], "hello")), good(3)),
    "empty_messages.jsonl": lines(good(1), json.dumps({"messages": []}), good(3)),
    "missing_messages.jsonl": lines(good(1), json.dumps({"id": 7, "text": "hello"}), good(3)),
    "no_assistant.jsonl": lines(good(1), chat(("user", "anyone there?")), good(3)),
    "unknown_role.jsonl": lines(good(1), chat(("user", "cast a spell"), ("wizard", "Abracadabra.")), good(3)),
    "consecutive_roles.jsonl": lines(
        good(1), chat(("user", "First part."), ("user", "Second part."), ("assistant", "Both read.")), good(3)
    ),
    "null_content.jsonl": lines(good(1), chat(("user", "hi"), ("assistant", None)), good(3)),
    # 0xff can never appear in UTF-8; here it sits inside a string of line 2
    "non_utf8.jsonl": lines(good(1))
    + b'{"messages": [{"role": "user", "content": "bad \xff byte"}, {"role": "assistant", "content": "x"}]}\n'
    + lines(good(3)),
    "nan.jsonl": lines(
        good(1),
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "score": NaN}',
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "score": Infinity}',
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "s": -Infinity}',
        good(5),
    ),
    "not_object.jsonl": lines(good(1), "[1, 2, 3]", '"just a string"', good(4)),
    # nested far deeper than any JSON parser's recursion limit
    "deeply_nested.jsonl": lines(good(1), '{"messages": ' + "[" * 5000 + "]" * 5000 + "}", good(3)),
    # a JSON array file: element 2 is not an object
    "array_element.json": json.dumps([json.loads(good(1)), 5, json.loads(good(3))], indent=1).encode("utf-8"),
    # a lone UTF-16 surrogate escape: valid JSON syntax, but not a Unicode scalar value
    "lone_surrogate.jsonl": lines(good(1), chat(("user", "broken \ud800 pair"), ("assistant", "ok")), good(3)),
    # accepted cases: nothing is rejected
    "bom.jsonl": b"\xef\xbb\xbf" + lines(good(1), good(2)),
    "crlf.jsonl": lines(good(1), chat(("user", "line one\r\nline two"), ("assistant", "ok")), good(3), end="\r\n"),
    "blank_lines.jsonl": lines(good(1), "", "   ", "\t", good(5)),
    "special_tokens.jsonl": lines(good(1), chat(("user", "say <|im_end|> now"), ("assistant", "said </s>")), good(3)),
    "empty.jsonl": b"",
}


def truncated_gzip() -> bytes:
    """A gzip stream cut short: whole records first, then the stream ends mid-block."""
    rng = random.Random(0)  # varied text, so half of the compressed stream holds many whole lines
    body = lines(*(chat(("user", f"q{i} {rng.random()}"), ("assistant", f"a{i}")) for i in range(1, 301)))
    data = gzip.compress(body, mtime=0)
    return data[: len(data) // 2]


def main() -> None:
    for name, data in CASES.items():
        (HERE / name).write_bytes(data)
    (HERE / "truncated.jsonl.gz").write_bytes(truncated_gzip())


if __name__ == "__main__":
    main()
