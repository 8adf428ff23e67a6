"""The Hugging Face chat-template dialect of Jinja: the same environment transformers uses.

Sandboxed, trim_blocks + lstrip_blocks, loop controls, `raise_exception`, `strftime_now`,
`tojson` with its keyword arguments, transformers' `dict` and underscore-refusing `namespace`, and the
`{% generation %}` extension (records the character ranges of generated text, as transformers'
AssistantTracker does).

A chat template is code from wherever the user downloaded it, so every render is bounded (`render_budget`):
past a deadline or an output size the render raises `TemplateTimeout` (the record is rejected, the run goes
on). The sandbox already refuses unsafe attributes; the bound is checked on every call (macros included),
`range` iteration, `*`/`**` and output chunk, so nested loops, runaway macros and huge strings stop (a loop over
the data itself is bounded by the data).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import Extension
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from sftprep.errors import TemplateError
from sftprep.templates.code_cache import cached

RENDER_SECONDS = 10.0  # default time budget of one record's renders
RENDER_CHARS = 8_000_000  # default maximum characters of one render
MAX_RANGE = 100_000  # jinja's sandbox bound on range(), kept
MAX_POWER_BITS = 4096  # `a ** b` beyond this many bits is refused (Python would compute it for ages)


class TemplateRaised(Exception):
    """The template called raise_exception(...) for this conversation."""


class TemplateTimeout(Exception):
    """A render ran past its time budget or output size (see `render_budget`)."""


class _Budget:
    """The bound of the renders in progress (one per process: renders run in the main thread)."""

    deadline = float("inf")
    seconds = RENDER_SECONDS
    max_chars = RENDER_CHARS
    ops = 0
    # tojson of the same object within one record's renders (a tool list is serialized in every render):
    # id -> (the object, kwargs, text); the object is held, so its id cannot be reused meanwhile
    json_cache: dict[int, tuple[Any, tuple[Any, ...], str]] | None = None


_BUDGET = _Budget()


@contextmanager
def render_budget(seconds: float = RENDER_SECONDS, max_chars: int = RENDER_CHARS) -> Iterator[None]:
    """Bound every render inside the block: together at most `seconds`, each at most `max_chars` long."""
    saved = (_BUDGET.deadline, _BUDGET.seconds, _BUDGET.max_chars, _BUDGET.json_cache)
    _BUDGET.deadline = min(saved[0], time.monotonic() + seconds)
    _BUDGET.seconds, _BUDGET.max_chars = seconds, max_chars
    if _BUDGET.json_cache is None:
        _BUDGET.json_cache = {}
    try:
        yield
    finally:
        _BUDGET.deadline, _BUDGET.seconds, _BUDGET.max_chars, _BUDGET.json_cache = saved


def _tick() -> None:
    _BUDGET.ops += 1
    if not _BUDGET.ops & 255 and time.monotonic() > _BUDGET.deadline:
        raise TemplateTimeout(f"the chat template ran longer than {_BUDGET.seconds:g} s on this record")


def _check_size(n: int) -> None:
    if n > _BUDGET.max_chars:
        raise TemplateTimeout(f"the chat template's output reached {n:,} characters (limit {_BUDGET.max_chars:,})")


class _BoundedRange(Sequence[int]):
    """`range` for templates: jinja's size limit, and iteration that honours the render budget."""

    def __init__(self, *args: int) -> None:
        self._r = range(*args)
        if len(self._r) > MAX_RANGE:
            raise jinja2.exceptions.SecurityError(f"range too big (maximum {MAX_RANGE:,} items)")

    def __len__(self) -> int:
        return len(self._r)

    def __getitem__(self, k: Any) -> Any:
        return self._r[k]

    def __contains__(self, x: object) -> bool:
        return x in self._r

    def __iter__(self) -> Iterator[int]:
        for k, x in enumerate(self._r):
            if not k & 1023:
                _BUDGET.ops |= 255
                _tick()
            yield x

    def __repr__(self) -> str:
        return repr(self._r)


