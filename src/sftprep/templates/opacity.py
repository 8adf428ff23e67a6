"""Prove, by one instrumented render per conversation shape, that a chat template never looks inside contents.

Soundness. Within a shape (roles, which contents are empty; no tools, tool calls, reasoning or names) every
input but the non-empty contents is identical for all records: special tokens, template variables, roles,
keys, add_generation_prompt, the empty contents. The template is deterministic (strftime_now, lipsum, cycler
and `random` are refused). If a render never observes a content value (no method, comparison, hash, length,
iteration, subscript, formatting, filter, test or call reads it) and only concatenates contents and writes
them out, every branch taken and every literal written is the same function of the shape for any contents:
each record renders as the sentinel render with each sentinel replaced by its content. Truthiness is allowed
(non-emptiness is part of the shape).

Observation is caught thus (anything not shown harmless counts as observation):
- non-empty contents become `_Traced` strs: every str method and dunder flags, except `+` with a plain str
  (the result stays traced), `str()` (itself), truthiness, and `==`/`!=` with a number, None or Undefined
  (NotImplemented both ways, as for str). Messages become `_TracedMessage` read-only mappings: `m[key]`,
  `m.get`, `key in m`, `len(m)` are allowed (keys are the shape's); the rest flags.
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
Observation raises `_Observed`, a BaseException (no `except Exception` in Jinja or a filter hides it), and
is also recorded per render, authoritatively. The output must equal `expected` exactly.
"""

from __future__ import annotations

import types
from collections import abc
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.runtime import Context, Macro, markup_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from sftprep.errors import TemplateError
from sftprep.templates.hf_jinja import BoundedEnvironment, compile_template

# Filters that only move values around or reach content only through `_Traced`'s flagging dunders:
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
REFUSED_FILTERS = frozenset({"random"})  # nondeterministic: flags on every call
_GUARD = "sftprep_opacity_in_operand_"  # the global the `in` rewrite calls
_REFUSED_NODES = (nodes.EvalContextModifier, nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
_MAX_DEPTH = 12


class _Observed(BaseException):
    """A content value was observed: the render stops."""


_STATE: ContextVar[list[str] | None] = ContextVar("sftprep_opacity_observed", default=None)


def _observe(what: str) -> NoReturn:
    observed = _STATE.get()
    if observed is not None:
        observed.append(what)
    raise _Observed(what)


def _flagging(name: str) -> Callable[..., NoReturn]:
    def observe(*_args: Any, **_kwargs: Any) -> NoReturn:
        _observe(name)

    observe.__name__ = observe.__qualname__ = name.rpartition(".")[2]
    return observe


# Compared with content, these give NotImplemented both ways (Undefined: False by type) without reading it.
_NON_STR = (int, float, type(None), jinja2.Undefined)


class _Traced(str):
    """A message content: writing and concatenating it is allowed, anything else flags."""

    def __add__(self, other: object) -> _Traced:  # type: ignore[override]
        if type(other) not in (str, _Traced):  # Markup, Undefined...: their own semantics would apply
            _observe("content + non-str")
        return _Traced(str.__add__(self, other))  # type: ignore[arg-type]

    def __radd__(self, other: object) -> _Traced:
        if type(other) not in (str, _Traced):
            _observe("non-str + content")
        return _Traced(str.__add__(other, self))  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _NON_STR):  # a str: compares the text
            _observe("str.__eq__")
        return NotImplemented  # what str.__eq__ gives: Python falls back to identity, whatever the content

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, _NON_STR):
            _observe("str.__ne__")
        return NotImplemented

    def __str__(self) -> str:
        return self

    def __bool__(self) -> bool:
        return str.__len__(self) > 0


# Needed for the type machinery itself; everything else callable on str and not defined above flags (incl.
# __hash__, __len__, __iter__, __getitem__, __contains__, __lt__, __mod__, __rmod__, __mul__, __format__,
# __repr__, format, strip...). __hash__ is None in vars(_Traced) (it defines __eq__): it is overridden too.
_STR_EXEMPT = frozenset({"__class__", "__getattribute__", "__new__", "__init__", "__init_subclass__"})
_STR_EXEMPT |= {"__subclasshook__", "__doc__"}
for _name in dir(str):
    if _name not in _STR_EXEMPT and vars(_Traced).get(_name) is None and callable(getattr(str, _name)):
        setattr(_Traced, _name, _flagging(f"str.{_name}"))


