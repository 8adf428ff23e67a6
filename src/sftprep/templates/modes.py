"""Reasoning modes: the template variables under which a turn renders consistently with its prompt.

A template may prefill after the generation prompt (`<think>\\n`, an empty think block, an empty thought
channel) where its rendering of a turn has something else. No prompt then exists from which the model would
produce the turn as rendered. Templates with a reasoning switch render the prompt differently for each of
its values, so a consistent setting may exist: it is found by rendering, never from names.

A *switch* is a variable the template reads (beyond transformers' own) whose value changes the generation
prompt of a probe conversation; its settings are `{var: False}` and `{var: True}`. A setting *renders
reasoning* when a probe turn's reasoning appears in what the model generates under it.

Policies (`--reasoning-mode`):
  auto          the defaults, else the first switch setting that makes the turn consistent; a turn whose
                reasoning no setting renders consistently is trained without it (counted)
  thinking      only settings that render reasoning (a turn without reasoning as it renders there)
  non-thinking  only settings that do not render reasoning; reasoning is left out (counted)
  reject        the defaults only: an inconsistent turn is refused, naming a setting verified to work
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, Any]]
RenderFn = Callable[[Messages, bool, "Setting"], str]

PROBE_USER = "Hello sftprep probe"
PROBE_REPLY = "SFTPREP_PROBE_REPLY_7f3a"
PROBE_REASONING = "SFTPREP_PROBE_REASONING_c41d"


@dataclass(frozen=True)
class Setting:
    """Template variables set on top of the user's (empty: the defaults)."""

    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def vars(self) -> dict[str, Any]:
        return dict(self.extra)

    def describe(self) -> str:
        return " ".join(f"--template-var {k}={json.dumps(v)}" for k, v in self.extra) or "the default variables"


DEFAULT = Setting()


def discover_switches(render: RenderFn, variables: list[str], given: dict[str, Any]) -> list[Setting]:
    """Settings of the variables (not given by the user) that change the generation prompt of a probe."""
    probe: Messages = [{"role": "user", "content": PROBE_USER}]
    try:
        base = render(probe, True, DEFAULT)
    except Exception:
        return []
    out = []
    for name in variables:
        if name in given:
            continue
        for value in (False, True):
            s = Setting(((name, value),))
            try:
                changed = render(probe, True, s) != base
            except Exception:
                continue
            if changed:
                out.append(s)
    return out


def renders_reasoning(render: RenderFn, s: Setting) -> bool:
    """A probe turn's reasoning is part of what the model generates under `s`."""
    user = {"role": "user", "content": PROBE_USER}
    reply = {"role": "assistant", "content": PROBE_REPLY, "reasoning_content": PROBE_REASONING}
    reply["thinking"] = PROBE_REASONING
    try:
        prompt = render([user], True, s)
        own = render([user, reply], False, s)
    except Exception:
        return False
    return own.startswith(prompt) and PROBE_REASONING in own[len(prompt) :]


def candidates(mode: str, settings: list[Setting], reasoning: Callable[[Setting], bool]) -> list[Setting]:
    """The settings a policy tries, in order."""
    every = [DEFAULT, *settings]
    if mode == "reject":
        return [DEFAULT]
    if mode == "thinking":
        return [s for s in every if reasoning(s)]
    if mode == "non-thinking":
        return [s for s in every if not reasoning(s)]
    return every
