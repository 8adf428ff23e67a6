"""The manifest: a run's counts with every option, the tokenizer, the template and the input hashes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sftprep import __version__
from sftprep.preparation.stats import Stats
from sftprep.templates.base import ChatTemplate, template_sha256
from sftprep.tokenize.tokenizer import BPETokenizer

if TYPE_CHECKING:
    from sftprep.preparation.options import PrepareOptions


def _template_record(opts: PrepareOptions, tok: BPETokenizer, template: ChatTemplate) -> dict[str, Any]:
    from sftprep.templates.base import RenderOptions

    ropts = RenderOptions(
        bos_token=tok.bos_token or "",
        eos_token=tok.eos_token or "",
        template_vars=opts.template_vars,
        special_tokens_map=tok.special_tokens_map,
    )
    marker = template.end_of_turn(ropts)
    return {
        "name": template.name,
        "sha256": template_sha256(template),
        "end_of_turn": marker,
        "end_of_turn_is_token": marker is None or tok.token_to_id(marker) is not None,
        # no marker in the template: the tokenizer's eos is appended to each trained turn
        "eos_appended": marker is None and opts.train_on_eos and bool(tok.eos_token),
        "text": template.source_text,
    }


def build_manifest(
    opts: PrepareOptions,
    tok: BPETokenizer,
    template: ChatTemplate,
    stats: Stats,
    shards: list[str],
    cache_key: str = "",
) -> dict[str, Any]:
    unreconciled = [name for name, f in stats.files.items() if not f.reconciled]
    if unreconciled:  # a bug, never bad input: fail loudly
        raise AssertionError(f"records do not reconcile for {unreconciled}: {stats.files}")
    return {
        "sftprep_version": __version__,
        "cache_key": cache_key,
        "records_read": stats.records_read,
        "examples_written": stats.examples,
        "records_rejected": stats.records_rejected,
        "rejected_by_reason": dict(sorted(stats.rejected_by_reason.items())),
        "examples_dropped_by_reason": dict(sorted(stats.dropped_examples.items())),
        "tokens": stats.tokens,
        "trainable_tokens": stats.trainable_tokens,
        "truncated": stats.truncated,
        "straddling_tokens": stats.boundary_merges,
        "split_for_tokenization": stats.split_for_tokenization,
        "split_conversations": stats.split_conversations,
        "special_tokens_in_content": stats.special_tokens_in_content,
        "generation_tag_disagreements": stats.generation_tag_disagreements,
        "reasoning_not_rendered": stats.reasoning_not_rendered,
        "turns": dict(sorted(stats.turns.items())),
        "turns_rejected_by_reason": dict(sorted(stats.turns_rejected_by_reason.items())),
        "per_file": {name: {**f.__dict__, "reconciled": f.reconciled} for name, f in sorted(stats.files.items())},
        "shards": shards,
        "tokenizer": {
            "path": tok.path,
            "loader": tok.loader,
            "tiktoken_for_ascii": tok.fast is not None,  # exact stand-in for HF on ASCII text (fast_bpe.py)
            "sha256": tok.sha256,
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
            "pad_token": tok.pad_token,
            "pad_id": tok.pad_id,
            "vocab_size": tok.vocab_size,
        },
        "template": _template_record(opts, tok, template),
        "options": opts.recorded(),
    }