_DICT_ATTRIBUTES = frozenset(dir(dict))
_LOOP_PROPERTIES = frozenset(
    {"index0", "index", "revindex", "revindex0", "first", "last", "length", "depth", "depth0"}
    | {"previtem", "nextitem"}
)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """transformers' sandbox, with every render bounded by `render_budget`."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`message.role` on a dict: the item, as the sandbox gives it (an attribute lookup that fails first,
        then the item, unchecked), without the failed lookup; dict's own attributes (`items`) go the long way.
        `loop.index0`: the property, which the sandbox's checks always let through (public, not a function's
        or a mutable's); a tool-call template asks for it ~17 times a render."""
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        elif type(obj) is LoopContext and attribute in _LOOP_PROPERTIES:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        _tick()
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and right * max(1, abs(left).bit_length()) > MAX_POWER_BITS:
                raise TemplateTimeout(f"{left} ** {right} is too large to compute")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    _check_size(len(seq) * n)
        return super().call_binop(context, operator, left, right)


class TemplateNamespace(Namespace):
    """transformers' namespace: underscore-prefixed attributes are refused (no path to CPython internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            TemplateNamespace._check_name(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        TemplateNamespace._check_name(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}."
            )


class TemplateDict:
    """transformers' `dict` global: a call and fromkeys, nothing to break out with."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message: str) -> None:
    raise TemplateRaised(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    cache = _BUDGET.json_cache
    if cache is None or not isinstance(x, (dict, list)):  # the sandbox is immutable: a dict or list stays as is
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    key = (ensure_ascii, indent, separators if separators is None else tuple(separators), sort_keys)
    hit = cache.get(id(x))
    if hit is not None and hit[0] is x and hit[1] == key:
        return hit[2]
    text = json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    cache[id(x)] = (x, key, text)
    return text


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
    env = BoundedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    env.globals["range"] = _BoundedRange
    try:
        code = cached("compiled", source, lambda: env.compile(source))
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template does not compile: line {e.lineno}: {e.message}") from e
    return env.template_class.from_code(env, code, env.make_globals(None), None)


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


def template_variables(source: str, include_assigned: bool = False) -> list[str]:
    """Variables a template reads beyond the HF conventions (given with --template-var). Names it also
    assigns are left out unless `include_assigned` (`{% set x = x if x is defined else true %}` reads a
    given x: the reasoning switches are searched among all of them, by rendering)."""
    kind = "variables+assigned" if include_assigned else "variables"
    return cached(kind, source, lambda: _template_variables(source, include_assigned))


def _template_variables(source: str, include_assigned: bool) -> list[str]:
    ast = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(
        _GENERATION_TAG.sub("", _ENDGEN.sub("", source))
    )
    assigned = set() if include_assigned else {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    return sorted(meta.find_undeclared_variables(ast) - HF_VARIABLES - assigned)


_ENDGEN = re.compile(r"\{%-?\s*endgeneration\s*-?%\}")


def has_generation_tags(source: str) -> bool:
    return _GENERATION_TAG.search(source) is not None


def render(
    template: jinja2.Template, variables: dict[str, Any], track_generation: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    """Render with the HF variables; return the text and the {% generation %} ranges. Bounded by the
    enclosing `render_budget` (TemplateTimeout); a template recursing without end raises RecursionError."""
    blocks: list[str] = []
    size = 0
    if not track_generation:  # a shared context skips jinja's per-call globals copy (~30% of a render)
        ctx = template.new_context({**template.environment.globals, **variables}, shared=True)
        for block in template.root_render_func(ctx):
            blocks.append(block)
            size += len(block)
            if size > _BUDGET.max_chars:
                _check_size(size)
            _tick()
        return "".join(blocks), []
    ranges: list[tuple[int, int]] = []
    with template.environment.activate_tracker(blocks, ranges):  # type: ignore[attr-defined]
        for block in template.generate(**variables):
            blocks.append(block)
            size += len(block)
            if size > _BUDGET.max_chars:
                _check_size(size)
            _tick()
    return "".join(blocks), ranges
