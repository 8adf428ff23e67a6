"""labels/boundary_check.py: the cuts a joint encoding would merge across, found by encoding a window around
each cut inside a later trained turn's prompt; and rstrip tokens that swallow the whitespace after a turn.

The merging tokenizer (tests/dummy_tokenizer.py) is the dummy rule plus one BPE merge, "a" + "b" -> id 300:
a cut between an "a" and a "b" is exactly where a joint encoding puts one token across it.
"""

from __future__ import annotations

import pytest
from dummy_tokenizer import build_dummy_tokenizer, build_merging_tokenizer
from hand_render import chatml, plain_text

from sftprep.labels.boundary_check import absorb_rstrip, check_boundaries, cuts_needing_check
from sftprep.labels.build_loss_labels import encode_and_label
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import Span, TurnSpan

TWO_TURNS = (("user", "Hi"), ("assistant", "Yo"), ("user", "Q"), ("assistant", "A"))


@pytest.fixture(scope="module")
def dummy() -> BPETokenizer:
    return BPETokenizer(build_dummy_tokenizer(), "dummy", "0")


@pytest.fixture(scope="module", params=[False, True], ids=["no-added-tokens", "with-markers"])
def merging(request: pytest.FixtureRequest) -> BPETokenizer:
    return BPETokenizer(build_merging_tokenizer(markers=request.param), "merging", "0")


# -- absorb_rstrip -------------------------------------------------------------------------------------------


def test_an_rstrip_token_takes_the_whitespace_after_it() -> None:
    r = chatml(("user", "Hi"), ("assistant", "Yo"), ("user", "Q"), ("assistant", "A"))
    before = [(t.start, t.end) for t in r.turns]
    absorb_rstrip(r, ("<|im_end|>",))
    assert [r.text[t.start : t.end] for t in r.turns] == ["Yo<|im_end|>\n", "A<|im_end|>\n"]
    assert [(t.start, t.end) for t in r.turns] == [(a, b + 1) for a, b in before]
    assert r.turns[1].end == len(r.text)


def test_no_rstrip_token_or_another_one_changes_nothing() -> None:
    r = chatml(*TWO_TURNS)
    turns = list(r.turns)
    absorb_rstrip(r, ())
    absorb_rstrip(r, ("<|end|>",))
    assert r.turns == turns


def test_a_turn_not_ending_in_the_token_is_left_alone() -> None:
    r = chatml(*TWO_TURNS)
    t = r.turns[0]
    r.turns[0] = TurnSpan(t.message_index, t.assistant_index, t.start, t.content.end, t.content)  # no marker
    absorb_rstrip(r, ("<|im_end|>",))
    assert r.text[r.turns[0].start : r.turns[0].end] == "Yo"
    assert r.text[r.turns[1].start : r.turns[1].end] == "A<|im_end|>\n"


def test_whitespace_is_taken_to_the_next_non_space() -> None:
    r = plain_text("x<|im_end|> \n\t y", [(0, 11)])
    absorb_rstrip(r, ("<|im_end|>",))
    assert (r.turns[0].start, r.turns[0].end) == (0, 15)
    assert r.turns[0].content == Span(0, 11)


# -- which cuts are checked ----------------------------------------------------------------------------------


def test_the_cuts_before_the_last_trained_turn_are_checked(dummy: BPETokenizer) -> None:
    (e,) = encode_and_label([chatml(*TWO_TURNS)], dummy)
    # pieces: prompt 1, turn 1, prompt 2, turn 2, "\n": turn 1 and prompt 2 start inside turn 2's prompt
    assert cuts_needing_check(e) == [1, 2]


@pytest.mark.parametrize("trained", [[True, False], [False, True], [False, False]])
def test_one_trained_turn_needs_no_check(dummy: BPETokenizer, trained: list[bool]) -> None:
    (e,) = encode_and_label([chatml(*TWO_TURNS, trained=trained)], dummy)
    assert cuts_needing_check(e) == []


# -- check_boundaries ----------------------------------------------------------------------------------------


def test_one_character_tokens_never_merge(dummy: BPETokenizer) -> None:
    encoded = encode_and_label([chatml(*TWO_TURNS), chatml(("user", "ab"), ("assistant", "ab"))], dummy)
    assert check_boundaries(encoded, dummy) == ([True, True], 0)


def test_a_cut_a_joint_encoding_merges_is_found(merging: BPETokenizer) -> None:
    # "a" (trained) | "bc" | "d" (trained): a joint encoding of "abc" has "ab" across the first cut
    encoded = encode_and_label([plain_text("abcd", [(0, 1), (3, 4)])], merging)
    assert encoded[0].input_ids.tolist() == [97, 98, 99, 100]
    assert check_boundaries(encoded, merging) == ([False], 1)


def test_a_cut_nothing_merges_across_passes(merging: BPETokenizer) -> None:
    encoded = encode_and_label([plain_text("axcd", [(0, 1), (3, 4)]), plain_text("xabd", [(0, 1), (3, 4)])], merging)
    assert check_boundaries(encoded, merging) == ([True, True], 0)


def test_every_merging_cut_is_counted_and_only_its_example_fails(merging: BPETokenizer) -> None:
    bad = plain_text("abab" + "c", [(0, 1), (2, 3), (4, 5)])  # cuts at 1 ("a|b") and 3 ("a|b") both merge
    good = plain_text("axaxc", [(0, 1), (2, 3), (4, 5)])
    assert check_boundaries(encode_and_label([good, bad, good], merging), merging) == ([True, False, True], 2)


def test_a_cut_after_the_last_trained_turn_is_not_checked(merging: BPETokenizer) -> None:
    """ "xa" (trained) then "b": merged in a joint encoding, but no later trained turn has it in its prompt."""
    (e,) = encode_and_label([plain_text("xab", [(0, 2)])], merging)
    assert e.input_ids.tolist() == [120, 97, 98] and merging.encode("xab") == [120, 300]
    assert check_boundaries([e], merging) == ([True], 0)


def test_the_window_ends_at_the_next_added_token() -> None:
    tok = BPETokenizer(build_merging_tokenizer(), "merging", "0")
    # a | b<|im_end|>c | d: the window for the cut at 1 is "ab" (it stops at the marker), merged there
    encoded = encode_and_label([plain_text("ab<|im_end|>cd", [(0, 1), (13, 14)])], tok)
    assert check_boundaries(encoded, tok) == ([False], 1)
    encoded = encode_and_label([plain_text("ax<|im_end|>cd", [(0, 1), (13, 14)])], tok)
    assert check_boundaries(encoded, tok) == ([True], 0)


def test_a_long_piece_is_compared_up_to_the_margin(merging: BPETokenizer) -> None:
    """The window is cut 64 characters after the cut; the tokens near that edge are not compared, the merge
    right at the cut still is."""
    text = "a" + "b" + "x" * 200 + "d"
    encoded = encode_and_label([plain_text(text, [(0, 1), (len(text) - 1, len(text))])], merging)
    assert check_boundaries(encoded, merging) == ([False], 1)
    text = "a" + "x" * 200 + "ab" + "d"  # a merge far from the cut, inside one piece: the same on both sides
    encoded = encode_and_label([plain_text(text, [(0, 1), (len(text) - 1, len(text))])], merging)
    assert check_boundaries(encoded, merging) == ([True], 0)
