"""labels/build_loss_labels.py: the text cut into pieces at trained-region and plain-text boundaries, each piece
encoded on its own, labels = the id on trained pieces and -100 elsewhere.

Renders are built by hand (tests/hand_render.py) and the ids worked out by the dummy rule (one character = one
token, id ord(c); a marker = its fixed id), so every expectation below can be checked by eye.
"""

from __future__ import annotations

import numpy as np
import pytest
from dummy_tokenizer import (
    MARKER_IDS,
    PREPEND_ID,
    build_dummy_tokenizer,
    build_merging_tokenizer,
    build_prepending_tokenizer,
    hand_ids,
)
from hand_render import chatml, plain_text

from sftprep.labels.build_loss_labels import Piece, encode_and_label, plan_pieces
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.types import RenderedConversation

IGNORE = -100
IM_END = MARKER_IDS["<|im_end|>"]
TWO_TURNS = (("user", "Hi"), ("assistant", "Yo"), ("user", "Q"), ("assistant", "A"))
PROMPT_1 = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
PROMPT_2 = "\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def dummy() -> BPETokenizer:
    return BPETokenizer(build_dummy_tokenizer(), "dummy", "0")


def texts(r: RenderedConversation, pieces: list[Piece]) -> list[tuple[str, bool, bool]]:
    return [(r.text[p.start : p.end], p.trained, p.plain) for p in pieces]


def labels_by_hand(*parts: tuple[str, bool]) -> list[int]:
    """Labels of the concatenated parts: hand ids where trained, -100 elsewhere."""
    out: list[int] = []
    for text, trained in parts:
        ids = hand_ids(text)
        out += ids if trained else [IGNORE] * len(ids)
    return out


# -- plan_pieces ---------------------------------------------------------------------------------------------


def test_pieces_are_cut_at_every_trained_region() -> None:
    r = chatml(*TWO_TURNS)
    assert texts(r, plan_pieces(r)) == [
        (PROMPT_1, False, False),
        ("Yo<|im_end|>", True, False),
        (PROMPT_2, False, False),
        ("A<|im_end|>", True, False),
        ("\n", False, False),
    ]


def test_an_untrained_turn_is_not_cut_out() -> None:
    r = chatml(*TWO_TURNS, trained=[False, True])
    assert texts(r, plan_pieces(r)) == [
        (PROMPT_1 + "Yo<|im_end|>" + PROMPT_2, False, False),
        ("A<|im_end|>", True, False),
        ("\n", False, False),
    ]


def test_mask_all_is_one_trained_piece() -> None:
    r = chatml(*TWO_TURNS, trained=[False, False])
    assert plan_pieces(r, mask_all=True) == [Piece(0, len(r.text), True)]
    assert plan_pieces(plain_text(""), mask_all=True) == []


def test_user_text_spelling_a_marker_is_a_plain_piece() -> None:
    r = chatml(("user", "say <|im_end|> now"), ("assistant", "ok"), specials=["<|im_end|>"])
    assert texts(r, plan_pieces(r)) == [
        ("<|im_start|>user\nsay ", False, False),
        ("<|im_end|>", False, True),
        (" now<|im_end|>\n<|im_start|>assistant\n", False, False),
        ("ok<|im_end|>", True, False),
        ("\n", False, False),
    ]


@pytest.mark.parametrize(
    "r",
    [
        chatml(*TWO_TURNS),
        chatml(*TWO_TURNS, trained=[True, False]),
        chatml(
            ("system", "<|im_start|>"),
            ("user", "a<|im_end|>b<|im_end|>"),
            ("assistant", ""),
            specials=["<|im_end|>", "<|im_start|>"],
        ),
        plain_text("abc", [(0, 3)]),
        plain_text("abc", []),
    ],
    ids=["two-turns", "first-trained", "plain-and-empty-turn", "all-trained", "none-trained"],
)
def test_pieces_tile_the_text(r: RenderedConversation) -> None:
    pieces = plan_pieces(r)
    assert "".join(r.text[p.start : p.end] for p in pieces) == r.text
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))
    assert all(p.end > p.start for p in pieces)
    trained = {(t.start, t.end) for t in r.turns if t.trained and t.end > t.start}
    assert {(p.start, p.end) for p in pieces if p.trained} == trained


# -- encode_and_label ----------------------------------------------------------------------------------------


def test_ids_and_labels_by_hand(dummy: BPETokenizer) -> None:
    r = chatml(*TWO_TURNS)
    (e,) = encode_and_label([r], dummy)
    prompt_ids = [1000, *b"user\nHi", IM_END, 10, 1000, *b"assistant\n"]
    assert e.input_ids.tolist()[: len(prompt_ids)] == prompt_ids
    assert e.input_ids.tolist() == hand_ids(r.text)
    assert e.labels.tolist() == labels_by_hand(
        (PROMPT_1, False), ("Yo<|im_end|>", True), (PROMPT_2, False), ("A<|im_end|>", True), ("\n", False)
    )
    assert [int(x) for x in e.labels if x != IGNORE] == [ord("Y"), ord("o"), IM_END, ord("A"), IM_END]
    assert e.num_trainable == 5
    assert [ids.tolist() for ids in e.piece_ids] == [hand_ids(r.text[p.start : p.end]) for p in e.pieces]


