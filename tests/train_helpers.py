"""Small prepared datasets and tiny training configs shared by the tests/train/test_train_*.py files."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

import sftprep
from sftprep.train.config import TinyModelConfig, TrainConfig

# Tiny models: one intra-op thread is as fast as two on an idle machine, and on a busy one (tests in
# parallel) two threads wait on each other at every op and run 10x slower.
torch.set_num_threads(1)

TINY = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=512)


def chat(a: int, b: int, system: bool = True, turns: int = 1) -> dict[str, Any]:
    messages: list[dict[str, str]] = [{"role": "system", "content": "Add."}] if system else []
    for k in range(turns):
        messages += [
            {"role": "user", "content": f"What is {a + k} + {b}?"},
            {"role": "assistant", "content": str(a + k + b)},
        ]
    return {"messages": messages}


def addition_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Chats of different lengths: with/without system prompt, one to three exchanges."""
    rng = random.Random(seed)
    return [
        chat(rng.randint(10, 99), rng.randint(10, 99), system=rng.random() < 0.5, turns=rng.randint(1, 3))
        for _ in range(n)
    ]


def prepare_records(tmp: Path, records: list[dict[str, Any]], name: str = "data", **options: Any) -> Path:
    src = tmp / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    out = tmp / name
    options.setdefault("template", "chatml")
    sftprep.prepare(str(src), str(out), overwrite=True, **options)
    return out


def tiny_config(data_dir: Path, out_dir: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "data_dir": str(data_dir),
        "out_dir": str(out_dir),
        "tiny": TINY,
        "batch_size": 4,
        "max_steps": 4,
        "lr": 1e-3,
        "quiet": True,
        "tensorboard": False,
        "overwrite": True,
    }
    values.update(overrides)
    return TrainConfig(**values)
