"""Prove, by one instrumented render per conversation shape, that a chat template never looks inside contents.

Soundness. Within a shape (roles, which contents are empty or null, which messages have tool calls,
reasoning, names or tool_call_ids, whether there are tools) every input but the non-empty contents and the
sealed values is identical for all records: special tokens, template variables, roles, keys,
add_generation_prompt, the empty contents. Sealed values (every message key but role and content, and
`tools`) are never read: a lookup of one flags (`key in message` and `len(message)` are the shape's), and
`tools` stands in as a value whose every use flags (identity and type tests answer as for a list). The
template is deterministic (strftime_now, lipsum, cycler and `random` are refused). If a render never
observes a content value (no method, comparison, hash, length, iteration, subscript, formatting, filter,
test or call reads it) and only concatenates contents and writes them out, every branch taken and every
literal written is the same function of the shape for any contents: each record renders as the sentinel
render with each sentinel replaced by its content. Truthiness is allowed (non-emptiness is part of the
shape). The skeleton path (jinja_template.py) traces every render of the shape's derivation this way.

Observation is caught thus (anything not shown harmless counts as observation):
- non-empty contents become `Traced` strs: every str method and dunder flags, except `+` with a plain str
  (the result stays traced), `str()` (itself), truthiness, and `==`/`!=` with a number, None or Undefined
  (NotImplemented both ways, as for str). Messages become `TracedMessage` read-only mappings: `m[key]`,
  `m.get`, `key in m`, `len(m)` are allowed (keys are the shape's), but not for sealed keys; the rest flags.
  A generator given to a filter or test is drained first (its items are checked, then handed on).
- the template is compiled again with the production options, filters, tests and globals, instrumented:
  filters and tests flag when an argument may hold content (unknown objects, e.g. iterators, may), bar
  SAFE sets that only move values or reach content through traced dunders; calls likewise, bar macros,
  `caller` and `namespace`; subscripts by content, arithmetic but `+` of strs, unary operators, and writing
  anything but strs and plain data flag. The joins of captured output keep the taint (`environment.concat`
  for macros, set/filter/call blocks and `self.block()`; the module's `str_join` for `~`), so a later
  `| trim` still flags.
- `x in 'abc'` runs str.__contains__ in C without asking x, so the parsed template is rewritten: the left
  operand of every `in` / `not in` passes through a guard that flags content (a traced right operand flags
  by itself; containers compare elements through the traced dunders). Autoescape, extends, include and
  import are refused statically (autoescape would escape content with C code).
Observation raises `Observed`, a BaseException (no `except Exception` in Jinja or a filter hides it), and
is also recorded per render, authoritatively. The output must equal `expected` exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from sftprep.errors import TemplateError
from sftprep.templates.hf_jinja import BoundedEnvironment, compile_template
from sftprep.templates.traced import (
    OBSERVED,
    TRIMS,
    Observed,
    Sealed,
    Traced,
    TracedMessage,
    checked,
    finalize,
    holds_content,
    in_operand,
    markup_join_checked,
    observe,
    str_join_traced,
    taint_concat,
    trim_checked,
)

# Filters that only move values around or reach content only through `Traced`'s flagging dunders:
# length/count: len() of lists and messages is shape, of content flags; default/d: the value unless Undefined
# (or falsy: emptiness is shape); first/last/list: pick or copy elements, iterating content flags; string:
# a str unchanged, else str() (a repr of content flags); attr: getattr by a constant name (calling the result
# goes through call()); map/select/reject/selectattr/rejectattr: lookups go through getitem(), named filters
# and tests through the wrapped ones, else bool(). Content in any other argument flags.
SAFE_FILTERS = frozenset(
    {"length", "count", "default", "d", "first", "last", "list", "string", "attr", "map", "select", "reject"}
    | {"selectattr", "rejectattr"}
)
# Tests of type or identity only (the same for every record of a shape), or reaching content through
# flagging dunders (sequence: len; iterable: iter).
SAFE_TESTS = frozenset(
    {"defined", "undefined", "none", "boolean", "true", "false", "integer", "float", "number", "string"}
    | {"mapping", "callable", "sequence", "iterable"}
)
_GUARD = "sftprep_opacity_in_operand_"  # the global the `in` rewrite calls
_REFUSED_NODES = (nodes.EvalContextModifier, nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


class _OpacityEnvironment(BoundedEnvironment):
    intercepted_binops = frozenset(ImmutableSandboxedEnvironment.default_binop_table)
    intercepted_unops = frozenset(ImmutableSandboxedEnvironment.default_unop_table)
    refused: tuple[Any, ...] = ()  # functions whose every call flags (date, randomness)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if obj is in_operand:
            return obj(*args)
        if any(obj is f for f in self.refused):
            observe(f"call of {getattr(obj, '__name__', 'a refused global')}")
        if isinstance(getattr(obj, "__self__", None), Traced):
            observe("a method of content")
        if not (isinstance(obj, Macro) or (isinstance(obj, type) and issubclass(obj, Namespace))) and (
            any(holds_content(a) for a in args)
            or any(holds_content(v) for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars"))
        ):
            observe(f"call of {getattr(obj, '__name__', type(obj).__name__)} with content")
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":
            if (isinstance(left, Traced) and type(right) not in (str, Traced)) or (
                isinstance(right, Traced) and type(left) not in (str, Traced)
            ):
                observe("+ of content and a non-str")
        elif holds_content(left) or holds_content(right):
            observe(f"operator {operator} on content")
        return super().call_binop(context, operator, left, right)

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        if holds_content(arg):
            observe(f"unary {operator} on content")
        return super().call_unop(context, operator, arg)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if holds_content(argument):
            observe("subscript by content")
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if isinstance(getattr(value, "__self__", None), Traced):
            return None  # content.format: the traced method itself flags when called
        return super().wrap_str_format(value)


def _guard_in_operands(ast: nodes.Template) -> None:
    """Rewrite `a in b` / `a not in b` (also inside chains) to `guard(a) in b`."""
    for cmp in list(ast.find_all(nodes.Compare)):
        left = cmp.expr
        for i, op in enumerate(cmp.ops):
            right = op.expr
            if op.op in ("in", "notin"):
                guarded = nodes.Call(nodes.Name(_GUARD, "load"), [left], [], None, None).set_lineno(cmp.lineno)
                if i == 0:
                    cmp.expr = guarded
                else:
                    cmp.ops[i - 1].expr = guarded
            left = right


@lru_cache(maxsize=64)
def _instrumented(source: str) -> jinja2.Template | None:
    """The template compiled with the instrumentation; None when it cannot be instrumented soundly."""
    if _GUARD in source:
        return None
    try:
        prod = compile_template(source).environment
    except TemplateError:
        return None
    env = _OpacityEnvironment(
        trim_blocks=prod.trim_blocks,
        lstrip_blocks=prod.lstrip_blocks,
        keep_trailing_newline=prod.keep_trailing_newline,
        extensions=[type(e) for e in prod.extensions.values()],
    )
    if prod.autoescape or prod.finalize is not None:
        return None
    env.filters = {n: checked("filter", n, f, n in SAFE_FILTERS) for n, f in prod.filters.items()}
    env.tests = {n: checked("test", n, f, n in SAFE_TESTS) for n, f in prod.tests.items()}
    if "trim" in env.filters:
        env.filters["trim"] = trim_checked(env.filters["trim"])
    env.globals.update(prod.globals)
    env.globals[_GUARD] = in_operand
    env.refused = tuple(prod.globals[n] for n in ("strftime_now", "lipsum", "cycler") if n in prod.globals)
    env.finalize = finalize
    env.concat = taint_concat  # type: ignore[method-assign]
    ast = env.parse(source)
    if any(True for _ in ast.find_all(_REFUSED_NODES)):
        return None
    _guard_in_operands(ast)
    ast.set_environment(env)
    template = env.template_class.from_code(env, env.compile(ast), env.make_globals(None), None)
    module_globals = template.root_render_func.__globals__  # the generated module's: blocks and macros share it
    module_globals["str_join"] = str_join_traced
    module_globals["markup_join"] = markup_join_checked
    return template


def why_not_opaque(source: str, variables: dict[str, Any], expected: str) -> str | None:
    """None when the render never observes a content value and gives `expected`; else the reason."""
    return _trace(source, variables, expected, None)[0]


def content_writes(source: str, variables: dict[str, Any], expected: str) -> tuple[bool, ...] | None:
    """content_placements' trim flags."""
    placed = content_placements(source, variables, expected)
    return None if placed is None else tuple(trimmed for _, trimmed in placed)


