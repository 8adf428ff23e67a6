"""The values an opacity render runs on (opacity.py): message contents that flag any observation, messages
that allow only lookups by key, and the wrappers of filters, tests, joins and output that flag content."""

from __future__ import annotations

import types
from collections import abc
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, NoReturn

import jinja2
from jinja2.runtime import Macro, markup_join
from jinja2.utils import Namespace

REFUSED_FILTERS = frozenset({"random"})  # nondeterministic: flags on every call
_MAX_DEPTH = 12


class Observed(BaseException):
    """A content value was observed: the render stops."""


OBSERVED: ContextVar[list[str] | None] = ContextVar("sftprep_opacity_observed", default=None)
# For content_writes: each content (and its marker) -> the marker `| trim` of the whole content gives
TRIMS: ContextVar[dict[str, str] | None] = ContextVar("sftprep_opacity_trims", default=None)


def observe(what: str) -> NoReturn:
    observed = OBSERVED.get()
    if observed is not None:
        observed.append(what)
    raise Observed(what)


def _flagging(name: str) -> Callable[..., NoReturn]:
    def flag(*_args: Any, **_kwargs: Any) -> NoReturn:
        observe(name)

    flag.__name__ = flag.__qualname__ = name.rpartition(".")[2]
    return flag


# Compared with content, these give NotImplemented both ways (Undefined: False by type) without reading it.
_NON_STR = (int, float, type(None), jinja2.Undefined)


class Traced(str):
    """A message content: writing and concatenating it is allowed, anything else flags."""

    def __add__(self, other: object) -> Traced:  # type: ignore[override]
        if type(other) not in (str, Traced):  # Markup, Undefined...: their own semantics would apply
            observe("content + non-str")
        return Traced(str.__add__(self, other))  # type: ignore[arg-type]

    def __radd__(self, other: object) -> Traced:
        if type(other) not in (str, Traced):
            observe("non-str + content")
        return Traced(str.__add__(other, self))  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _NON_STR):  # a str: compares the text
            observe("str.__eq__")
        return NotImplemented  # what str.__eq__ gives: Python falls back to identity, whatever the content

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, _NON_STR):
            observe("str.__ne__")
        return NotImplemented

    def __str__(self) -> str:
        return self

    def __bool__(self) -> bool:
        return str.__len__(self) > 0


# Needed for the type machinery itself; everything else callable on str and not defined above flags (incl.
# __hash__, __len__, __iter__, __getitem__, __contains__, __lt__, __mod__, __rmod__, __mul__, __format__,
# __repr__, format, strip...). __hash__ is None in vars(Traced) (it defines __eq__): it is overridden too.
_STR_EXEMPT = frozenset({"__class__", "__getattribute__", "__new__", "__init__", "__init_subclass__"})
_STR_EXEMPT |= {"__subclasshook__", "__doc__"}
for _name in dir(str):
    if _name not in _STR_EXEMPT and vars(Traced).get(_name) is None and callable(getattr(str, _name)):
        setattr(Traced, _name, _flagging(f"str.{_name}"))


class TracedMessage(abc.Mapping):  # type: ignore[type-arg]
    """A message dict, read-only: lookups by key are allowed (keys are the shape), the rest flags; so does a
    lookup of a sealed key (tool calls, reasoning, name, tool_call_id: present or not by the shape, their values
    the record's). No attribute is named like a message key (Jinja's `message.content` tries getattr first)."""

    __slots__ = ("__data", "__sealed")

    def __init__(self, data: dict[str, Any], sealed: frozenset[str] = frozenset()) -> None:
        self.__data = data
        self.__sealed = sealed

    def _fields(self) -> dict[str, Any]:
        return self.__data

    def _sealed(self) -> bool:
        return any(k in self.__data for k in self.__sealed)

    def __getitem__(self, key: Any) -> Any:
        if key in self.__sealed:
            observe(f"message[{key!r}]")
        return self.__data[key]

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self.__sealed:
            observe(f"message.get({key!r})")
        return self.__data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.__data

    def __len__(self) -> int:
        return len(self.__data)

    __iter__ = _flagging("message.__iter__")


for _name in ("keys", "items", "values", "copy", "fromkeys", "__eq__", "__ne__", "__str__", "__repr__"):
    setattr(TracedMessage, _name, _flagging(f"message.{_name}"))  # __hash__ stays None, as for dict


class Sealed:
    """A value the render must not read (the record's `tools`): every use flags. Identity and type tests give
    the same answer as for the list it stands for (not None, defined, not a str, number, mapping or callable);
    the others (sequence, iterable) reach a flagging dunder."""

    __slots__ = ()

    def __getattr__(self, name: str) -> NoReturn:
        observe(f"tools.{name}")


