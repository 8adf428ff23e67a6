"""The added-token pattern (a trie) finds exactly what the longest-first alternation finds: the same spans,
the longest token at each place, for tokens that share prefixes and contain regex metacharacters."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sftprep.tokenize.tokenizer import _compiled_alternation, trie_pattern

_ALPHABET = "<|>ab_ .*\\"
tokens = st.lists(st.text(_ALPHABET, min_size=1, max_size=6), min_size=1, max_size=12, unique=True)


def _flat(toks: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(map(re.escape, sorted(toks, key=len, reverse=True))))


@settings(max_examples=400, deadline=None)
@given(toks=tokens, pieces=st.lists(st.integers(0, 30), max_size=30), filler=st.text(_ALPHABET, max_size=20))
def test_trie_finds_what_the_longest_first_alternation_finds(toks: list[str], pieces: list[int], filler: str) -> None:
    text = filler.join(toks[i % len(toks)] if i < 20 else filler[: i - 20] for i in pieces) + filler
    trie = re.compile(trie_pattern(toks))
    assert [m.span() for m in trie.finditer(text)] == [m.span() for m in _flat(toks).finditer(text)]


def test_trie_shape_and_longest_match() -> None:
    assert trie_pattern(["a", "abc", "ad"]) == "a(?:(?:bc|d))?"
    assert trie_pattern(["<|x|>"]) == re.escape("<|x|>")
    found = _compiled_alternation(("<|reserved_1|>", "<|reserved_10|>", "<|r"))
    assert found is not None
    assert [m.group() for m in found.finditer("<|reserved_10|><|reserved_1|><|reserved_2|>")] == [
        "<|reserved_10|>", "<|reserved_1|>", "<|r"]  # fmt: skip


def test_tokens_nested_too_deep_for_a_trie_fall_back_to_the_flat_alternation() -> None:
    toks = tuple("a" * n for n in range(1, 1500))
    found = _compiled_alternation(toks)
    assert found is not None and found.match("a" * 2000).group() == "a" * 1499