class _TracedMessage(abc.Mapping):  # type: ignore[type-arg]
    """A message dict, read-only: lookups by key are allowed (keys are the shape), the rest flags.
    No attribute is named like a message key (Jinja's `message.content` tries getattr first)."""

    __slots__ = ("__data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.__data = data

    def _fields(self) -> dict[str, Any]:
        return self.__data

    def __getitem__(self, key: Any) -> Any:
        return self.__data[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return self.__data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.__data

    def __len__(self) -> int:
        return len(self.__data)

    __iter__ = _flagging("message.__iter__")


for _name in ("keys", "items", "values", "copy", "fromkeys", "__eq__", "__ne__", "__str__", "__repr__"):
    setattr(_TracedMessage, _name, _flagging(f"message.{_name}"))  # __hash__ stays None, as for dict


_SCALARS = (str, int, float, complex, type(None), range, jinja2.Undefined)  # str: plain or Markup, not _Traced
_CALLABLES = (Macro, types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.BuiltinMethodType)
_SEQUENCES = (list, tuple, set, frozenset, abc.KeysView, abc.ValuesView, abc.ItemsView)


def _holds_content(x: Any, depth: int = 0) -> bool:
    """Whether x is or may contain a content value; unknown objects (iterators, loops...) may."""
    if isinstance(x, _Traced):
        return True
    if isinstance(x, (*_SCALARS, *_CALLABLES)):  # a macro's body is instrumented itself
        return False
    if depth >= _MAX_DEPTH:
        return True
    if isinstance(x, _TracedMessage):
        x = x._fields()
    elif isinstance(x, Namespace):
        x = object.__getattribute__(x, "_Namespace__attrs")
    if isinstance(x, dict):
        return any(_holds_content(k, depth + 1) or _holds_content(v, depth + 1) for k, v in x.items())
    if isinstance(x, _SEQUENCES):
        return any(_holds_content(v, depth + 1) for v in x)
    if isinstance(x, slice):
        return any(_holds_content(v, depth + 1) for v in (x.start, x.stop, x.step))
    return True


def _wrap(kind: str, name: str, func: Callable[..., Any], value_may_hold: bool) -> Callable[..., Any]:
    pass_arg = getattr(func, "jinja_pass_arg", None)
    skip = 0 if pass_arg is None else 1  # the context / eval context / environment Jinja passes first
    checked_from = skip + 1 if value_may_hold else skip

    def checked(*args: Any, **kwargs: Any) -> Any:
        if (
            name in REFUSED_FILTERS
            or any(_holds_content(a) for a in args[checked_from:])
            or any(_holds_content(v) for v in kwargs.values())
        ):
            _observe(f"{kind} {name!r}")
        return func(*args, **kwargs)

    if pass_arg is not None:
        checked.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return checked


def _taint_concat(parts: Iterable[str]) -> str:
    """ "".join that keeps the taint: captured output holding content stays traced."""
    buf = list(parts)
    text = "".join(buf)
    return _Traced(text) if any(isinstance(p, _Traced) for p in buf) else text


def _str_join(seq: Iterable[Any]) -> str:  # `~`: jinja2.runtime.str_join, taint kept
    return _taint_concat(map(str, seq))


def _markup_join(seq: Iterable[Any]) -> str:  # autoescape only (refused): flag content
    buf = list(seq)
    if any(_holds_content(x) for x in buf):
        _observe("markup_join")
    return markup_join(buf)


def _printable(x: Any, depth: int = 0) -> bool:
    """Data whose str() is the same in every render: no content, no object with an address in its repr."""
    if isinstance(x, _SCALARS):
        return not isinstance(x, _Traced)
    if depth >= _MAX_DEPTH or not isinstance(x, (list, tuple, dict)):
        return False
    items = [*x.keys(), *x.values()] if isinstance(x, dict) else x
    return all(_printable(v, depth + 1) for v in items)


def _finalize(value: Any) -> Any:
    """Every `{{ ... }}` value: writing content is the allowed sink; writing a repr of content is not."""
    if not isinstance(value, _Traced) and not _printable(value):
        _observe(f"output of a {type(value).__name__}")
    return value


def _in_operand(value: Any) -> Any:
    if isinstance(value, _Traced):
        _observe("content as the left operand of `in`")
    return value


class _OpacityEnvironment(BoundedEnvironment):
    intercepted_binops = frozenset(ImmutableSandboxedEnvironment.default_binop_table)
    intercepted_unops = frozenset(ImmutableSandboxedEnvironment.default_unop_table)
    refused: tuple[Any, ...] = ()  # functions whose every call flags (date, randomness)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if obj is _in_operand:
            return obj(*args)
        if any(obj is f for f in self.refused):
            _observe(f"call of {getattr(obj, '__name__', 'a refused global')}")
        if isinstance(getattr(obj, "__self__", None), _Traced):
            _observe("a method of content")
        if not (isinstance(obj, Macro) or (isinstance(obj, type) and issubclass(obj, Namespace))) and (
            any(_holds_content(a) for a in args)
            or any(_holds_content(v) for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars"))
        ):
            _observe(f"call of {getattr(obj, '__name__', type(obj).__name__)} with content")
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":
            if (isinstance(left, _Traced) and type(right) not in (str, _Traced)) or (
                isinstance(right, _Traced) and type(left) not in (str, _Traced)
            ):
                _observe("+ of content and a non-str")
        elif _holds_content(left) or _holds_content(right):
            _observe(f"operator {operator} on content")
        return super().call_binop(context, operator, left, right)

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        if _holds_content(arg):
            _observe(f"unary {operator} on content")
        return super().call_unop(context, operator, arg)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if _holds_content(argument):
            _observe("subscript by content")
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if isinstance(getattr(value, "__self__", None), _Traced):
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
    env.filters = {n: _wrap("filter", n, f, n in SAFE_FILTERS) for n, f in prod.filters.items()}
    env.tests = {n: _wrap("test", n, f, n in SAFE_TESTS) for n, f in prod.tests.items()}
    env.globals.update(prod.globals)
    env.globals[_GUARD] = _in_operand
    env.refused = tuple(prod.globals[n] for n in ("strftime_now", "lipsum", "cycler") if n in prod.globals)
    env.finalize = _finalize
    env.concat = _taint_concat  # type: ignore[method-assign]
    ast = env.parse(source)
    if any(True for _ in ast.find_all(_REFUSED_NODES)):
        return None
    _guard_in_operands(ast)
    ast.set_environment(env)
    template = env.template_class.from_code(env, env.compile(ast), env.make_globals(None), None)
    module_globals = template.root_render_func.__globals__  # the generated module's: blocks and macros share it
    module_globals["str_join"] = _str_join
    module_globals["markup_join"] = _markup_join
    return template


def why_not_opaque(source: str, variables: dict[str, Any], expected: str) -> str | None:
    """None when the render never observes a content value and gives `expected`; else the reason."""
    template = _instrumented(source)
    if template is None:
        return "the template cannot be instrumented"
    messages = variables.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "messages is not a list of dicts"
    traced = [
        _TracedMessage({k: _Traced(v) if k == "content" and isinstance(v, str) and v else v for k, v in m.items()})
        for m in messages
    ]
    observed: list[str] = []
    token = _STATE.set(observed)
    try:
        ctx = template.new_context({**template.environment.globals, **variables, "messages": traced}, shared=True)
        text = "".join(template.root_render_func(ctx))
    except _Observed as e:
        return f"observed: {e}"
    except Exception as e:
        return f"observed: {observed[0]}" if observed else f"the render raised {type(e).__name__}"
    finally:
        _STATE.reset(token)
    if observed:  # an exception swallowed on the way (never by Jinja itself): still observed
        return f"observed: {observed[0]}"
    return None if text == expected else "the output differs from expected"


def content_opaque(source: str, variables: dict[str, Any], expected: str) -> bool:
    """True when rendering `source` (an HF chat template) with `variables` never observes any message's
    content value, only writes it into the output, and the output equals `expected`."""
    return why_not_opaque(source, variables, expected) is None
