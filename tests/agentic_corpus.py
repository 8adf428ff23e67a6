"""A deterministic corpus of realistic chat records for issue #18 (exact masks on agentic conversations).

Records are sampled from the real datasets in ../shared/data (glaive tool calls en/zh, the OpenAI cookbook drone
set, LLaMA-Factory's reasoning + tool-use demo and v1 demo, FastChat multi-turn, Alpaca pairs) and generated from
their material (real tool schemas, calls, results, answers and reasoning) for the shapes agentic data has:
parallel calls, call/result loops, reasoning on every turn or the last only, reasoning with a call, empty and null
content with calls, [system, assistant], named tool messages, Chinese text, per-message loss_weight 0.

`build_corpus(n_per_source, seed)` returns the records; `write_jsonl` writes them. The same arguments always
give the same records. The corpus never copies whole files: it is built from ../shared at run time.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
DEFAULT_N = 4  # per source: ~80 records, what the test prepares for every template
REPORT_N = 25  # what tests/agentic_report.py prepares by default
MAX_CHARS = 6000  # sampled records longer than this (JSON) are skipped: keeps 88 templates x corpus fast


def _load(rel: str) -> list[Any]:
    path = DATA / rel
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(json.loads(text))


@cache
def _data(rel: str) -> tuple[Any, ...]:
    return tuple(r for r in _load(rel) if len(json.dumps(r, ensure_ascii=False)) <= MAX_CHARS)


def _sample(rng: random.Random, pool: Sequence[Any], n: int, prefer: Callable[[Any], bool] | None = None) -> list[Any]:
    """n records, two thirds of them (when there are enough) satisfying `prefer`."""
    pool = list(pool)
    if prefer is None:
        return rng.sample(pool, min(n, len(pool)))
    good, rest = [r for r in pool if prefer(r)], [r for r in pool if not prefer(r)]
    k = min(len(good), n - n // 3)
    return rng.sample(good, k) + rng.sample(rest, min(len(rest), n - k))


def _has(conv_from: str) -> Callable[[Any], bool]:
    return lambda r: any(t.get("from") == conv_from for t in r["conversations"])


def _copy(r: Any) -> Any:
    return json.loads(json.dumps(r))


# ------------------------------------------------------------------------------------------- material


@dataclass(frozen=True)
class Call:
    """One real tool use from glaive: the question, the tools, the call, its result and the final answer."""

    question: str
    tools: list[dict[str, Any]]
    name: str
    arguments: dict[str, Any]
    result: str
    answer: str


@cache
def _calls(rel: str) -> tuple[Call, ...]:
    out = []
    for r in _data(rel):
        conv, tools = r["conversations"], json.loads(r.get("tools") or "[]")
        for k in range(1, len(conv) - 2):
            a, b, c, d = conv[k - 1 : k + 3]
            if (a["from"], b["from"], c["from"], d["from"]) == ("human", "function_call", "observation", "gpt"):
                call = json.loads(b["value"])
                if isinstance(call, dict) and isinstance(call.get("arguments"), dict):
                    out.append(Call(a["value"], tools, call["name"], call["arguments"], c["value"], d["value"]))
    return tuple(out)


@cache
def _reasonings() -> tuple[str, ...]:
    texts = []
    for r in _data("llama_factory/reason_tool_use_demo_50.jsonl"):
        for m in r["messages"]:
            if isinstance(m["content"], list):
                texts += [p["value"][:600] for p in m["content"] if p["type"] == "reasoning"]
    return tuple(texts)


def _pairs(rel: str) -> list[tuple[str, str]]:
    return [
        (r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""), r["output"][:800])
        for r in _data(rel)
        if len(r["output"]) < 1500
    ]


def _call_id(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=9))  # mistral templates require 9 alnum


def _openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t if "function" in t else {"type": "function", "function": t} for t in tools]


def _tool_turns(rng: random.Random, calls: Sequence[Call], content: str | None = "") -> list[dict[str, Any]]:
    """An assistant message calling `calls` in parallel, then one named tool message per call."""
    ids = [_call_id(rng) for _ in calls]
    fns = [{"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)} for c in calls]
    assistant: dict[str, Any] = {"role": "assistant", "content": content}
    if content is None and rng.random() < 0.5:
        del assistant["content"]  # absent or null: both occur in real data
    assistant["tool_calls"] = [{"id": i, "type": "function", "function": f} for i, f in zip(ids, fns)]
    results = [{"role": "tool", "tool_call_id": i, "name": c.name, "content": c.result} for i, c in zip(ids, calls)]
    return [assistant, *results]


# ------------------------------------------------------------------------------------------- generated shapes


def _parallel(rng: random.Random, pool: Sequence[Call]) -> dict[str, Any]:
    c = rng.choice(pool)
    k = rng.choice((2, 3))
    variants = [c, *(rng.choice([x for x in pool if x.name == c.name] or [c]) for _ in range(k - 1))]
    msgs = [{"role": "user", "content": c.question}, *_tool_turns(rng, variants)]
    msgs.append({"role": "assistant", "content": " ".join(v.answer for v in variants)[:900]})
    return {"messages": msgs, "tools": _openai_tools(c.tools)}


def _loop(rng: random.Random, pool: Sequence[Call]) -> dict[str, Any]:
    c1, c2 = rng.sample(list(pool), 2)
    msgs = [{"role": "user", "content": f"{c1.question} {c2.question}"}]
    msgs += _tool_turns(rng, [c1]) + _tool_turns(rng, [c2])
    msgs.append({"role": "assistant", "content": f"{c1.answer} {c2.answer}"})
    return {"messages": msgs, "tools": _openai_tools(c1.tools + [t for t in c2.tools if t not in c1.tools])}


def _chat(rng: random.Random, pairs: Sequence[tuple[str, str]], turns: int, reasoning: str) -> dict[str, Any]:
    """A multi-turn chat; reasoning on `every` turn, the `last` only, or `parts` (content parts, every turn)."""
    msgs: list[dict[str, Any]] = []
    for t, (q, a) in enumerate(rng.sample(list(pairs), turns)):
        think = rng.choice(_reasonings())
        msgs.append({"role": "user", "content": q})
        if reasoning == "parts":
            parts = [{"type": "reasoning", "value": think}, {"type": "text", "value": a}]
            msgs.append({"role": "assistant", "content": parts})
        elif reasoning == "every" or (reasoning == "last" and t == turns - 1):
            msgs.append({"role": "assistant", "content": a, rng.choice(("reasoning_content", "reasoning")): think})
        else:
            msgs.append({"role": "assistant", "content": a})
    return {"messages": msgs}


def _reasoned_call(rng: random.Random, pool: Sequence[Call], content: str | None) -> dict[str, Any]:
    c = rng.choice(pool)
    msgs = [{"role": "system", "content": "You can call tools. Think before you answer."}]
    msgs += [{"role": "user", "content": c.question}, *_tool_turns(rng, [c], content)]
    msgs[2]["reasoning_content"] = rng.choice(_reasonings())
    msgs.append({"role": "assistant", "content": c.answer, "reasoning_content": rng.choice(_reasonings())})
    return {"messages": msgs, "tools": _openai_tools(c.tools)}


def _plain_call(rng: random.Random, pool: Sequence[Call], content: str | None) -> dict[str, Any]:
    c = rng.choice(pool)
    msgs = [{"role": "user", "content": c.question}, *_tool_turns(rng, [c], content)]
    return {"messages": [*msgs, {"role": "assistant", "content": c.answer}], "tools": _openai_tools(c.tools)}


def _sharegpt_parallel(rng: random.Random, pool: Sequence[Call]) -> dict[str, Any]:
    c = rng.choice(pool)
    same = [x for x in pool if x.name == c.name and x is not c][:1] or [c]
    calls = [{"name": x.name, "arguments": x.arguments} for x in (c, *same)]
    conv = [{"from": "human", "value": c.question}, {"from": "function_call", "value": json.dumps(calls)}]
    conv += [{"from": "observation", "value": x.result} for x in (c, *same)]
    conv.append({"from": "gpt", "value": c.answer})
    return {"conversations": conv, "tools": json.dumps(c.tools, ensure_ascii=False)}


def _system_assistant(rng: random.Random, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    q, a = rng.choice(pairs)
    return {"messages": [{"role": "system", "content": q}, {"role": "assistant", "content": a}]}


def _weighted(rng: random.Random, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    (q1, a1), (q2, a2) = rng.sample(list(pairs), 2)
    msgs = [{"role": "user", "content": q1}, {"role": "assistant", "content": a1, "loss_weight": 0.0}]
    return {"messages": [*msgs, {"role": "user", "content": q2}, {"role": "assistant", "content": a2}]}


def _generated(rng: random.Random, n: int) -> list[dict[str, Any]]:
    en, zh = _calls("llama_factory/glaive_toolcall_en_demo.json"), _calls("llama_factory/glaive_toolcall_zh_demo.json")
    pairs_en, pairs_zh = _pairs("llama_factory/alpaca_en_demo.json"), _pairs("llama_factory/alpaca_zh_demo.json")
    makers: list[Callable[[], dict[str, Any]]] = [
        lambda: _parallel(rng, en),
        lambda: _loop(rng, en),
        lambda: _chat(rng, pairs_en, rng.choice((2, 3)), "every"),
        lambda: _chat(rng, pairs_en, rng.choice((2, 3)), "last"),
        lambda: _chat(rng, pairs_zh, 2, "parts"),
        lambda: _reasoned_call(rng, en, ""),
        lambda: _plain_call(rng, en, ""),
        lambda: _plain_call(rng, en, None),
        lambda: _sharegpt_parallel(rng, en),
        lambda: _system_assistant(rng, pairs_en),
        lambda: _loop(rng, zh),
        lambda: _weighted(rng, pairs_zh),
    ]
    return [make() for make in makers for _ in range(n)]


# ------------------------------------------------------------------------------------------- sampled shapes


def _alpaca(rng: random.Random, n: int) -> list[dict[str, Any]]:
    en, zh = _data("llama_factory/alpaca_en_demo.json"), _data("llama_factory/alpaca_zh_demo.json")
    return _sample(rng, en, n - n // 2) + _sample(rng, zh, n // 2)


def build_corpus(n_per_source: int = DEFAULT_N, seed: int = 0) -> list[dict[str, Any]]:
    """The records, in a fixed order: n_per_source from each real source and of each generated shape."""
    rng = random.Random(seed)
    reason = _data("llama_factory/reason_tool_use_demo_50.jsonl")
    n = n_per_source
    records: list[Any] = []
    records += _sample(rng, _data("llama_factory/glaive_toolcall_en_demo.json"), n, _has("function_call"))
    records += _sample(rng, _data("llama_factory/glaive_toolcall_zh_demo.json"), n, _has("function_call"))
    records += _sample(rng, _data("openai_cookbook/drone_training.jsonl"), n)
    records += _sample(rng, reason, n, lambda r: any(m["role"] == "tool" for m in r["messages"]))
    records += _sample(rng, _data("llama_factory/v1_sft_demo.jsonl"), n)
    records += _sample(rng, _data("fastchat/dummy_conversation.json"), n, lambda r: len(r["conversations"]) > 2)
    records += _alpaca(rng, n)
    records += _generated(rng, n)
    return [_copy(r) for r in records]


def write_jsonl(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path
