"""The realistic mix of issue #15: the shared datasets in their own formats and shapes (nothing flattened),
repeated to a few million tokens, one file per shape so each can be timed on its own.

Shapes (files of ../shared/data, records as they are):
  pairs      Alpaca instruction/output pairs: alpaca_en/zh (LLaMA-Factory), GSM8K, toolformer (AlpacaDataCleaned)
  multiturn  ShareGPT multi-turn chats (FastChat), LLaMA-Factory v1 messages with parts and loss weights,
             the OpenAI toy chats (system prompts)
  tools      ShareGPT tool calls with `tools` (glaive en + zh), OpenAI messages with `tools` and `tool_calls`
             (the drone set: content absent on calls)
  reasoning  LLaMA-Factory messages with reasoning parts, tool calls and tool results (reason_tool_use_demo_50)
Non-ASCII share: alpaca_zh and glaive zh (Chinese). Built once and cached under $SFTPREP_BENCH_CACHE.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path(os.environ.get("SFTPREP_BENCH_CACHE", "/tmp/sftprep-bench"))
VERSION = "1"
SHAPES: dict[str, list[str]] = {
    "pairs": [
        "llama_factory/alpaca_en_demo.json",
        "llama_factory/alpaca_zh_demo.json",
        "alpaca_data_cleaned/gsm_8k_train.json",
        "alpaca_data_cleaned/toolformer-dedupe-only-dataset.json",
    ],
    "multiturn": [
        "fastchat/dummy_conversation.json",
        "llama_factory/v1_sft_demo.jsonl",
        "openai_cookbook/toy_chat_fine_tuning.jsonl",
    ],
    "tools": [
        "llama_factory/glaive_toolcall_en_demo.json",
        "llama_factory/glaive_toolcall_zh_demo.json",
        "openai_cookbook/drone_training.jsonl",
    ],
    "reasoning": ["llama_factory/reason_tool_use_demo_50.jsonl"],
}
# Copies of each shape's files: about 2.6M tokens per shape with qwen2.5 (glaive's tool schemas are long), so that
# each shape's rate is steady and a process's startup (about 1 s) weighs alike on each.
COPIES = {"pairs": 1, "multiturn": 20, "tools": 6, "reasoning": 60}


def _records(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def ensure_mix(scale: int = 1) -> dict[str, Any]:
    """{"dir", "files": {shape: path}, "records": {shape: n}}; a JSONL file per shape, `scale` times the copies."""
    h = hashlib.sha256(f"{VERSION}:{scale}:{sorted(COPIES.items())}".encode())
    for files in SHAPES.values():
        for rel in files:
            p = DATA / rel
            h.update(f"{rel}:{p.stat().st_size}:{p.stat().st_mtime_ns}".encode())
    d = CACHE / f"mix-{h.hexdigest()[:16]}"
    meta_path = d / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    d.mkdir(parents=True, exist_ok=True)
    files, counts = {}, {}
    for shape, rels in SHAPES.items():
        lines = [json.dumps(r, ensure_ascii=False) for rel in rels for r in _records(DATA / rel)]
        out = d / f"{shape}.jsonl"
        out.write_text("".join(line + "\n" for line in lines) * (COPIES[shape] * scale), encoding="utf-8")
        files[shape], counts[shape] = str(out), len(lines) * COPIES[shape] * scale
    meta = {"dir": str(d), "files": files, "records": counts}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta
