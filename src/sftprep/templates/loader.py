"""Resolve `--template NAME|PATH` (or the tokenizer's own template) to a ChatTemplate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sftprep.errors import TemplateError
from sftprep.templates.base import ChatTemplate
from sftprep.templates.jinja_template import JinjaTemplate
from sftprep.templates.spec import SpecTemplate, builtin_specs

DEFAULT_TEMPLATE = "chatml"
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


def builtin_names() -> list[str]:
    return sorted(builtin_specs())


def load_template(
    template: str | None,
    tokenizer_template: str | list[Any] | None = None,
    special_tokens: tuple[str, ...] = (),
    template_name: str | None = None,
    fallback: str = DEFAULT_TEMPLATE,
) -> ChatTemplate:
    """A built-in name, a .jinja / .json / tokenizer_config.json file or a directory holding one;
    None means the tokenizer's own chat template, else `fallback` (a built-in)."""
    if template is None:
        if tokenizer_template is not None:
            source = pick_named(tokenizer_template, template_name, "the tokenizer's chat_template")
            return JinjaTemplate(source, name="tokenizer", special_tokens=special_tokens)
        template = fallback
    specs = builtin_specs()
    if template in specs:
        return SpecTemplate(specs[template])
    path = Path(template)
    if not path.exists():
        raise TemplateError(
            f"--template {template!r}: not a built-in ({', '.join(sorted(specs))}) and no such file; "
            "give a built-in name, a .jinja file, a tokenizer_config.json or a tokenizer directory"
        )
    source = read_template_source(path, template_name)
    return JinjaTemplate(source, name=path.name, special_tokens=special_tokens)


def read_template_source(path: Path, template_name: str | None = None) -> str:
    if path.is_dir():
        for name in TEMPLATE_FILES:
            candidate = path / name
            if candidate.is_file():
                try:
                    return read_template_source(candidate, template_name)
                except TemplateError:
                    continue
        raise TemplateError(f"{path}: no chat template found (looked for {', '.join(TEMPLATE_FILES)})")
    if path.suffix not in (".json", ".jinja", ".j2", ".txt"):
        raise TemplateError(
            f"--template {path}: expected a .jinja file, a tokenizer_config.json / chat_template.json, "
            "a tokenizer directory or a built-in name"
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".json":
        return text
    try:
        data = json.loads(text)
    except ValueError as e:
        raise TemplateError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(data, dict) or "chat_template" not in data:
        raise TemplateError(f"{path}: has no 'chat_template' field")
    return pick_named(data["chat_template"], template_name, str(path))


def pick_named(value: str | list[Any], template_name: str | None, where: str) -> str:
    """A chat_template is a string, or a list of {name, template}: pick `default` or the named one."""
    if isinstance(value, str):
        if template_name not in (None, "default"):
            raise TemplateError(f"{where}: has a single template; --template-name {template_name!r} not found")
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        want = template_name or "default"
        if want in named and isinstance(named[want], str):
            return named[want]
        raise TemplateError(
            f"{where}: no template named {want!r}; available: {sorted(map(str, named))} (choose with --template-name)"
        )
    raise TemplateError(f"{where}: chat_template must be a string or a list of named templates")


def renders_instead(conv: Any, added_tokens: tuple[str, ...], opts: Any) -> str:
    """A fix for a conversation a built-in template cannot render, verified: the built-ins that render it
    and whose markers are all tokens of this tokenizer; else how to get such a template."""
    from sftprep.types import Reject

    usable = []
    for name, spec in sorted(builtin_specs().items()):
        t = SpecTemplate(spec)
        if all(m in added_tokens for m in t.markers(opts)) and not isinstance(t.render(conv, opts), Reject):
            usable.append(f"--template {name}")
    if usable:
        return " or ".join(usable[:3])
    return (
        "a Hugging Face chat template that renders tools (--template FILE.jinja); no built-in renders them with "
        "this tokenizer's tokens"
    )
