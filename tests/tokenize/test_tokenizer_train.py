"""Byte-level BPE training and the saved tokenizer directory (tokenizers, transformers, BPETokenizer)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, pre_tokenizers

from sftprep.errors import ConfigError
from sftprep.tokenize.tokenizer import BPETokenizer
from sftprep.tokenize.train_bpe import save_tokenizer_dir, train_bpe

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
SAMPLES = [
    "",
    "Hello world",
    "   \n\n\t\t  \r\n \u3000\xa0 ",
    "héllo wörld, ça va? Straße",
    "日本語のテキストと中文和한국어",
    "emoji 😀🎉👩‍👩‍👧 flags 🇫🇷 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "combining e\u0301 zero\u200bwidth \ufeffbom \x00\x7f",
    "def f(x):\n    return x ** 2  # trailing   \n\n\n",
    "<|im_start|>user\nWhat's 2024 + 1?<|im_end|>\n<|im_start|>assistant\n2025<|im_end|>",
    "Ἀρχιμήδης ∑ ∫ ≠ ℝ — «quotes» “curly” ‘single’",
]


def corpus(n: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "data", "model", "user"]
    words += ["assistant", "日本語", "中文", "한국어", "😀", "Straße", "ça", "1234", "don't", "I'll", "x = f(y)\n"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 25))) for _ in range(n)]


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    return train_bpe(corpus(), vocab_size=360, special_tokens=SPECIALS)


def test_specials_first_in_order_and_special(trained: Tokenizer) -> None:
    assert [trained.token_to_id(t) for t in SPECIALS] == [0, 1, 2]
    added = trained.get_added_tokens_decoder()
    assert sorted(added) == [0, 1, 2]
    assert all(added[i].special and added[i].content == SPECIALS[i] for i in range(3))


def test_vocab_has_all_bytes_and_merges(trained: Tokenizer) -> None:
    vocab = trained.get_vocab()
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(vocab)
    assert trained.get_vocab_size() == 360
    assert "Ġquick" in vocab and "Ġthe" in vocab
    assert trained.encode(" quick the").ids == [vocab["Ġquick"], vocab["Ġthe"]]


def test_specials_never_split(trained: Tokenizer) -> None:
    enc = trained.encode("x<|im_start|>user<|im_end|><|endoftext|>y")
    assert [i for i in enc.ids if i < 3] == [1, 2, 0]
    assert enc.ids[1] == 1 and enc.ids[-3:-1] == [2, 0]
    assert enc.tokens[0] == "x" and enc.tokens[-1] == "y"


def test_digits_split_one_at_a_time(trained: Tokenizer) -> None:
    assert trained.encode("1234").tokens == ["1", "2", "3", "4"]


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(trained: Tokenizer, text: str) -> None:
    enc = trained.encode(text, add_special_tokens=False)
    assert trained.decode(enc.ids, skip_special_tokens=False) == text


def test_unseen_characters_use_byte_tokens(trained: Tokenizer) -> None:
    text = "ꙮ 𓀀"  # never in the corpus: encoded as their UTF-8 bytes
    ids = trained.encode(text).ids
    assert len(ids) == len(text.encode("utf-8")) and trained.decode(ids) == text


def test_deterministic(tmp_path: Path) -> None:
    a = train_bpe(corpus(), vocab_size=500, special_tokens=SPECIALS, min_frequency=1)
    b = train_bpe(iter(corpus()), vocab_size=500, special_tokens=SPECIALS, min_frequency=1)
    assert a.to_str() == b.to_str()
    kw = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": None, "template_name": "chatml"}
    da = save_tokenizer_dir(a, tmp_path / "a", **kw)
    db = save_tokenizer_dir(b, tmp_path / "b", **kw)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (da / name).read_bytes() == (db / name).read_bytes()


def test_min_frequency_limits_vocab() -> None:
    tok = train_bpe(["abc", "abc", "abd"], vocab_size=1000, special_tokens=[], min_frequency=2)
    vocab = tok.get_vocab()
    assert "ab" in vocab and "abc" in vocab and "abd" not in vocab
    assert tok.get_vocab_size() == 256 + 2


@pytest.mark.parametrize(
    ("vocab_size", "specials", "min_frequency", "match"),
    [
        (100, [], 2, "below 256"),
        (400, ["<a>", "<a>"], 2, "repeat"),
        (400, [""], 2, "empty"),
        (400, [], 0, "at least 1"),
    ],
)
def test_bad_options(vocab_size: int, specials: list[str], min_frequency: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        train_bpe(["a b"], vocab_size, specials, min_frequency)


# -- saved directory ---------------------------------------------------------------------------------
@pytest.fixture()
def saved(trained: Tokenizer, tmp_path: Path) -> Path:
    return save_tokenizer_dir(
        trained,
        tmp_path / "tok",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        template_name="chatml",
        chat_template=TEMPLATE,
    )


def test_saved_files(saved: Path, trained: Tokenizer) -> None:
    assert Tokenizer.from_file(str(saved / "tokenizer.json")).to_str() == trained.to_str()
    cfg = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (cfg["bos_token"], cfg["eos_token"], cfg["pad_token"]) == tuple(SPECIALS[i] for i in (1, 2, 0))
    assert cfg["chat_template"] == TEMPLATE and cfg["sftprep_template"] == "chatml"
    assert isinstance(cfg["model_max_length"], int)
    assert cfg["added_tokens_decoder"]["2"]["content"] == "<|im_end|>"


def test_optional_keys_left_out(trained: Tokenizer, tmp_path: Path) -> None:
    d = save_tokenizer_dir(trained, tmp_path / "t", bos_token=None, eos_token=None, pad_token=None, template_name=None)
    cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "chat_template" not in cfg and "sftprep_template" not in cfg
    assert cfg["eos_token"] is None


def test_unknown_role_token_rejected(trained: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eos token"):
        save_tokenizer_dir(
            trained, tmp_path / "t", bos_token=None, eos_token="</s>", pad_token=None, template_name=None
        )
    assert not (tmp_path / "t").exists()


def test_bpe_tokenizer_load(saved: Path, trained: Tokenizer) -> None:
    bt = BPETokenizer.load(saved)
    assert (bt.bos_token, bt.eos_token, bt.pad_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert bt.default_template == "chatml" and bt.chat_template == TEMPLATE
    assert bt.pad_id == 0 and bt.special_ids == frozenset({0, 1, 2})
    assert bt.encode(SAMPLES[8]) == trained.encode(SAMPLES[8], add_special_tokens=False).ids


def test_transformers_loads_and_matches(saved: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(saved)
    raw = Tokenizer.from_file(str(saved / "tokenizer.json"))
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (1, 2, 0)
    assert hf.chat_template == TEMPLATE
    for text in SAMPLES:
        want = raw.encode(text, add_special_tokens=False).ids
        assert hf(text, add_special_tokens=False)["input_ids"] == want
        assert hf(text)["input_ids"] == want  # no post-processor template: nothing is added
        assert hf.decode(want) == text
    rendered = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n"
