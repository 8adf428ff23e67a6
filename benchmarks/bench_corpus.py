"""The throughput benchmark's corpora (issue #5): the Alpaca, ShareGPT and OpenAI-format sets of ../shared/data
as OpenAI {"messages": [...]} JSONL, repeated to >= 15,000 conversations and >= 3M tokens, plus the 10x and
the 2-turn / 40-turn corpora; built once and cached (see benchmarks/README.md)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOK_DIR = Path(__file__).resolve().parents[2] / "shared" / "tokenizers" / "qwen2.5"
CACHE = Path(os.environ.get("SFTPREP_BENCH_CACHE", "/tmp/sftprep-bench"))
CORPUS_VERSION = "3"  # bump when the corpus construction changes
MIN_CONVS, MIN_TOKENS = 15_000, 3_000_000
TURN_PAIRS, TURNS_TOKENS = 20, 1_500_000  # 40-turn conversations; tokens in each turn corpus
Message = dict[str, str]
Result = dict[str, Any]


# -- corpus: the Alpaca, ShareGPT and OpenAI-format sets as OpenAI {"messages": [{role, content}]} ------------
def _alpaca(rec: dict[str, Any]) -> list[Message] | None:  # these sets have no system or history fields
    prompt = rec.get("instruction", "") + ("\n\n" + rec["input"] if rec.get("input") else "")
    if not prompt.strip() or not rec.get("output"):
        return None
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": rec["output"]}]


def _tool_call(name: str, arguments: Any) -> str:
    """An assistant tool call as the Qwen2.5 template writes it, as plain content."""
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "\n</tool_call>"


def _sharegpt(rec: dict[str, Any]) -> list[Message] | None:  # the glaive "tools" field is left out
    roles = {"human": "user", "user": "user", "gpt": "assistant", "system": "system", "observation": "tool"}
    msgs = []
    for turn in rec["conversations"]:
        if turn["from"] == "function_call":
            call = json.loads(turn["value"])
            msgs.append({"role": "assistant", "content": _tool_call(call["name"], call.get("arguments", {}))})
        elif turn["from"] in roles:
            msgs.append({"role": roles[turn["from"]], "content": turn["value"]})
        else:
            return None
    return msgs


def _openai(rec: dict[str, Any]) -> list[Message] | None:
    msgs = []
    for m in rec["messages"]:
        content = m.get("content") or ""
        if isinstance(content, list):  # LLaMA-Factory v1 parts: [{"type": "text", "value": ...}]
            content = "".join(p.get("value", p.get("text", "")) for p in content if p.get("type") == "text")
        calls = [_tool_call(c["function"]["name"], c["function"]["arguments"]) for c in m.get("tool_calls") or []]
        msgs.append({"role": m["role"], "content": "\n".join([content, *calls] if content else calls)})
    return msgs


SOURCES: dict[str, tuple[Callable[[dict[str, Any]], list[Message] | None], list[str]]] = {
    "alpaca": (_alpaca, ["llama_factory/alpaca_*_demo.json", "alpaca_data_cleaned/*.json"]),
    "sharegpt": (_sharegpt, ["fastchat/dummy_conversation.json", "llama_factory/glaive_toolcall_en_demo.json"]),
    "openai": (_openai, ["openai_cookbook/*.jsonl", "llama_factory/v1_sft_demo.jsonl"]),
}  # fmt: skip


def _records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()] if path.suffix == ".jsonl" else json.loads(text)


def base_conversations() -> tuple[list[list[Message]], dict[str, int]]:
    """Every convertible record with a user and an assistant turn; per-file counts."""
    convs: list[list[Message]] = []
    counts: dict[str, int] = {}
    for convert, patterns in SOURCES.values():
        for path in sorted(p for pat in patterns for p in DATA.glob(pat)):
            got = [c for c in map(convert, _records(path)) if c and {"user", "assistant"} <= {m["role"] for m in c}]
            counts[str(path.relative_to(DATA))] = len(got)
            convs += got
    return convs, counts


def _write_jsonl(path: Path, convs: list[list[Message]], copies: int = 1) -> None:
    text = "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in convs)
    path.write_text(text * copies, encoding="utf-8")


def ensure_corpus() -> Result:
    """The corpora (cached under CACHE, keyed by the data files and CORPUS_VERSION) and their counts."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    h = hashlib.sha256(CORPUS_VERSION.encode())
    for p in sorted(q for q in DATA.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(DATA)}:{p.stat().st_size}:{p.stat().st_mtime_ns}".encode())
    d = CACHE / f"corpus-{h.hexdigest()[:16]}"
    if (d / "meta.json").exists():
        return json.loads((d / "meta.json").read_text())
    d.mkdir(parents=True, exist_ok=True)
    convs, per_file = base_conversations()
    hf_tok = AutoTokenizer.from_pretrained(str(TOK_DIR))
    tok = Tokenizer.from_file(str(TOK_DIR / "tokenizer.json"))

    def tokens(cs: list[list[Message]]) -> list[int]:  # with the template, as every system counts them
        return [len(e.ids) for e in tok.encode_batch_fast([hf_tok.apply_chat_template(c, tokenize=False) for c in cs])]

    texts = [hf_tok.apply_chat_template(c, tokenize=False) for c in convs]
    base_tokens = sum(len(e.ids) for e in tok.encode_batch_fast(texts))
    copies = max(-(-MIN_CONVS // len(convs)), -(-MIN_TOKENS // base_tokens))
    _write_jsonl(d / "corpus.jsonl", convs, copies)
    (d / "rendered.json").write_text(json.dumps(texts * copies, ensure_ascii=False), encoding="utf-8")
    _write_jsonl(d / "corpus-10x.jsonl", convs, copies * 10)
    # Cost per turn: the same user/assistant pairs (spread over the set) as 40-turn and as 2-turn conversations,
    # the 2-turn set cut to the 40-turn set's token total (each conversation also gets the default system prompt).
    pairs = [c for c in convs if [m["role"] for m in c] == ["user", "assistant"]]
    random.Random(0).shuffle(pairs)
    n = next(i for i, t in enumerate(accumulate(tokens(pairs)), 1) if t >= TURNS_TOKENS and i % TURN_PAIRS == 0)
    picked = pairs[:n]
    long = [[m for p in picked[i : i + TURN_PAIRS] for m in p] for i in range(0, n, TURN_PAIRS)]
    long_total = sum(tokens(long))
    n_short = next((i for i, t in enumerate(accumulate(tokens(picked)), 1) if t >= long_total), n)
    _write_jsonl(d / "turns-40.jsonl", long)
    _write_jsonl(d / "turns-2.jsonl", picked[:n_short])
    meta = {"dir": str(d), "conversations": len(convs) * copies, "tokens": base_tokens * copies, "copies": copies}
    (d / "meta.json").write_text(json.dumps(meta | {"per_file": per_file}, indent=1))
    return meta
