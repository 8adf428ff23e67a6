"""The Hugging Face chat-template dialect of Jinja: the same environment transformers uses.

Sandboxed, trim_blocks + lstrip_blocks, loop controls, `raise_exception`, `strftime_now`,
`tojson` with its keyword arguments, and the `{% generation %}` extension (records the character
ranges of generated text, as transformers' AssistantTracker does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sftprep.errors import TemplateError


class TemplateRaised(Exception):
    """The template called raise_exception(...) for this conversation."""


def _raise_exception(message: str) -> None:
    raise TemplateRaised(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class GenerationTracker(Extension):
    """`{% generation %}...{% endgeneration %}`: records (start, end) of the generated text."""

    tags = {"generation"}  # noqa: RUF012 (jinja's Extension API)

    def __init__(self, environment: jinja2.Environment) -> None:
        super().__init__(environment)
        environment.extend(activate_tracker=self.activate_tracker)
        self._blocks: list[str] | None = None
        self._ranges: list[tuple[int, int]] | None = None

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation", []), [], [], body).set_lineno(lineno)

    def _generation(self, caller: Any) -> str:
        rv = caller()
        if self._blocks is not None and self._ranges is not None:
            start = sum(len(b) for b in self._blocks)
            self._ranges.append((start, start + len(rv)))
        return rv

    @contextmanager
    def activate_tracker(self, blocks: list[str], ranges: list[tuple[int, int]]) -> Iterator[None]:
        self._blocks, self._ranges = blocks, ranges
        try:
            yield
        finally:
            self._blocks, self._ranges = None, None


@lru_cache(maxsize=64)
def compile_template(source: str) -> jinja2.Template:
    """Compile once per process (cached by source text)."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template does not compile: line {e.lineno}: {e.message}") from e


_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


HF_VARIABLES = frozenset(
    {
        "messages",
        "add_generation_prompt",
        "bos_token",
        "eos_token",
        "tools",
        "documents",
        "raise_exception",
        "strftime_now",
        "unk_token",
        "pad_token",
        "range",
        "namespace",
        "loop",
    }
)


def template_variables(source: str) -> list[str]:
    """Variables a template reads beyond the HF conventions (given with --template-var)."""
    ast = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(
        _GENERATION_TAG.sub("", _ENDGEN.sub("", source))
    )
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    return sorted(meta.find_undeclared_variables(ast) - HF_VARIABLES - assigned)


_ENDGEN = re.compile(r"\{%-?\s*endgeneration\s*-?%\}")


def has_generation_tags(source: str) -> bool:
    return _GENERATION_TAG.search(source) is not None


def render(
    template: jinja2.Template, variables: dict[str, Any], track_generation: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    """Render with the HF variables; return the text and the {% generation %} ranges."""
    if not track_generation:  # a shared context skips jinja's per-call globals copy (~30% of a render)
        ctx = template.new_context({**template.environment.globals, **variables}, shared=True)
        return "".join(template.root_render_func(ctx)), []
    blocks: list[str] = []
    ranges: list[tuple[int, int]] = []
    with template.environment.activate_tracker(blocks, ranges):  # type: ignore[attr-defined]
        for block in template.generate(**variables):
            blocks.append(block)
    return "".join(blocks), ranges
