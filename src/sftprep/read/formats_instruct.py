"""Instruction-style record shapes: Alpaca (instruction/input/output, history, Stanford seed-task
instances) and prompt/completion. Chat shapes are in formats.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sftprep.read.formats import Parsed, _system, invalid, openai_message, parse_tools, wrong_type
from sftprep.read.records import json_type_name
from sftprep.types import Message


def _alpaca_fields(data: Mapping[str, Any]) -> tuple[Any, Any, str]:
    """(input, output, path prefix) from a plain Alpaca record or a one-instance seed task."""
    if "output" in data or "instances" not in data:
        return data.get("input"), data.get("output"), ""
    instances = data["instances"]
    if not isinstance(instances, list):
        raise wrong_type("instances", "a list with one {input, output} object", instances)
    if len(instances) != 1:
        raise invalid(
            "multiple_instances" if instances else "no_assistant_turn",
            "instances",
            "exactly one {input, output} instance (one training example per record)",
            f"{len(instances)} instances",
            "split the record into one record per instance (instruction + input + output)",
        )
    inst = instances[0]
    if not isinstance(inst, dict):
        raise wrong_type("instances[0]", "an {input, output} object", inst)
    return inst.get("input"), inst.get("output"), "instances[0]."


def _history(data: Mapping[str, Any], messages: list[Message], paths: list[str]) -> None:
    history = data.get("history")
    if history is None:
        return
    if not isinstance(history, list):
        raise wrong_type("history", "a list of [question, answer] pairs", history)
    for k, pair in enumerate(history):
        if not isinstance(pair, list) or len(pair) != 2:
            raise wrong_type(f"history[{k}]", "a [question, answer] pair", pair)
        for j, role in ((0, "user"), (1, "assistant")):
            if not isinstance(pair[j], str):
                raise wrong_type(f"history[{k}][{j}]", "a string", pair[j])
            messages.append(Message(role, pair[j]))  # type: ignore[arg-type]
            paths.append(f"history[{k}][{j}]")


def parse_alpaca(data: Mapping[str, Any], role_map: Mapping[str, str] | None = None) -> Parsed:
    instruction = data.get("instruction")
    if not isinstance(instruction, str):
        raise wrong_type("instruction", "a string", instruction)
    input_text, output, prefix = _alpaca_fields(data)
    if output is None:
        fix = "add the output, or drop the record"
        raise invalid("no_assistant_turn", f"{prefix}output", "a string (the answer)", "nothing", fix)
    if not isinstance(output, str):
        raise wrong_type(f"{prefix}output", "a string", output)
    if input_text is not None and not isinstance(input_text, str):
        raise wrong_type(f"{prefix}input", "a string", input_text)
    messages: list[Message] = []
    paths: list[str] = []
    _system(data, messages, paths)
    _history(data, messages, paths)
    messages.append(Message("user", instruction, input=input_text or None))
    messages.append(Message("assistant", output))
    paths.extend(("instruction", f"{prefix}output"))
    return Parsed(messages, paths)


# ---------------------------------------------------------------------------- "prompt-completion"


def parse_prompt_completion(data: Mapping[str, Any], role_map: Mapping[str, str] | None) -> Parsed:
    prompt = data.get("prompt")
    completion = data.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        messages = [Message("user", prompt), Message("assistant", completion)]
        return Parsed(messages, ["prompt", "completion"], None, prompt, completion)
    if not (isinstance(prompt, list) and isinstance(completion, list)):
        got = f"{json_type_name(prompt)} and {json_type_name(completion)}"
        expected = "prompt and completion both strings or both lists of messages"
        raise invalid("wrong_type", "prompt", expected, got)
    paths = [f"prompt[{i}]" for i in range(len(prompt))] + [f"completion[{i}]" for i in range(len(completion))]
    messages = [openai_message(item, path, role_map) for item, path in zip(prompt + completion, paths, strict=True)]
    if not any(m.role == "assistant" for m in messages[len(prompt) :]):
        fix = "put the answer to train on in completion as an assistant message"
        raise invalid("no_assistant_turn", "completion", "at least one assistant message", "none", fix)
    return Parsed(messages, paths, parse_tools(data))
