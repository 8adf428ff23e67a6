"""templates/turns.py: where an assistant turn's generated text ends, from renders: the special token at its
end, the next header's token, whitespace the model never generates, a trailer written only at the very end."""

from __future__ import annotations

import pytest

from sftprep.templates.turns import (
    Specials,
    Stop,
    common_prefix_len,
    ends_with_marker,
    next_header,
    whitespace_aligned,
    without_trailer,
)

SPECIALS = Specials.of(["<|im_end|>", "<|user|>", "<|observation|>", "<|end|>", "<|im_start|>"], eos="</s>")


def test_of_orders_longest_first_without_duplicates_or_blanks() -> None:
    s = Specials.of(["<a>", "<|long|>", "", "<a>"], eos="</s>", opener="<a>")
    assert s.tokens == ("<|long|>", "</s>", "<a>")
    assert s.opener == "<a>" and s.looking


def test_common_prefix_len() -> None:
    assert common_prefix_len("abcdef", "abcxyz") == 3
    assert common_prefix_len("abc", "abc") == 3
    assert common_prefix_len("abc", "abcd") == 3
    assert common_prefix_len("", "abc") == 0
    assert common_prefix_len("x" * 1000 + "a", "x" * 1000 + "b") == 1000


# -- Specials ------------------------------------------------------------------------------------------------


def test_at_end_finds_the_longest_known_token() -> None:
    s = Specials.of(["end|>", "<|end|>"])
    assert s.at_end("Yo<|end|>") == ("<|end|>", True)
    assert s.at_end("Yo end|>") == ("end|>", True)


def test_at_end_reports_special_looking_text_the_tokenizer_lacks() -> None:
    assert SPECIALS.at_end("Yo<|eot|>") == ("<|eot|>", False)
    assert Specials(SPECIALS.tokens, looking=False).at_end("Yo<|eot|>") is None


def test_at_end_is_none_when_the_text_ends_otherwise() -> None:
    assert SPECIALS.at_end("Yo<|im_end|>\n") is None
    assert SPECIALS.at_end("plain text") is None


def test_leading_takes_the_whitespace_and_the_token() -> None:
    assert SPECIALS.leading("\n <|user|>\nQ") == ("\n <|user|>", True)
    assert SPECIALS.leading("<|tool|>x") == ("<|tool|>", False)
    assert Specials(SPECIALS.tokens, looking=False).leading("<|tool|>x") is None
    assert SPECIALS.leading("Q<|user|>") is None


def test_only_specials() -> None:
    assert SPECIALS.only_specials("<|end|>\n</s>")
    assert SPECIALS.only_specials(" </s> ")
    assert not SPECIALS.only_specials("")
    assert not SPECIALS.only_specials("  \n")
    assert not SPECIALS.only_specials("<|end|> x")


# -- without_trailer -----------------------------------------------------------------------------------------

PROMPT = "<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_an_eos_written_only_after_the_last_message_is_not_part_of_the_turn() -> None:
    """TRL's phi3: `own` (the conversation through this turn) ends with eos, a render going on has a header."""
    own = PROMPT + "Yo<|end|>\n</s>"
    later = PROMPT + "Yo<|end|>\n<|user|>\nQ<|end|>\n</s>"
    assert without_trailer(PROMPT, own, later, SPECIALS) == "Yo<|end|>\n"


def test_a_trailer_token_cut_in_two_by_the_common_prefix() -> None:
    """The common prefix ends inside "</s>" ("<" is also where "<|user|>" starts): back to the token's start."""
    own = PROMPT + "Yo\n</s>"
    later = PROMPT + "Yo\n<|user|>\nQ"
    assert common_prefix_len(own, later) == len(PROMPT + "Yo\n<")
    assert without_trailer(PROMPT, own, later, SPECIALS) == "Yo\n"


def test_without_a_later_render_or_a_difference_the_turn_is_all_of_it() -> None:
    own = PROMPT + "Yo<|end|>\n"
    assert without_trailer(PROMPT, own, None, SPECIALS) == "Yo<|end|>\n"
    assert without_trailer(PROMPT, own, own + "<|user|>\nQ", SPECIALS) == "Yo<|end|>\n"


def test_a_text_trailer_is_kept() -> None:
    own = PROMPT + "Yo<|end|>\nThe end."
    later = PROMPT + "Yo<|end|>\n<|user|>\nQ"
    assert without_trailer(PROMPT, own, later, SPECIALS) == "Yo<|end|>\nThe end."


# -- ends_with_marker / next_header --------------------------------------------------------------------------


def test_ends_with_marker_drops_whitespace_after_it() -> None:
    assert ends_with_marker("Yo<|im_end|>\n", SPECIALS) == Stop("Yo<|im_end|>", "<|im_end|>")


def test_ends_with_marker_ignores_the_next_messages_opener() -> None:
    specials = Specials.of(["<|im_end|>", "<|im_start|>"], opener="<|im_start|>")
    assert ends_with_marker("Yo<|im_end|>\n<|im_start|>", specials) == Stop("Yo<|im_end|>", "<|im_end|>")
    assert ends_with_marker("Yo\n<|im_start|>", specials) is None


def test_ends_with_marker_unknown_or_absent() -> None:
    assert ends_with_marker("Yo<|eot|>", SPECIALS) == Stop("Yo<|eot|>", "<|eot|>", known=False)
    assert ends_with_marker("Yo\n", SPECIALS) is None


def test_next_header_is_the_stop_when_no_marker_ends_the_turn() -> None:
    """GLM-4: a reply is ended by the next <|user|>, a tool call by <|observation|>."""
    assert next_header("\nYo", "<|user|>\nQ", SPECIALS) == Stop(
        "\nYo<|user|>", "<|user|>", added="<|user|>", how="next_header"
    )
    assert next_header("<tool_call>f", "\n<|observation|>\nr", SPECIALS) == Stop(
        "<tool_call>f\n<|observation|>", "<|observation|>", added="\n<|observation|>", how="next_header"
    )


def test_next_header_without_a_leading_special_is_none() -> None:
    assert next_header("Yo", "User: Q", SPECIALS) is None
    assert next_header("Yo", "", SPECIALS) is None


# -- whitespace_aligned --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "own", "expected"),
    [
        ("<|assistant|>\n", "<|assistant|>\nYo", len("<|assistant|>\n")),
        ("<|assistant|>\n", "<|assistant|>  \n Yo", len("<|assistant|>  \n ")),  # the prompt ends in whitespace
        ("A:", "A: Yo", len("A:")),  # it does not: the space is the model's
        ("  <|assistant|>", "<|assistant|>Yo", len("<|assistant|>")),
        ("<|assistant|>\n", "<|user|>\nYo", None),
        ("<|assistant|>\nxy", "<|assistant|>\nx", None),
    ],
)
def test_whitespace_aligned(prompt: str, own: str, expected: int | None) -> None:
    assert whitespace_aligned(prompt, own) == expected
