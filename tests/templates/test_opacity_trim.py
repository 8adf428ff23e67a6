"""content_writes: a template that reads contents only through `| trim` of whole values (Llama 3, Gemma, ...)
still renders every record from its shape's skeleton, with `content.strip()` where it trims (issue #15: one
Jinja render per record less). Checked against the exact (multi-render) path on every shared template, with
contents that spell the template's special tokens, think tags, blanks around them or nothing but blanks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_opacity import (
    CHATML,
    END,
    LOOP,
    OBSERVING_BODIES,
    SHAPES,
    SPECIAL_LOOKING,
    TEMPLATES,
    conversation,
    random_content,
    sentinel_case,
    shared_template,
)

from sftprep.templates.base import RenderOptions
from sftprep.templates.hf_jinja import compile_template, render
from sftprep.templates.jinja_template import JinjaTemplate, message_to_hf
from sftprep.templates.opacity import content_writes
from sftprep.types import Reject

UA = (("user", True), ("assistant", True))


def writes(source: str, shape: tuple[tuple[str, bool], ...] = UA) -> tuple[bool, ...] | None:
    variables, expected, _ = sentinel_case(source, shape)
    return content_writes(source, variables, expected)


def test_placing_templates_write_every_content_as_it_is() -> None:
    assert writes(CHATML) == (False, False)


def test_trim_of_whole_contents_is_allowed_and_located() -> None:
    assert writes(LOOP + "{{ message.content | trim }}" + END) == (True, True)
    assert writes(LOOP + "[{{ message['content'] | trim | trim }}]{{ message.content }}" + END) == (True, False) * 2
    only_user = LOOP + "{% if message.role == 'user' %}{{ message.content | trim }}{% else %}{{ message.content }}"
    assert writes(only_user + "{% endif %}" + END) == (True, False)
    assert writes(LOOP + "{% if message.content | trim %}{{ message.content | trim + '!' }}{% endif %}" + END)


# Bodies of test_opacity's observing list that trim a value equal to a whole content (a capture or `string`
# of it alone is the content itself in every record): allowed here.
WHOLE_TRIMS = {"trim", "set-block-trim", "set-block-filter", "caller-trim", "string-trim"}


@pytest.mark.parametrize("name", sorted(WHOLE_TRIMS))
def test_trims_of_a_value_that_is_the_whole_content_are_allowed(name: str) -> None:
    assert writes(LOOP + OBSERVING_BODIES[name] + END) == (True, True)


@pytest.mark.parametrize("body", [b for k, b in OBSERVING_BODIES.items() if k not in WHOLE_TRIMS])
def test_any_other_observation_still_refuses(body: str) -> None:
    assert writes(LOOP + body + END) is None


@pytest.mark.parametrize(
    "body",
    [
        "{{ message.content | trim('x') }}",  # a chars argument: not str.strip()
        "{{ (message.content + 'x') | trim }}",  # not a whole content value
        "{{ message.content | trim | length }}",  # the trimmed value observed
        "{% if (message.content | trim) == 'x' %}y{% endif %}",
        "{{ (message.content | trim)[0] }}",
    ],
)
def test_trim_then_observing_refuses(body: str) -> None:
    assert writes(LOOP + body + END) is None


def test_shared_llama3_is_proven_with_trims() -> None:
    flags = writes(shared_template("axolotl/llama3"), (("system", True), ("user", True), ("assistant", True)))
    assert flags is not None and all(flags)


# -- the skeleton path against the exact path, on every shared template --------------------------------------
OPTS = RenderOptions(bos_token="<s>", eos_token="</s>")
EDGES = ["", " ", "\n", "  \n", "\t"]


def contents_for(rng: random.Random, shape: tuple[tuple[str, bool], ...], specials: list[str]) -> list[str]:
    out = []
    for _, full in shape:
        text = random_content(rng, specials) if full else ""
        if full and rng.random() < 0.1:
            text = rng.choice([" ", "\n \n"])  # whitespace only: the exact path must take it
        elif full:
            text = rng.choice(EDGES) + (text.strip() or "x") + rng.choice(EDGES)
        out.append(text)
    return out


def summary(rendered: object) -> object:
    if isinstance(rendered, Reject):
        return ("reject", rendered.reason)
    return [(r.text, [(t.message_index, t.start, t.end, t.trained) for t in r.turns]) for r in rendered]


@pytest.mark.skipif(not TEMPLATES, reason="../shared/templates is absent")
@pytest.mark.parametrize("shape_name", ["sua", "uaua", "sua-empty-ua"])
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_skeleton_renders_as_the_exact_path(template: Path, shape_name: str) -> None:
    source = template.read_text(encoding="utf-8")
    shape = SHAPES[shape_name]
    try:
        render(compile_template(source), sentinel_case(source, shape)[0])
    except Exception as e:
        pytest.skip(f"the template does not render this shape: {type(e).__name__}")
    tmpl = JinjaTemplate(source)
    specials = sorted(set(SPECIAL_LOOKING.findall(source)))  # contents spelling them, think tags, blanks
    rng = random.Random(f"{template.stem}-{shape_name}")
    for _ in range(12):
        conv = conversation(shape, contents_for(rng, shape, specials))
        fast = tmpl.render(conv, OPTS)  # the skeleton path where the shape allows it
        exact = tmpl._render(conv, [message_to_hf(m) for m in conv.messages], OPTS)
        assert summary(fast) == summary(exact), [m.content for m in conv.messages]


def test_llama3_records_take_the_trimmed_skeleton() -> None:
    tmpl = JinjaTemplate(shared_template("axolotl/llama3"))
    shape = SHAPES["uaua"]
    conv = conversation(shape, [" Hi?\n", "\nHello. ", "Bye?", "  Bye.\n\n"])
    first, second = tmpl.render(conv, OPTS), tmpl.render(conv, OPTS)  # the second: from the skeleton
    (skel,) = [s for s in tmpl._skeletons.values() if s is not None]
    assert any(skel.trimmed)
    assert (
        summary(second)
        == summary(first)
        == summary(tmpl._render(conv, [message_to_hf(m) for m in conv.messages], OPTS))
    )
    assert "Hello.<|eot_id|>" in second[0].text  # the content as trimmed
