"""`sftprep generate`: prompts tokenised exactly as in training; greedy decoding to the end of turn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from train_helpers import prepare_records, tiny_config

from sftprep.errors import ConfigError
from sftprep.train.bundle import load_data_bundle
from sftprep.train.commands import generate_command
from sftprep.train.data import read_parquet
from sftprep.train.generate import PromptRenderer
from sftprep.train.loop import train

IGNORE = -100
JINJA = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATS = [
    [("user", "What is 12 + 30?"), ("assistant", "42")],
    [("user", "Spell <|im_start|> please"), ("assistant", "ok")],  # a special-token string in content
    [("user", "a"), ("assistant", "b"), ("user", "c?"), ("assistant", "d")],
]


def records() -> list[dict[str, Any]]:
    return [{"messages": [{"role": r, "content": c} for r, c in chat]} for chat in CHATS]


def trained_region_starts(labels: np.ndarray) -> list[int]:
    trained = labels != IGNORE
    return [i for i in range(len(labels)) if trained[i] and (i == 0 or not trained[i - 1])]


@pytest.mark.parametrize("template", ["chatml", "jinja"])
def test_prompt_tokens_equal_the_training_prefix(tmp_path: Path, template: str) -> None:
    if template == "jinja":
        path = tmp_path / "chat.jinja"
        path.write_text(JINJA)
        template = str(path)
    data = prepare_records(tmp_path, records(), template=template, system_prompt="Be brief.")
    renderer = PromptRenderer(load_data_bundle(data))
    for chat, (ids, labels) in zip(CHATS, read_parquet(data)):
        starts = trained_region_starts(labels)
        users = [k for k, (role, _) in enumerate(chat) if role == "user"]
        assert len(starts) == len(users)
        for start, k in zip(starts, users):
            messages = [{"role": r, "content": c} for r, c in chat[: k + 1]]
            prompt = renderer.render(messages)
            assert prompt.input_ids == ids[:start].tolist(), (template, chat[: k + 1])
            assert prompt.text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")  # the recorded policy
            assert prompt.text.endswith("<|im_start|>assistant\n")
            assert prompt.stop_text == "<|im_end|>" and prompt.stop_ids == {1}


def test_prompt_must_not_end_with_an_assistant_turn(tmp_path: Path) -> None:
    renderer = PromptRenderer(load_data_bundle(prepare_records(tmp_path, records())))
    with pytest.raises(ConfigError, match="must end with a user"):
        renderer.render([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_generate_replies_what_the_model_learned_and_stops_at_end_of_turn(tmp_path: Path) -> None:
    chats = [
        {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hello there"}]},
        {"messages": [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1 2 3"}]},
    ] * 8
    data = prepare_records(tmp_path, chats)
    out = tmp_path / "model"
    result = train(tiny_config(data, out, max_steps=60, lr=1e-2, warmup_steps=2, batch_size=4))
    assert result.losses[-1] < 0.5
    assert generate_command(out, prompt="Say hi") == "hello there"
    assert generate_command(out, prompt="Count", max_new_tokens=20) == "1 2 3"  # stopped at <|im_end|>
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps([{"role": "user", "content": "Say hi"}]))
    assert generate_command(out, messages=messages) == "hello there"
    with pytest.raises(ConfigError, match="exactly one"):
        generate_command(out)
    assert len(generate_command(out, prompt="Say hi", raw=True, max_new_tokens=3)) > 0
