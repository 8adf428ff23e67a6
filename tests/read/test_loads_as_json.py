"""formats.loads_as_json (tool lists and tool calls given as JSON strings): the value json.loads gives, types
included (orjson where it agrees), and json's own error for what it refuses."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftprep.read.formats import loads_as_json


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


scalars = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text()
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4))


@settings(max_examples=500, deadline=None)
@given(value=values, ascii=st.booleans())
def test_the_value_json_loads_gives(value: Any, ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii)
    assert same(loads_as_json(text), json.loads(text))


@pytest.mark.parametrize(
    "text", ['{"a": NaN}', '"\\ud800"', "1e400", "12345678901234567890", '{"a":1,"a":2}', " [-0.0] ", "1" * 30]
)
def test_what_orjson_reads_otherwise(text: str) -> None:
    assert same(loads_as_json(text), json.loads(text))


@pytest.mark.parametrize("text", ["[1, 2", '{"a":1} x', "", "{'a': 1}"])
def test_json_errors_are_json_s(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        loads_as_json(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)
