"""Skeletons for records with tools, tool calls, reasoning and names (issue #15): where every render of the
shape's derivation is shown never to read them (sealed: a lookup of such a message key, or any use of
`tools`, flags), the record renders from its shape's skeleton, turns with nothing to train and records left
out whole included. Checked against the exact path on every shared template with random values."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_opacity import END, LOOP, SPECIAL_LOOKING, TEMPLATES, random_content, shared_template

from sftprep.templates.base import RenderOptions
from sftprep.templates.hf_jinja import compile_template, render
from sftprep.templates.jinja_template import JinjaTemplate, message_to_hf
from sftprep.templates.opacity import content_placements
from sftprep.templates.skeleton import sentinel_conversation
from sftprep.types import Conversation, Message, Reject, ToolCall

OPTS = RenderOptions(bos_token="<s>", eos_token="</s>")
TOOLS = ({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},)


def call(rng: random.Random) -> ToolCall:
    name = rng.choice(["get_weather", "search", "convert_currency"])
    return ToolCall(name, {"city": random_content(rng, []).strip() or "x", "n": rng.randint(0, 9)}, "call_1")


def text(rng: random.Random, specials: list[str]) -> str:
    return random_content(rng, specials).strip() or "x"


def tool_conversation(rng: random.Random, specials: list[str]) -> Conversation:
    """system, user, assistant calling a tool (no content), the tool's result, assistant answering."""
    msgs = (
        Message("system", text(rng, specials)),
        Message("user", text(rng, specials)),
        Message("assistant", "", tool_calls=(call(rng),), content_null=True),
        Message("tool", text(rng, specials), tool_call_id="call_1", name="get_weather"),
        Message("assistant", text(rng, specials)),
    )
    return Conversation(msgs, "t.jsonl", 3, tools=TOOLS)


def reasoning_conversation(rng: random.Random, specials: list[str]) -> Conversation:
    """user, assistant with reasoning and an answer, user, assistant with reasoning only."""
    msgs = (
        Message("user", text(rng, specials)),
        Message("assistant", text(rng, specials), reasoning=text(rng, specials)),
        Message("user", text(rng, specials)),
        Message("assistant", "", reasoning=text(rng, specials)),
    )
    return Conversation(msgs, "t.jsonl", 7)


def mixed_conversation(rng: random.Random, specials: list[str]) -> Conversation:
    """an answer with reasoning and a tool call, its result, a plain answer."""
    msgs = (
        Message("user", text(rng, specials)),
        Message("assistant", text(rng, specials), tool_calls=(call(rng),), reasoning=text(rng, specials)),
        Message("tool", text(rng, specials), tool_call_id="call_1"),
        Message("assistant", text(rng, specials)),
    )
    return Conversation(msgs, "t.jsonl", 9, tools=TOOLS)


SHAPES = {"tools": tool_conversation, "reasoning": reasoning_conversation, "mixed": mixed_conversation}


def summary(rendered: object) -> object:
    """Everything the pipeline reads of a render: texts, spans, counts, variables, dropped turns, rejects (a
    template that fails is a reject of the render stage, an exception of the exact path's internals)."""
    if isinstance(rendered, Reject) and rendered.reason.startswith("template_"):
        return "the template failed"
    if isinstance(rendered, Reject):
        return ("reject", rendered.reason, rendered.message, rendered.turn, rendered.line)
    return [
        (
            r.text,
            [(t.message_index, t.assistant_index, t.start, t.end, t.trained, t.content) for t in r.turns],
            r.counts,
            r.template_vars,
            r.turn,
            r.tag_disagreements,
            [(d.reason, d.message, d.turn, d.line) for d in r.dropped_turns],
        )  # not message_spans: the exact path finds them by searching the text (best effort)
        for r in rendered
    ]


def placements(source: str, conv: Conversation) -> object:
    sent = sentinel_conversation(conv)
    tmpl = JinjaTemplate(source)
    variables = tmpl.variables([message_to_hf(m) for m in sent.messages], sent, False, OPTS)
    return content_placements(source, variables, render(compile_template(source), variables)[0])


