"""content_opaque: one instrumented render proves a template only places contents, or says it may not.

Every template in ../shared/templates whose sentinel render is proven opaque is checked empirically: random
contents of the same shape render exactly as the sentinel render with each sentinel replaced by its content.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DIR

from sftprep.templates.base import RenderOptions
from sftprep.templates.hf_jinja import compile_template, render
from sftprep.templates.jinja_template import JinjaTemplate, message_to_hf
from sftprep.templates.opacity import content_opaque, why_not_opaque
from sftprep.templates.skeleton import sentinel_conversation
from sftprep.types import Conversation, Message

SHARED = SHARED_DIR
TEMPLATES = sorted((SHARED / "templates").glob("*/*.jinja"))
# As in test_templates_shared.py (not imported: that module needs transformers at import).
SPECIAL_LOOKING = re.compile(
    r"<\|[^<>|\s]{1,40}\|>|<｜[^<>｜]{1,40}｜>|\[\|[^\[\]|\s]{1,40}\|\]|</?[a-z_]{1,30}>|<[a-z_]+\|>"
)
OPTS = RenderOptions(bos_token="<s>", eos_token="</s>")
SHAPES = {
    "sua": (("system", True), ("user", True), ("assistant", True)),
    "uaua": (("user", True), ("assistant", True), ("user", True), ("assistant", True)),
    "sua-empty-ua": (("system", True), ("user", True), ("assistant", False), ("user", True), ("assistant", True)),
}
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def shared_template(name: str) -> str:
    path = SHARED / "templates" / f"{name}.jinja"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the ../shared checkout is optional)")
    return path.read_text(encoding="utf-8")


def conversation(shape: tuple[tuple[str, bool], ...], contents: list[str] | None = None) -> Conversation:
    texts = contents or ["x" if full else "" for _, full in shape]
    return Conversation(
        messages=tuple(Message(role, text) for (role, _), text in zip(shape, texts)), source_file="t", source_line=1
    )


def variables_for(source: str, conv: Conversation) -> dict[str, Any]:
    return JinjaTemplate(source).variables([message_to_hf(m) for m in conv.messages], conv, False, OPTS)


def sentinel_case(source: str, shape: tuple[tuple[str, bool], ...]) -> tuple[dict[str, Any], str, list[str]]:
    """The sentinel conversation's variables, its real render, and the sentinel of each message."""
    sent = sentinel_conversation(conversation(shape))
    variables = variables_for(source, sent)
    return variables, render(compile_template(source), variables)[0], [m.content for m in sent.messages]


def verdict(source: str, roles: tuple[str, ...] = ("user", "assistant")) -> str | None:
    variables, expected, _ = sentinel_case(source, tuple((r, True) for r in roles))
    return why_not_opaque(source, variables, expected)


# -- positives -------------------------------------------------------------------------------------------------
LOOP = "{% for message in messages %}"
END = "{% endfor %}"
OPAQUE_BODIES = {
    "tilde": "{{ '[' ~ message.role ~ ']' ~ message.content ~ '\n' }}",
    "macro": "{% macro show(m) %}<{{ m.role }}>{{ m['content'] }}</{{ m.role }}>{% endmacro %}{{ show(message) }}",
    "macro-tilde": "{% macro c(x) %}({{ x }}){% endmacro %}{{ c(message.content) ~ '|' }}",
    "call-block": "{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}{{ message.content }}{% endcall %}",
    "set-block": "{% set x %}{{ message.content }}!{% endset %}{{ x ~ x }}",
    "namespace": "{% set ns = namespace(t='') %}{% set ns.t = ns.t + message.content %}{{ ns.t }}",
    "truthiness-and-get": "{% if message.content and 'content' in message %}{{ message.get('content') }}{% endif %}",
    "type-tests": "{% if message.content is string and message.content is defined %}{{ message.content }}{% endif %}",
    "default-string": "{{ message.content | default('') | string }}{{ messages | length }}{{ message | length }}",
    "select": "{{ (messages | selectattr('role', 'equalto', 'user') | list | first).content }}",
    "compare-non-str": "{% if message.content != false and message.content != none %}{{ message.content }}{% endif %}",
    "generation": "{% generation %}{{ message.content }}{% endgeneration %}",
    "map-first": "{{ messages|map(attribute='content')|first }}{{ (messages|map(attribute='content')|list)[1] }}",
    "none-in-list": "{% if none in [message.content] %}x{% endif %}{{ message.content }}",
    "markup-tilde": "{{ ('<b>' | safe) ~ message.content }}",
    "unsafe-attribute": "{{ message.content.__class__ }}{{ message.content }}",
    "reversed-slice": "{{ messages[::-1][0].content }}{{ message['content'] }}",
}


