"""A pretrained model and the data's tokenizer must belong together; tokens added to the model's
tokenizer (`sftprep tokenizer add-tokens`) get embedding rows initialised from the mean of the others.

Belonging together: when the model directory holds the tokenizer it was saved with, every one of its
tokens must have the same id in the data's tokenizer, and the data's extra tokens must be added
(special) tokens. Without a saved tokenizer, the model's bos/eos ids must be special tokens of the
data's tokenizer and ids past the embedding rows must be added tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sftprep.errors import ConfigError
from sftprep.train.bundle import DataBundle

_SHOWN = 3


@dataclass
class VocabPlan:
    rows: int  # the model's embedding rows
    vocab: int  # the data tokenizer's size
    known_ids: list[int]  # ids the model was trained on (their mean initialises new rows)
    new_tokens: dict[str, int] = field(default_factory=dict)  # added tokens: their rows are (re)initialised


def _saved_tokenizer(model_dir: Path) -> Any | None:
    from sftprep.tokenize.tokenizer import BPETokenizer

    if not (model_dir / "tokenizer.json").is_file():
        return None
    try:
        return BPETokenizer.load(model_dir)
    except ConfigError:
        return None


def _names(bundle: DataBundle, data_dir: str) -> str:
    tok = bundle.tokenizer
    return f"the data in {data_dir} was prepared with the tokenizer {tok.path} ({bundle.vocab_size:,} tokens)"


def _mismatch(model_dir: Path, why: str, bundle: DataBundle, data_dir: str, saved: bool) -> ConfigError:
    fix = (
        f"prepare the data with the model's tokenizer: sftprep prepare INPUTS -o DIR --tokenizer {model_dir}"
        if saved
        else "prepare the data with the tokenizer this model was trained with (--tokenizer), or give the model "
        "that matches the data"
    )
    return ConfigError(
        f"--model {model_dir} does not belong with the data's tokenizer: {why}; {_names(bundle, data_dir)}. {fix}"
    )


def plan_vocab(model_dir: Path, model: nn.Module, bundle: DataBundle, data_dir: str) -> VocabPlan:
    """Check that `model` and the data's tokenizer belong together; which rows are new (see module doc)."""
    data_tok = bundle.tokenizer.tokenizer
    data_vocab: dict[str, int] = data_tok.get_vocab(with_added_tokens=True)
    added = {i: t.content for i, t in data_tok.get_added_tokens_decoder().items()}
    rows = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[operator]
    vocab = max(bundle.vocab_size, max(data_vocab.values(), default=-1) + 1)
    saved = _saved_tokenizer(model_dir)
    if saved is not None:
        model_vocab: dict[str, int] = saved.tokenizer.get_vocab(with_added_tokens=True)
        moved = [(t, i, data_vocab.get(t)) for t, i in model_vocab.items() if data_vocab.get(t) != i]
        if moved:
            shown = "; ".join(f"{t!r} is {i} in the model's, {j if j is not None else 'absent'} in the data's"
                              for t, i, j in sorted(moved, key=lambda m: m[1])[:_SHOWN])  # fmt: skip
            why = (
                f"it was saved with the tokenizer {model_dir}/tokenizer.json ({len(model_vocab):,} tokens) and "
                f"{len(moved):,} of its tokens have another id or none in the data's ({shown})"
            )
            raise _mismatch(model_dir, why, bundle, data_dir, True)
        extra = {t: i for t, i in data_vocab.items() if t not in model_vocab}
        ordinary = sorted(t for t, i in extra.items() if i not in added)
        if ordinary:
            why = (
                f"the data's tokenizer has {len(ordinary):,} ordinary tokens the model's tokenizer lacks "
                f"(e.g. {', '.join(map(repr, ordinary[:_SHOWN]))}); only added special tokens can be new"
            )
            raise _mismatch(model_dir, why, bundle, data_dir, True)
        return VocabPlan(rows, vocab, sorted(i for i in model_vocab.values() if i < rows), extra)
    _check_special_ids(model_dir, model, data_vocab, added, bundle, data_dir)
    beyond = {t: i for t, i in data_vocab.items() if i >= rows}
    ordinary = sorted(t for t, i in beyond.items() if i not in added)
    if ordinary:
        why = (
            f"it has {rows:,} embedding rows and the data's tokenizer has {len(ordinary):,} ordinary tokens past "
            f"them (e.g. {', '.join(map(repr, ordinary[:_SHOWN]))})"
        )
        raise _mismatch(model_dir, why, bundle, data_dir, False)
    return VocabPlan(rows, vocab, list(range(min(rows, vocab))), beyond)


def _check_special_ids(
    model_dir: Path, model: nn.Module, data_vocab: dict[str, int], added: dict[int, str], bundle: DataBundle, data: str
) -> None:
    by_id = {i: t for t, i in data_vocab.items()}
    config = model.config
    for key in ("bos_token_id", "eos_token_id"):
        value = getattr(config, key, None)
        for tid in value if isinstance(value, list | tuple) else [value]:
            if tid is None or tid in added:
                continue
            where = f"{by_id[tid]!r}, an ordinary token" if tid in by_id else "not a token"
            why = f"its config.json has {key} {tid}, which is {where} in the data's tokenizer"
            raise _mismatch(model_dir, why, bundle, data, False)


@torch.no_grad()
def apply_vocab(model: nn.Module, plan: VocabPlan) -> dict[str, Any] | None:
    """Resize the embeddings (and an untied head) to the data's vocabulary; new tokens' rows = the mean
    of the known rows. Returns what was done (recorded in sftprep_model.json), None when nothing."""
    if not plan.new_tokens and plan.vocab <= plan.rows:
        return None
    known = torch.tensor(plan.known_ids, dtype=torch.long)
    emb = model.get_input_embeddings()  # type: ignore[operator]
    head = model.get_output_embeddings()  # type: ignore[operator]
    tied = head is not None and head.weight.data_ptr() == emb.weight.data_ptr()
    means = [emb.weight[known].float().mean(0)]
    if head is not None and not tied:
        means.append(head.weight[known].float().mean(0))
    if plan.vocab > plan.rows:
        model.resize_token_embeddings(plan.vocab, mean_resizing=False)  # type: ignore[operator]
    targets = [model.get_input_embeddings().weight]  # type: ignore[operator]
    if head is not None and not tied:
        targets.append(model.get_output_embeddings().weight)  # type: ignore[operator]
    new = torch.tensor(sorted(plan.new_tokens.values()), dtype=torch.long)
    for weight, mean in zip(targets, means):
        if len(new):
            weight[new] = mean.to(weight.dtype)
    bias = getattr(model.get_output_embeddings(), "bias", None)  # type: ignore[operator]
    if bias is not None and len(new):
        bias[new] = bias[known].float().mean().to(bias.dtype)
    return {
        "rows_before": plan.rows,
        "rows_after": int(model.get_input_embeddings().weight.shape[0]),  # type: ignore[operator]
        "new_tokens": dict(sorted(plan.new_tokens.items(), key=lambda kv: kv[1])),
        "init": "mean of the known rows" + ("" if tied or head is None else " (embedding and LM head)"),
    }
