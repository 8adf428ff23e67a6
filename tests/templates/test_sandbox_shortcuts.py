"""BoundedEnvironment's attribute shortcuts (`message.role` on a dict, `loop.index0`) give exactly what
transformers' sandbox gives, including refusals and undefined values (issue #15: they are on every render)."""

from __future__ import annotations

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sftprep.templates.hf_jinja import compile_template, render

PROPERTIES = ["index0", "index", "revindex", "revindex0", "first", "last", "length", "depth", "depth0"]
PROPERTIES += ["previtem", "nextitem", "changed(x)", "cycle('a', 'b')"]
LOOP = ", ".join(f"{{{{ loop.{p} }}}}" for p in PROPERTIES)
SOURCES = [
    "{% for x in xs %}" + LOOP + ";{% endfor %}",
    "{% for x in xs recursive %}[" + LOOP + "]{% endfor %}",
    "{% for m in ms %}{{ m.role }}|{{ m.content }}|{{ m.missing is defined }}|{{ m.items() | list }}{% endfor %}",
    "{% for x in xs %}{{ loop.nope is defined }}{{ loop._after is defined }}{% endfor %}",
]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("xs", [[], [1], [1, 1, 2]])
def test_shortcuts_render_as_the_sandbox(source: str, xs: list[int]) -> None:
    variables = {"xs": xs, "ms": [{"role": "user", "content": "hi"}, {"role": "x", "items": 1}][: len(xs)]}
    ours = render(compile_template(source), variables)[0]
    assert ours == ImmutableSandboxedEnvironment().from_string(source).render(**variables)


def test_unsafe_attributes_stay_refused() -> None:
    source = "{% for x in [1] %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}"
    with pytest.raises(jinja2.exceptions.SecurityError):
        render(compile_template(source), {})