# -- what seals --------------------------------------------------------------------------------------------------
CONV = mixed_conversation(random.Random(0), [])


def test_a_template_that_never_reads_sealed_values_places_contents() -> None:
    placed = placements(LOOP + "<{{ message.role }}>{{ message.content }}" + END, CONV)
    assert placed is not None and [t for _, t in placed] == [False] * 4  # user, assistant, tool, assistant


@pytest.mark.parametrize(
    "body",
    [
        "{{ message.tool_calls }}",  # the value written
        "{% if message.tool_calls is defined %}x{% endif %}",  # even only its definedness: a lookup
        "{{ message.get('reasoning_content') }}",
        "{{ message['tool_call_id'] }}",
        "{{ message | tojson }}",  # the whole message through a filter
        "{{ message }}",
        "{% for k in message %}{{ k }}{% endfor %}",
        "{% if tools %}x{% endif %}",  # tools: truthiness reads it
        "{{ tools | length }}",
        "{% for t in tools %}{{ t.function.name }}{% endfor %}",
        "{{ tools }}",
        "{{ tools[0] }}",
        "{% if 'get_weather' in tools %}x{% endif %}",
    ],
)
def test_reading_a_sealed_value_refuses(body: str) -> None:
    assert placements(LOOP + body + "{{ message.content }}" + END, CONV) is None


SAFE_TESTS = ["defined", "undefined", "none", "boolean", "true", "false", "integer", "float", "number", "string"]
SAFE_TESTS += ["mapping", "callable"]


@pytest.mark.parametrize("test", SAFE_TESTS)
def test_type_tests_of_tools_answer_as_for_the_list(test: str) -> None:
    """The stand-in for `tools` must take the branch the real list takes (else a branch that reads contents
    could go untraced): each test's answer is written out, so a different answer changes the output."""
    source = "{% if tools is " + test + " %}yes{% else %}no{% endif %}" + LOOP + "{{ message.content }}" + END
    assert placements(source, CONV) is not None


@pytest.mark.parametrize("test", ["sequence", "iterable"])
def test_tests_that_read_tools_refuse(test: str) -> None:
    source = "{% if tools is " + test + " %}yes{% endif %}" + LOOP + "{{ message.content }}" + END
    assert placements(source, CONV) is None


def test_an_attribute_of_tools_refuses() -> None:
    assert placements("{% if tools.x is defined %}x{% endif %}" + LOOP + "{{ message.content }}" + END, CONV) is None


@pytest.mark.parametrize(
    "body",
    [
        "{% if 'tool_calls' in message %}[call]{% endif %}",  # presence is the shape's
        "{% if tools is not none %}[tools]{% endif %}{% if tools is defined and tools is not string %}!{% endif %}",
        "{{ message | length }}",  # how many keys: the shape's
    ],
)
def test_presence_of_sealed_keys_is_the_shapes(body: str) -> None:
    assert placements(LOOP + body + "{{ message.content }}" + END, CONV) is not None