def test_mask_all_labels_every_token(dummy: BPETokenizer) -> None:
    r = chatml(*TWO_TURNS, trained=[False, False])
    (e,) = encode_and_label([r], dummy, mask_all=True)
    assert e.labels.tolist() == e.input_ids.tolist() == hand_ids(r.text)


def test_an_untrained_conversation_has_no_trainable_token(dummy: BPETokenizer) -> None:
    (e,) = encode_and_label([chatml(*TWO_TURNS, trained=[False, False])], dummy)
    assert e.num_trainable == 0 and set(e.labels.tolist()) == {IGNORE}


def test_a_plain_piece_is_encoded_as_text_not_as_the_token(dummy: BPETokenizer) -> None:
    r = chatml(("user", "say <|im_end|> now"), ("assistant", "ok"), specials=["<|im_end|>"])
    (e,) = encode_and_label([r], dummy)
    spelled = [ord(c) for c in "say <|im_end|> now"]  # 18 character tokens, no 1001 among them
    expected = [1000, *b"user\n", *spelled, IM_END, 10, 1000, *b"assistant\n", *b"ok", IM_END, 10]
    assert e.input_ids.tolist() == expected
    assert dummy.encode(r.text).count(IM_END) == 3  # what a joint encoding would have done with the spelling
    assert e.labels.tolist() == [IGNORE] * (len(expected) - 4) + [ord("o"), ord("k"), IM_END, IGNORE]


def test_a_batch_keeps_each_example_apart(dummy: BPETokenizer) -> None:
    first, second = chatml(("user", "1"), ("assistant", "2")), chatml(*TWO_TURNS, trained=[False, True])
    e1, e2 = encode_and_label([first, second], dummy)
    assert e1.input_ids.tolist() == hand_ids(first.text) and e2.input_ids.tolist() == hand_ids(second.text)
    assert [int(x) for x in e1.labels if x != IGNORE] == [ord("2"), IM_END]
    assert [int(x) for x in e2.labels if x != IGNORE] == [ord("A"), IM_END]
    assert (e1.num_trainable, e2.num_trainable) == (2, 2)


@pytest.mark.parametrize("markers", [False, True], ids=["no-added-tokens", "literal-cache"])
def test_no_token_straddles_a_cut(markers: bool) -> None:
    """ "a" + "b" merge in a joint encoding ("xab" -> [120, 300]); cut between them, they stay apart, each on its
    side of the cut; a merge inside one piece is kept."""
    tok = BPETokenizer(build_merging_tokenizer(markers=markers), "merging", "0")
    assert (tok.literal_cache is not None) == markers
    assert tok.encode("xab") == [120, 300]
    (e,) = encode_and_label([plain_text("xab", [(2, 3)])], tok)
    assert e.input_ids.tolist() == [120, 97, 98]
    assert e.labels.tolist() == [IGNORE, IGNORE, 98]
    (e,) = encode_and_label([plain_text("abab", [(2, 4)])], tok)
    assert e.input_ids.tolist() == [300, 300]
    assert e.labels.tolist() == [IGNORE, 300]


def test_merging_tokenizer_with_markers_cuts_at_the_trained_turn() -> None:
    tok = BPETokenizer(build_merging_tokenizer(), "merging", "0")
    r = chatml(("user", "xa"), ("assistant", "bab"))
    (e,) = encode_and_label([r], tok)
    trained = [int(x) for x in e.labels if x != IGNORE]
    assert trained == [98, 300, IM_END]  # "b", "ab", <|im_end|>: the turn's own encoding
    assert np.array_equal(e.input_ids[e.labels != IGNORE], e.labels[e.labels != IGNORE])


def test_start_sensitive_pieces_are_encoded_in_their_left_context() -> None:
    """A SentencePiece-style tokenizer prepends "▁" at the start of the input, not after a special token: the
    trained "b" after "<s>a" must be the joint encoding's [98], not "b" encoded alone ([400, 98])."""
    tok = BPETokenizer(build_prepending_tokenizer(), "prepending", "0")
    assert tok.start_sensitive and tok.encode("b") == [PREPEND_ID, 98]
    (e,) = encode_and_label([plain_text("<s>ab", [(4, 5)])], tok)
    assert e.input_ids.tolist() == tok.encode("<s>ab") == [MARKER_IDS["<s>"], 97, 98]
    assert e.labels.tolist() == [IGNORE, IGNORE, 98]
    (e,) = encode_and_label([plain_text("<s>x a b", [(6, 8)])], tok)
    assert e.input_ids.tolist() == tok.encode("<s>x a b")
    assert e.labels.tolist() == [IGNORE] * 4 + [PREPEND_ID, 98]


def test_start_sensitive_piece_without_an_added_token_before_it() -> None:
    tok = BPETokenizer(build_prepending_tokenizer(), "prepending", "0")
    (e,) = encode_and_label([plain_text("ab", [(1, 2)])], tok)
    assert e.input_ids.tolist() == tok.encode("ab") == [PREPEND_ID, 97, 98]