def test_chatml_is_opaque() -> None:
    assert verdict(CHATML) is None
    assert verdict(CHATML, ("system", "user", "assistant", "user")) is None


@pytest.mark.parametrize("body", list(OPAQUE_BODIES.values()), ids=list(OPAQUE_BODIES))
def test_placing_only_is_opaque(body: str) -> None:
    source = LOOP + body + END
    assert verdict(source) is None
    assert_claim_holds(source, (("user", True), ("assistant", True)), body)


@pytest.mark.parametrize(
    "name", ["axolotl/chatml", "axolotl/qwen_25", "chujiezheng/qwen2.5-instruct", "axolotl/phi_3", "axolotl/mistral_v1"]
)
def test_shared_placing_templates_are_opaque(name: str) -> None:
    assert verdict(shared_template(name), ("system", "user", "assistant")) is None


# -- negatives -------------------------------------------------------------------------------------------------
OBSERVING_BODIES = {
    "trim": "{{ message.content | trim }}",
    "strip": "{{ message['content'].strip() }}",
    "think-in": "{% if '<think>' in message.content %}x{% endif %}",
    "in-str": "{% if message.content in 'abc' %}x{% endif %}",
    "not-in-str": "{% if message.content not in 'abc' %}x{% endif %}",
    "in-chain": "{% if 'a' < 'b' in message.content %}x{% endif %}",
    "concat-in-str": "{% if ('x' ~ message.content) in 'abcx' %}x{% endif %}",
    "in-test": "{% if message.content is in 'abc' %}x{% endif %}",
    "split": "{{ message.content.split('x')[0] }}",
    "length": "{% if message.content | length > 3 %}x{% endif %}",
    "eq": "{% if message.content == 'x' %}y{% endif %}",
    "eq-reflected": "{% if 'x' == message.content %}y{% endif %}",
    "lt": "{% if 'm' < message.content %}y{% endif %}",
    "index": "{{ message.content[0] }}",
    "slice": "{{ message.content[1:] }}",
    "iterate": "{% for c in message.content %}{{ c }}{% endfor %}",
    "message-tojson": "{{ message | tojson }}",
    "content-tojson": "{{ message.content | tojson }}",
    "set-block-trim": "{% set x %}{{ message.content }}{% endset %}{{ x | trim }}",
    "set-block-filter": "{% set x | trim %}{{ message.content }}{% endset %}{{ x }}",
    "macro-trim": "{% macro m(c) %}[{{ c }}]{% endmacro %}{{ m(message.content) | trim }}",
    "caller-trim": "{% macro w() %}{{ caller() | trim }}{% endmacro %}{% call w() %}{{ message.content }}{% endcall %}",
    "filter-block": "{% filter upper %}{{ message.content }}{% endfilter %}",
    "percent": "{{ '%s' % message.content }}",
    "percent-tuple": "{{ '%s' % (message.content,) }}",
    "format": "{{ '{}'.format(message.content) }}",
    "content-format": "{{ message.content.format() }}",
    "format-filter": "{{ '%s' | format(message.content) }}",
    "times": "{{ message.content * 2 }}",
    "items": "{{ message.items() }}",
    "keys": "{% for k in message %}{{ k }}{% endfor %}",
    "message-eq": "{% if message == messages[0] %}x{% endif %}",
    "tilde-trim": "{{ (message.content ~ 'x') | trim }}",
    "string-trim": "{{ message.content | string | trim }}",
    "plus-markup": "{{ ('<b>' | safe) + message.content }}",
    "safe": "{{ message.content | safe }}",
    "list-join": "{{ [message.content] | join }}",
    "hash": "{{ {message.content: 1} }}",
    "subscript-by-content": "{{ {'a': 1}[message.content] }}",
    "loop-cycle": "{{ loop.cycle(message.content, 'x') }}",
    "method-value": "{{ message.content | attr('upper') }}",
    "repr": "{{ [message.content] }}",
    "strftime": "{{ strftime_now('%d') }}{{ message.content }}",
    "random": "{{ [1, 2] | random }}{{ message.content }}",
    "loop-repr": "{{ loop }}{{ message.content }}",
}