def test_a_content_trimmed_in_one_render_and_not_another_is_not_opaque() -> None:
    """The generation prompt writes the last user message trimmed, the turn's render as it is: every render
    of the derivation counts, so the record takes the exact path (one full render alike would not show it)."""
    source = (
        LOOP + "<{{ message.role }}>{% if add_generation_prompt and loop.last %}{{ message.content | trim }}"
        "{% else %}{{ message.content }}{% endif %}" + END + "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    tmpl = JinjaTemplate(source)
    conv = Conversation((Message("user", " hi "), Message("assistant", "yo")), "t", 1)
    exact = tmpl._render(conv, [message_to_hf(m) for m in conv.messages], OPTS)
    assert summary(tmpl.render(conv, OPTS)) == summary(tmpl.render(conv, OPTS)) == summary(exact)
    assert list(tmpl._skeletons.values()) == [None]


# -- the skeleton path against the exact path ----------------------------------------------------------------------
@pytest.mark.skipif(not TEMPLATES, reason="../shared/templates is absent")
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sealed_shapes_render_as_the_exact_path(template: Path, shape: str) -> None:
    source = template.read_text(encoding="utf-8")
    tmpl = JinjaTemplate(source)
    specials = sorted(set(SPECIAL_LOOKING.findall(source)))
    rng = random.Random(f"{template.stem}-{shape}")
    for _ in range(8):
        conv = SHAPES[shape](rng, specials)
        results = [summary(tmpl.render(conv, OPTS)) for _ in range(2)]  # builds the skeleton, then fills it
        try:
            exact: Any = summary(tmpl._render(conv, [message_to_hf(m) for m in conv.messages], OPTS))
        except Exception:  # the render stage turns these into rejects
            exact = "the template failed"
        assert results[0] == results[1] == exact, [m.content for m in conv.messages]


def test_llama3_renders_tool_and_reasoning_records_from_sealed_skeletons() -> None:
    """Llama 3's template reads neither tool calls nor reasoning: one skeleton per shape, turns with nothing
    to train (a call without content) left out as the exact path leaves them out, with the same message."""
    tmpl = JinjaTemplate(shared_template("axolotl/llama3"))
    rng = random.Random(1)
    for make in SHAPES.values():
        convs = [make(rng, []) for _ in range(3)]
        for conv in convs:
            fast = tmpl.render(conv, OPTS)
            assert summary(fast) == summary(tmpl._render(conv, [message_to_hf(m) for m in conv.messages], OPTS))
    built = [s for s in tmpl._skeletons.values() if s is not None]
    assert len(built) == 3  # one per shape, each with tool calls or reasoning
    tools = tmpl.render(tool_conversation(rng, []), OPTS)
    assert not isinstance(tools, Reject)
    (dropped,) = tools[0].dropped_turns
    assert dropped.reason == "nothing_to_train" and dropped.message.startswith("t.jsonl:3: messages[2]: ")


def test_a_template_that_renders_tool_calls_takes_the_exact_path() -> None:
    tmpl = JinjaTemplate(shared_template("axolotl/qwen_25"))
    conv = tool_conversation(random.Random(2), [])
    first, second = tmpl.render(conv, OPTS), tmpl.render(conv, OPTS)
    assert summary(first) == summary(second)
    assert list(tmpl._skeletons.values()) == [None]


def test_a_sealed_value_spelling_a_sentinel_takes_the_exact_path() -> None:
    """The shape's derivation keeps the first record's sealed values: one holding a sentinel character could
    make its checks see another message's sentinel in a tool call, so no skeleton is built from it."""
    tmpl = JinjaTemplate(shared_template("axolotl/llama3"))
    conv = mixed_conversation(random.Random(3), [])
    odd = replace(conv.messages[1], reasoning="see \ue0000\ue001")
    conv = replace(conv, messages=(conv.messages[0], odd, *conv.messages[2:]))
    exact = summary(tmpl._render(conv, [message_to_hf(m) for m in conv.messages], OPTS))
    assert summary(tmpl.render(conv, OPTS)) == summary(tmpl.render(conv, OPTS)) == exact
    assert list(tmpl._skeletons.values()) == [None]


# -- generators given to filters are drained and checked -----------------------------------------------------------
LIST_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{{ message['content'] | selectattr('text', 'defined') | map(attribute='text') | join('') }}{% endif %}"
)


def test_a_generator_without_content_is_no_observation() -> None:
    """Llama 3's branch for list contents, taken by a tool call with no content: an empty generator joined."""
    conv = tool_conversation(random.Random(4), [])
    assert placements(LOOP + "<{{ message.role }}>" + LIST_CONTENT + END, conv) is not None


@pytest.mark.parametrize(
    "expr",
    [
        "messages | map(attribute='content') | join(',')",  # contents joined: read
        "messages | map(attribute='content') | sort | first",
        "messages | map(attribute='content') | unique | list | length",
    ],
)
def test_a_generator_of_contents_given_to_a_filter_refuses(expr: str) -> None:
    conv = reasoning_conversation(random.Random(5), [])
    assert placements("{{ " + expr + " }}" + LOOP + "{{ message.content }}" + END, conv) is None
