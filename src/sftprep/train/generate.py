"""`sftprep generate`: render a prompt exactly as in training and decode greedily to the end of turn.

The prompt goes through sftprep's own pipeline (system-prompt policy, role map, template, special
strings in content encoded as plain text) with a placeholder assistant turn; the prompt is every
token before that turn's trained region, i.e. history + generation prompt, as the model saw it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sftprep.errors import ConfigError
from sftprep.labels.build_loss_labels import encode_and_label
from sftprep.preparation.pipeline import Preparer
from sftprep.train.bundle import DataBundle, load_model_bundle
from sftprep.train.model import no_progress_bars
from sftprep.types import RawRecord, RenderedConversation

PLACEHOLDER = "sftprep placeholder reply"
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Prompt:
    input_ids: list[int]
    text: str
    stop_text: str  # the end-of-turn marker (stripped), "" if the template has none
    stop_ids: frozenset[int]


class PromptRenderer:
    """Turns chat messages into prompt token ids with the dataset's tokenizer, template and options."""

    def __init__(self, bundle: DataBundle) -> None:
        self.bundle = bundle
        self.tok = bundle.tokenizer
        opts = bundle.prepare_options(format="messages", inputs=["<prompt>"])
        self.mask_all = opts.mask == "none"
        self.preparer = Preparer(opts, self.tok, bundle.template)

    def _render(self, messages: list[dict[str, Any]]) -> RenderedConversation:
        record = {"messages": [*messages, {"role": "assistant", "content": PLACEHOLDER}]}
        p = self.preparer.render_record(RawRecord("<prompt>", 1, data=record))
        if p.reject is not None:
            raise ConfigError(f"cannot render the prompt with the training template: {p.reject.message}")
        unit = p.units[-1]
        conv = unit.conversation.messages
        if not unit.turns or conv[unit.turns[-1].message_index].content != PLACEHOLDER:
            raise ConfigError("cannot render the prompt: the template did not render the reply turn")
        return unit

    def render(self, messages: list[dict[str, Any]]) -> Prompt:
        if not messages or messages[-1].get("role") == "assistant":
            raise ConfigError("the prompt must end with a user (or tool) message, not an assistant turn")
        unit = self._render(messages)
        turn = unit.turns[-1]
        prompt = replace(
            unit,
            text=unit.text[: turn.start],
            turns=[t for t in unit.turns[:-1] if t.end <= turn.start],
            special_in_content=[s for s in unit.special_in_content if s.end <= turn.start],
        )
        ids = encode_and_label([prompt], self.tok, self.mask_all)[0].input_ids.tolist()
        stop_text = unit.text[turn.content.end : turn.end].strip()
        return Prompt(ids, prompt.text, stop_text, self.stop_ids(stop_text))

    def stop_ids(self, stop_text: str) -> frozenset[int]:
        ids = {self.bundle.eos_id}
        marker = self.tok.token_to_id(stop_text) if stop_text else None
        ids.add(marker)
        return frozenset(i for i in ids if i is not None)

    def raw(self, text: str) -> Prompt:
        """A verbatim prompt (prompt/completion data): no template; generation stops at eos."""
        eos = self.bundle.tokenizer_record.get("eos_token") or ""
        return Prompt(self.tok.encode(text), text, eos, self.stop_ids(eos))


class _StopAtText:
    """Stop once the generated text holds the end-of-turn text (a marker that is not one token)."""

    def __init__(self, text: str, decode: Any, prompt_len: int) -> None:
        self.text, self.decode, self.prompt_len = text, decode, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        tail = input_ids[0, self.prompt_len :][-8:].tolist()
        done = bool(tail) and self.text in self.decode(tail)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def greedy(model: nn.Module, prompt: Prompt, decode: Any, max_new_tokens: int = 256) -> str:
    """Greedy decoding with transformers' `generate` (its KV cache) until a stop id, the stop text, or
    max_new_tokens."""
    from transformers import GenerationConfig, StoppingCriteriaList

    model.eval()
    device = next(model.parameters()).device
    inputs = torch.tensor([prompt.input_ids], device=device)
    stop_ids = sorted(prompt.stop_ids)
    pad = getattr(model.config, "pad_token_id", None)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stop_ids or None,
        pad_token_id=pad if pad is not None else (stop_ids[0] if stop_ids else 0),
    )
    stop_text = [_StopAtText(prompt.stop_text, decode, inputs.shape[1])] if prompt.stop_text else []
    criteria = StoppingCriteriaList(stop_text)
    output = model.generate(  # type: ignore[operator]
        inputs, attention_mask=torch.ones_like(inputs), generation_config=config, stopping_criteria=criteria
    )
    out = output[0, inputs.shape[1] :].tolist()
    if out and out[-1] in prompt.stop_ids:
        out = out[:-1]
    text = decode(out)
    return text.split(prompt.stop_text)[0] if prompt.stop_text else text


def load_for_generation(model_dir: str | Path, device: str | None = None) -> tuple[nn.Module, PromptRenderer]:
    from transformers import AutoModelForCausalLM

    p = Path(model_dir)
    if not p.is_dir():
        what = "no such directory" if not p.exists() else "a file, not a directory"
        raise ConfigError(f"{model_dir}: {what}; give a directory written by `sftprep train`")
    renderer = PromptRenderer(load_model_bundle(model_dir))
    try:
        with no_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{model_dir}: cannot load the model: {first}; train it again with `sftprep train`") from e
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model, renderer


def generate(
    model: nn.Module, renderer: PromptRenderer, messages: list[dict[str, Any]], max_new_tokens: int = 256
) -> str:
    return greedy(model, renderer.render(messages), renderer.tok.decode, max_new_tokens)


def read_messages(path: str | Path) -> list[dict[str, Any]]:
    """A JSON list of {"role", "content"} messages, or an object with a "messages" list."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--messages {path}: cannot read JSON: {e}") from e
    if isinstance(data, dict):
        data = data.get("messages")
    if not isinstance(data, list) or not all(isinstance(m, dict) and m.get("role") in ROLES for m in data):
        raise ConfigError(f"--messages {path}: expected a list of {{role, content}} objects (roles {ROLES})")
    return data