@pytest.mark.parametrize("body", list(OBSERVING_BODIES.values()), ids=list(OBSERVING_BODIES))
def test_observing_is_not_opaque(body: str) -> None:
    source = LOOP + body + END
    variables, expected, _ = sentinel_case(source, (("user", True), ("assistant", True)))
    assert not content_opaque(source, variables, expected)
    assert (why_not_opaque(source, variables, expected) or "").startswith("observed: ")


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages | tojson }}",
        "{{ messages | map(attribute='content') | join('\n') }}",
        "{% for m in messages | sort(attribute='content') %}{{ m.content }}{% endfor %}",
    ],
)
def test_observing_all_messages_is_not_opaque(source: str) -> None:
    assert (verdict(source) or "").startswith("observed: ")


def test_raising_and_mismatching_templates_are_not_opaque() -> None:
    raising = LOOP + "{{ message.content }}{% if loop.last %}{{ raise_exception('no') }}{% endif %}" + END
    variables, _, _ = sentinel_case(CHATML, (("user", True), ("assistant", True)))
    assert not content_opaque(raising, variables, "")
    assert why_not_opaque(raising, variables, "") == "the render raised TemplateRaised"
    expected = render(compile_template(CHATML), variables)[0]
    assert not content_opaque(CHATML, variables, expected + "x")
    assert content_opaque(CHATML, variables, expected)


def test_autoescape_blocks_are_refused() -> None:
    source = "{% autoescape true %}" + LOOP + "{{ message.content }}" + END + "{% endautoescape %}"
    assert verdict(source) == "the template cannot be instrumented"


@pytest.mark.parametrize("name", ["axolotl/qwen3", "axolotl/llama3", "axolotl/mistral_v7_tekken", "chujiezheng/zephyr"])
def test_shared_observing_templates_are_not_opaque(name: str) -> None:
    assert (verdict(shared_template(name), ("system", "user", "assistant")) or "").startswith("observed: ")


# -- the claim, checked empirically on every shared template ---------------------------------------------------
PIECES = [" ", "  ", "\n", "\t", "\r\n", "<think>", "</think>", '"', "'", "\\", "\\n", "{{ x }}", "{% raw %}"]
PIECES += ["naïve", "春风 🌸", "\u200b", "%s", "{}", "abc", "Hello world.", "0", "None", "<s>", "</s>"]


def random_content(rng: random.Random, specials: list[str]) -> str:
    text = "".join(rng.choice(PIECES + specials) for _ in range(rng.randint(1, 8)))
    return rng.choice(["", " ", "\n", " \n "]) + text + rng.choice(["", " ", "\n", "\n\n"])


def fill_sentinels(text: str, by_sentinel: dict[str, str]) -> str:
    return re.sub("|".join(map(re.escape, by_sentinel)), lambda m: by_sentinel[m.group(0)], text)


def assert_claim_holds(source: str, shape: tuple[tuple[str, bool], ...], seed: str) -> None:
    """Random contents of the shape render as the sentinel render with each sentinel replaced."""
    variables, expected, sentinels = sentinel_case(source, shape)
    assert content_opaque(source, variables, expected)
    specials = sorted(set(SPECIAL_LOOKING.findall(source)))
    rng = random.Random(seed)
    full = [k for k, s in enumerate(sentinels) if s]
    for _ in range(20):
        contents = ["" for _ in sentinels]
        for k in full:
            contents[k] = random_content(rng, specials)
        want = fill_sentinels(expected, {sentinels[k]: contents[k] for k in full})
        got = render(compile_template(source), variables_for(source, conversation(shape, contents)))[0]
        assert got == want, f"opacity claimed but the render differs for contents {contents!r}"


@pytest.mark.skipif(not TEMPLATES, reason="../shared/templates is absent")
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_opaque_claim_holds_on_random_contents(template: Path, shape_name: str) -> None:
    source = template.read_text(encoding="utf-8")
    try:
        variables, expected, _ = sentinel_case(source, SHAPES[shape_name])
    except Exception as e:  # the template refuses this shape (e.g. raise_exception on a system turn)
        pytest.skip(f"the template does not render this shape: {type(e).__name__}")
    if content_opaque(source, variables, expected):
        assert_claim_holds(source, SHAPES[shape_name], f"{template.stem}-{shape_name}")
