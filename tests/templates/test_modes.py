"""templates/modes.py: reasoning switches found by rendering a probe (never from names), whether a setting
renders a turn's reasoning, and the settings each --reasoning-mode tries, in order."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest

from sftprep.templates.modes import (
    DEFAULT,
    PROBE_REASONING,
    Messages,
    RenderFn,
    Setting,
    candidates,
    discover_switches,
    renders_reasoning,
)

# Qwen3-like: `enable_thinking` false prefills an empty think block, true opens one; the reasoning of a turn
# is rendered only when thinking is on. `style` changes the text of replies but never the generation prompt.
SOURCE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and enable_thinking is defined and enable_thinking and m.reasoning_content %}"
    "<think>\n{{ m.reasoning_content }}</think>{% endif %}"
    "{% if m.role == 'assistant' and style is defined %}{{ style }}{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking %}<think>\n{% endif %}"
    "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}{% endif %}"
)
TEMPLATE = jinja2.Environment().from_string(SOURCE)
OFF = Setting((("enable_thinking", False),))
ON = Setting((("enable_thinking", True),))


def render(messages: Messages, gen: bool, s: Setting) -> str:
    return TEMPLATE.render(messages=messages, add_generation_prompt=gen, **s.vars)


def failing_on(bad: Setting | None) -> RenderFn:
    """`render`, raising for the setting `bad` (every setting when None)."""

    def fn(messages: Messages, gen: bool, s: Setting) -> str:
        if bad is None or s == bad:
            raise ValueError("template raised")
        return render(messages, gen, s)

    return fn


def test_switches_are_the_values_that_change_the_generation_prompt() -> None:
    assert discover_switches(render, ["enable_thinking"], {}) == [OFF, ON]


def test_a_variable_that_leaves_the_prompt_alone_is_no_switch() -> None:
    assert discover_switches(render, ["style", "unused"], {}) == []


def test_a_variable_the_user_gave_is_not_searched() -> None:
    assert discover_switches(render, ["enable_thinking"], {"enable_thinking": True}) == []


def test_a_setting_the_template_raises_on_is_skipped() -> None:
    assert discover_switches(failing_on(ON), ["enable_thinking"], {}) == [OFF]
    assert discover_switches(failing_on(None), ["enable_thinking"], {}) == []


def test_renders_reasoning_only_where_the_turn_follows_its_prompt_with_the_reasoning() -> None:
    assert renders_reasoning(render, ON)
    assert not renders_reasoning(render, DEFAULT)  # the reasoning is left out
    assert not renders_reasoning(render, OFF)  # the prompt's empty think block is not in the turn's render
    assert not renders_reasoning(failing_on(ON), ON)


def test_the_probe_reasoning_is_what_is_looked_for() -> None:
    user = {"role": "user", "content": "q"}
    own = render([user, {"role": "assistant", "content": "a", "reasoning_content": PROBE_REASONING}], False, ON)
    assert "<think>\n" + PROBE_REASONING + "</think>a<|im_end|>" in own


def test_describe() -> None:
    assert OFF.describe() == "--template-var enable_thinking=false"
    assert Setting((("a", 1), ("b", "x"))).describe() == '--template-var a=1 --template-var b="x"'
    assert DEFAULT.describe() == "the default variables" and DEFAULT.vars == {}


# -- candidates ----------------------------------------------------------------------------------------------

A, B, C = (Setting(((name, True),)) for name in ("a", "b", "c"))
REASONS: dict[Setting, bool] = {DEFAULT: False, A: True, B: False, C: True}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("auto", [DEFAULT, A, B, C]),
        ("thinking", [A, C]),
        ("non-thinking", [DEFAULT, B]),
        ("reject", [DEFAULT]),
    ],
)
def test_candidates_per_mode(mode: str, expected: list[Setting]) -> None:
    assert candidates(mode, [A, B, C], REASONS.__getitem__) == expected


def test_thinking_includes_the_defaults_when_they_render_reasoning() -> None:
    reasons: dict[Setting, Any] = {**REASONS, DEFAULT: True}
    assert candidates("thinking", [A, B], reasons.__getitem__) == [DEFAULT, A]
    assert candidates("non-thinking", [A, B], reasons.__getitem__) == [B]


def test_candidates_on_the_real_switches() -> None:
    switches = discover_switches(render, ["enable_thinking"], {})
    reasoning = {s: renders_reasoning(render, s) for s in [DEFAULT, *switches]}
    assert candidates("thinking", switches, reasoning.__getitem__) == [ON]
    assert candidates("non-thinking", switches, reasoning.__getitem__) == [DEFAULT, OFF]
