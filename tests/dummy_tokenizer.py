"""A hand-checkable tokenizer for tests (in the spirit of torchtune's DummyTokenizer).

Every ordinary character is one token whose id is its code point (``ord(c)``, for c < 256), and each
template marker in ``MARKER_IDS`` is one special added token with a small fixed id (1000, 1001, ...).
So the ids of any rendered text can be worked out by hand: "Hi<|im_end|>" -> [72, 105, 1001].

It is a real ``tokenizers.Tokenizer`` (WordLevel over single characters, a pre-tokenizer that splits
every character, a Fuse decoder), written as tokenizer.json + tokenizer_config.json so sftprep's
BPETokenizer loads it like any HF tokenizer directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

# Ordinary characters: code points 0..255, id == ord(c).
CHAR_RANGE = range(256)
UNK = "<unk>"
UNK_ID = 999

# Template markers: special added tokens with fixed ids. Append only (ids are part of the contract).
MARKERS: tuple[str, ...] = (
    "<|im_start|>",  # 1000
    "<|im_end|>",  # 1001
    "<s>",  # 1002
    "</s>",  # 1003
    "[INST]",  # 1004
    "[/INST]",  # 1005
    "<|eot_id|>",  # 1006
    "<|start_header_id|>",  # 1007
    "<|end_header_id|>",  # 1008
    "<|begin_of_text|>",  # 1009
    "<start_of_turn>",  # 1010
    "<end_of_turn>",  # 1011
    "<bos>",  # 1012
    "<eos>",  # 1013
    "<|user|>",  # 1014
    "<|assistant|>",  # 1015
    "<|system|>",  # 1016
    "<|end|>",  # 1017
    "<|endoftext|>",  # 1018
    "<|USER|>",  # 1019
    "<|ASSISTANT|>",  # 1020
    "<|SYSTEM|>",  # 1021
    "<pad>",  # 1022
    "<think>",  # 1023
    "</think>",  # 1024
    "<tool_call>",  # 1025
    "</tool_call>",  # 1026
    "<|observation|>",  # 1027
    "<|tool_response>",  # 1028
    "<tool_response>",  # 1029  (Qwen3, GLM-4: tests/data/templates)
    "</tool_response>",  # 1030
    "[gMASK]",  # 1031  (GLM-4)
    "<sop>",  # 1032
    "<arg_key>",  # 1033
    "</arg_key>",  # 1034
    "<arg_value>",  # 1035
    "</arg_value>",  # 1036
)
MARKER_IDS: dict[str, int] = {m: 1000 + i for i, m in enumerate(MARKERS)}
ID_TO_MARKER: dict[int, str] = {i: m for m, i in MARKER_IDS.items()}


def build_dummy_tokenizer() -> Tokenizer:
    vocab = {chr(i): i for i in CHAR_RANGE}
    vocab[UNK] = UNK_ID
    vocab.update(MARKER_IDS)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in MARKERS])
    return tok


def write_dummy_tokenizer(
    out_dir: str | Path,
    bos: str | None = "<s>",
    eos: str | None = "</s>",
    pad: str | None = "<pad>",
    chat_template: str | None = None,
) -> Path:
    """Write tokenizer.json + tokenizer_config.json into `out_dir` (created); return the directory."""
    for role, token in (("bos", bos), ("eos", eos), ("pad", pad)):
        if token is not None and token not in MARKER_IDS:
            raise ValueError(f"{role} token {token!r} is not a dummy marker: {sorted(MARKER_IDS)}")
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    build_dummy_tokenizer().save(str(d / "tokenizer.json"))
    cfg: dict[str, object] = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos}
    cfg["pad_token"] = pad
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return d


def hand_ids(text: str, markers: Sequence[str] = MARKERS) -> list[int]:
    """The ids by the dummy rule, without the tokenizers library: a marker (longest first) or ord(c)."""
    ordered = sorted(markers, key=len, reverse=True)
    ids: list[int] = []
    i = 0
    while i < len(text):
        m = next((m for m in ordered if text.startswith(m, i)), None)
        if m is not None:
            ids.append(MARKER_IDS[m])
            i += len(m)
        else:
            ids.append(ord(text[i]))
            i += 1
    return ids


def hand_decode(ids: Sequence[int]) -> str:
    """Inverse of `hand_ids`: a marker id to its string, anything else to chr(id)."""
    return "".join(ID_TO_MARKER.get(i, chr(i)) for i in ids)


def hand_trained_runs(labels: Sequence[int]) -> list[str]:
    """The decoded text of every maximal run of trained labels (not -100), in order."""
    runs: list[list[int]] = []
    prev = -100
    for lab in labels:
        if lab != -100:
            if prev == -100:
                runs.append([])
            runs[-1].append(lab)
        prev = lab
    return [hand_decode(r) for r in runs]


def hand_labels(text: str, trained: Sequence[str]) -> list[int]:
    """hand_ids(text), with -100 outside the trained substrings (found in order, left to right)."""
    labels: list[int] = []
    pos = 0
    for part in trained:
        at = text.index(part, pos)
        labels += [-100] * len(hand_ids(text[pos:at])) + hand_ids(part)
        pos = at + len(part)
    return labels + [-100] * len(hand_ids(text[pos:]))


def build_merging_tokenizer(merges: Sequence[tuple[str, str]] = (("a", "b"),), markers: bool = True) -> Tokenizer:
    """The dummy rule plus BPE merges over the whole text (no pre-tokenizer): merged token k has id 300 + k.
    With ("a", "b"), "xab" -> [120, 300]: a joint encoding merges across any cut between "a" and "b", so the
    tests of piecewise encoding can see a token that would straddle a boundary."""
    vocab = {chr(i): i for i in CHAR_RANGE}
    for k, (a, b) in enumerate(merges):
        vocab[a + b] = 300 + k
    if markers:
        vocab.update(MARKER_IDS)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    tok.decoder = decoders.Fuse()
    if markers:
        tok.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in MARKERS])
    return tok


PREPEND = "▁"
PREPEND_ID = 400


def build_prepending_tokenizer() -> Tokenizer:
    """SentencePiece-style: one token per character (id = ord(c)), spaces as "▁" (id 400), and a "▁" prepended
    at the start of the input only, not after a special token: "b" -> [400, 98] but "<s>b" -> [1002, 98]."""
    vocab = {chr(i): i for i in CHAR_RANGE}
    vocab[PREPEND] = PREPEND_ID
    vocab.update(MARKER_IDS)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=PREPEND, prepend_scheme="first")
    tok.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in MARKERS])
    return tok
