"""Compiled templates and their variable scans are cached on disk across processes (issue #15, start-up)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftprep.errors import TemplateError
from sftprep.templates import hf_jinja
from sftprep.templates.code_cache import cached

SOURCE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}{% endfor %}{{ extra_var }}"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SFTPREP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "templates"


def test_a_value_is_computed_once_then_read_back() -> None:
    calls = []
    compute = lambda: calls.append(1) or ["a", "b"]  # noqa: E731
    assert cached("k", "source", compute) == ["a", "b"]
    assert cached("k", "source", compute) == ["a", "b"]
    assert calls == [1]
    cached("k", "other source", compute)
    cached("other kind", "source", compute)
    assert calls == [1, 1, 1]


def test_an_unreadable_entry_is_computed_again(own_cache: Path) -> None:
    cached("k", "source", lambda: ["a"])
    (entry,) = own_cache.iterdir()
    entry.write_bytes(b"\x00garbage")
    assert cached("k", "source", lambda: ["fresh"]) == ["fresh"]


def test_a_template_from_the_cache_renders_as_a_fresh_compile(own_cache: Path) -> None:
    variables = {"messages": [{"role": "user", "content": "  hi  "}], "extra_var": "!"}
    fresh = hf_jinja.compile_template.__wrapped__(SOURCE)
    assert len(list(own_cache.iterdir())) == 1
    again = hf_jinja.compile_template.__wrapped__(SOURCE)  # read back: no parse, no code generation
    assert hf_jinja.render(again, variables)[0] == hf_jinja.render(fresh, variables)[0] == "<user>hi!"
    assert hf_jinja.template_variables(SOURCE) == hf_jinja.template_variables(SOURCE) == ["extra_var"]


def test_a_syntax_error_is_reported_and_not_cached(own_cache: Path) -> None:
    for _ in range(2):
        with pytest.raises(TemplateError, match="does not compile"):
            hf_jinja.compile_template.__wrapped__("{% for m in messages %}")
    assert not own_cache.exists() or not list(own_cache.iterdir())