def content_placements(source: str, variables: dict[str, Any], expected: str) -> tuple[tuple[str, bool], ...] | None:
    """As content_opaque, but `| trim` of a whole content value is allowed: for each content written, in the
    order of the output, whether it went through `| trim` (so a record's render holds `content.strip()`
    there), with the content; None where the render observes content otherwise or differs from `expected`
    (a lookup of a sealed message key or any use of `tools` is an observation). The contents must be
    distinct, their own strip(), and written nowhere but as themselves (the skeleton's sentinels are).
    Soundness: trim is then one fixed function of the content (str.strip), applied to whole values whose
    result is only placed; its result is non-empty for the contents the skeleton is filled with
    (whitespace-only ones take the exact path), so truthiness is still the shape's."""
    messages = variables.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None
    contents = [m.get("content") for m in messages]
    contents = [c for c in contents if isinstance(c, str) and c]
    if len(set(contents)) != len(contents) or any(c.strip() != c for c in contents):
        return None
    trims: dict[str, str] = {}
    for k, c in enumerate(contents):
        marker = f"{_TRIMMED[0]}{k}{_TRIMMED[1]}"
        if marker in expected or any(marker in x for x in contents):
            return None
        trims[c] = trims[marker] = marker
    reason, text = _trace(source, variables, expected, trims)
    if reason is not None or text is None:
        return None
    back = {marker: c for c, marker in trims.items() if c != marker}
    plain = set(contents)
    placed: list[tuple[str, bool]] = []

    def restore(m: re.Match[str]) -> str:
        content = back.get(m.group(), m.group())
        placed.append((content, m.group() in back))
        return content

    alternatives = sorted([*back, *plain], key=len, reverse=True)
    text = re.sub("|".join(map(re.escape, alternatives)), restore, text) if alternatives else text
    return tuple(placed) if text == expected else None