# Not __call__: callable() would then say True where the list says False (a call is caught without it: the
# sandbox's safety check reads an attribute, and calling a non-callable raises).
_SEALED_DUNDERS = ("__bool__", "__len__", "__iter__", "__getitem__", "__contains__", "__reversed__", "__str__")
_SEALED_DUNDERS += ("__repr__", "__format__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__")
_SEALED_DUNDERS += ("__add__", "__radd__", "__mul__", "__rmul__", "__mod__", "__rmod__", "__index__", "__int__")
for _name in (*_SEALED_DUNDERS, "__float__"):
    setattr(Sealed, _name, _flagging(f"tools.{_name}"))
Sealed.__hash__ = _flagging("tools.__hash__")  # type: ignore[assignment,method-assign]


_SCALARS = (str, int, float, complex, type(None), range, jinja2.Undefined)  # str: plain or Markup, not Traced
_CALLABLES = (Macro, types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.BuiltinMethodType)
_SEQUENCES = (list, tuple, set, frozenset, abc.KeysView, abc.ValuesView, abc.ItemsView)


def holds_content(x: Any, depth: int = 0) -> bool:
    """Whether x is or may contain a content value; unknown objects (iterators, loops...) may."""
    if isinstance(x, Traced):
        return True
    if isinstance(x, (*_SCALARS, *_CALLABLES)):  # a macro's body is instrumented itself
        return False
    if depth >= _MAX_DEPTH:
        return True
    if isinstance(x, Sealed):
        return True
    if isinstance(x, TracedMessage):
        if x._sealed():
            return True  # a filter or call given the whole message could read the sealed values
        x = x._fields()
    elif isinstance(x, Namespace):
        x = object.__getattribute__(x, "_Namespace__attrs")
    if isinstance(x, _Seen):
        x = x.items  # items not yet taken from it are all it can give
    if isinstance(x, dict):
        return any(holds_content(k, depth + 1) or holds_content(v, depth + 1) for k, v in x.items())
    if isinstance(x, _SEQUENCES):
        return any(holds_content(v, depth + 1) for v in x)
    if isinstance(x, slice):
        return any(holds_content(v, depth + 1) for v in (x.start, x.stop, x.step))
    return True


def checked(kind: str, name: str, func: Callable[..., Any], value_may_hold: bool) -> Callable[..., Any]:
    pass_arg = getattr(func, "jinja_pass_arg", None)
    skip = 0 if pass_arg is None else 1  # the context / eval context / environment Jinja passes first
    checked_from = skip + 1 if value_may_hold else skip

    def checked(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_seen(a) for a in args)
        if (
            name in REFUSED_FILTERS
            or any(holds_content(a) for a in args[checked_from:])
            or any(holds_content(v) for v in kwargs.values())
        ):
            observe(f"{kind} {name!r}")
        return func(*args, **kwargs)

    if pass_arg is not None:
        checked.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return checked


class _Seen(abc.Iterator):  # type: ignore[type-arg]
    """A generator's items, taken out to be checked, handed on as an iterator over them (same items, order)."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self._it = items, iter(items)

    def __next__(self) -> Any:
        return next(self._it)


def _seen(x: Any) -> Any:
    """A generator (Jinja's select, map, ...) drained into a _Seen, whose items holds_content can check."""
    return _Seen(list(x)) if isinstance(x, types.GeneratorType) else x


def trim_checked(checked: Callable[..., Any]) -> Callable[..., Any]:
    """`| trim` of a whole content value (no `chars`) gives its marker when content_writes asks; else it flags."""

    def trim(value: Any, chars: Any = None) -> Any:
        trims = TRIMS.get()
        if trims is not None and chars is None and isinstance(value, Traced):
            marker = trims.get("".join((value,)))  # a plain str of the value: no flagging dunder is called
            if marker is not None:
                return Traced(marker)
        return checked(value, chars)

    return trim


def taint_concat(parts: Iterable[str]) -> str:
    """ "".join that keeps the taint: captured output holding content stays traced."""
    buf = list(parts)
    text = "".join(buf)
    return Traced(text) if any(isinstance(p, Traced) for p in buf) else text


def str_join_traced(seq: Iterable[Any]) -> str:  # `~`: jinja2.runtime.str_join, taint kept
    return taint_concat(map(str, seq))


def markup_join_checked(seq: Iterable[Any]) -> str:  # autoescape only (refused): flag content
    buf = list(seq)
    if any(holds_content(x) for x in buf):
        observe("markup_join")
    return markup_join(buf)


def _printable(x: Any, depth: int = 0) -> bool:
    """Data whose str() is the same in every render: no content, no object with an address in its repr."""
    if isinstance(x, _SCALARS):
        return not isinstance(x, Traced)
    if depth >= _MAX_DEPTH or not isinstance(x, (list, tuple, dict)):
        return False
    items = [*x.keys(), *x.values()] if isinstance(x, dict) else x
    return all(_printable(v, depth + 1) for v in items)


def finalize(value: Any) -> Any:
    """Every `{{ ... }}` value: writing content is the allowed sink; writing a repr of content is not."""
    if not isinstance(value, Traced) and not _printable(value):
        observe(f"output of a {type(value).__name__}")
    return value


def in_operand(value: Any) -> Any:
    if isinstance(value, Traced):
        observe("content as the left operand of `in`")
    return value