_TRIMMED = ("\ue002", "\ue003")  # private-use characters around a trimmed content's number
_OPEN_KEYS = frozenset({"role", "content"})  # every other key of a message is sealed: its lookup flags


def _trace(
    source: str, variables: dict[str, Any], expected: str, trims: dict[str, str] | None
) -> tuple[str | None, str | None]:
    """(None, the output) when the render never observes a content value (`| trim` of one in `trims` aside)
    and, without `trims`, gives `expected`; else (the reason, None)."""
    template = _instrumented(source)
    if template is None:
        return "the template cannot be instrumented", None
    messages = variables.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "messages is not a list of dicts", None
    traced = [
        TracedMessage(
            {k: Traced(v) if k == "content" and isinstance(v, str) and v else v for k, v in m.items()},
            frozenset(m) - _OPEN_KEYS,
        )
        for m in messages
    ]
    given = {**variables, "messages": traced}
    if given.get("tools") is not None:
        given["tools"] = Sealed()
    observed: list[str] = []
    token, trims_token = OBSERVED.set(observed), TRIMS.set(trims)
    try:
        ctx = template.new_context({**template.environment.globals, **given}, shared=True)
        text = "".join(template.root_render_func(ctx))
    except Observed as e:
        return f"observed: {e}", None
    except Exception as e:
        return (f"observed: {observed[0]}" if observed else f"the render raised {type(e).__name__}"), None
    finally:
        OBSERVED.reset(token)
        TRIMS.reset(trims_token)
    if observed:  # an exception swallowed on the way (never by Jinja itself): still observed
        return f"observed: {observed[0]}", None
    if trims is None and text != expected:
        return "the output differs from expected", None
    return None, text


def content_opaque(source: str, variables: dict[str, Any], expected: str) -> bool:
    """True when rendering `source` (an HF chat template) with `variables` never observes any message's
    content value, only writes it into the output, and the output equals `expected`."""
    return why_not_opaque(source, variables, expected) is None
