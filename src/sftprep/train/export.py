"""Save the trained model for inference, with the tokenizer and template the data was prepared with."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sftprep.errors import ConfigError
from sftprep.train.bundle import DataBundle, save_bundle
from sftprep.train.model import build_model, final_model, no_progress_bars

if TYPE_CHECKING:
    from sftprep.train.session import Run


def export_model(model: nn.Module, bundle: DataBundle, out_dir: Path, summary: dict[str, Any]) -> None:
    """OUT_DIR: HF model files (LoRA merged; the adapter alone in OUT_DIR/adapter), tokenizer files,
    sftprep_model.json (template, options, training summary)."""
    from sftprep.train.generate import PromptRenderer

    if hasattr(model, "merge_and_unload"):  # the adapter (with the embeddings when new tokens resized them)
        resized = bool(summary.get("embeddings"))
        model.save_pretrained(str(out_dir / "adapter"), save_embedding_layers=resized)  # type: ignore[operator]
    merged = final_model(model)
    renderer = PromptRenderer(bundle)
    try:
        stop = renderer.render([{"role": "user", "content": "hi"}])
        stop_text, stop_ids = stop.stop_text, sorted(stop.stop_ids)
    except ConfigError:  # a template that cannot render a lone user turn: stop at eos
        stop_text, stop_ids = bundle.tokenizer_record.get("eos_token") or "", sorted(renderer.stop_ids(""))
    gen = getattr(merged, "generation_config", None)
    if gen is not None and stop_ids:
        gen.eos_token_id = stop_ids
        gen.pad_token_id = bundle.pad_id
    if getattr(merged.config, "use_cache", None) is False:  # turned off for gradient checkpointing
        merged.config.use_cache = True
    with no_progress_bars():
        merged.save_pretrained(str(out_dir))  # type: ignore[operator]
    save_bundle(bundle, out_dir, {"training": summary, "stop_text": stop_text, "stop_ids": stop_ids})


def export_sharded(run: Run, summary: dict[str, Any]) -> None:
    """FSDP: every process gives its shards, rank 0 loads the full state into an unsharded copy of the
    model (built as the run built it, on CPU) and saves that like an unsharded run."""
    from sftprep.train.parallel import full_model_state

    state = full_model_state(run.loss_module)
    if not run.env.is_main:
        return
    cfg = run.cfg
    with _seeded_cpu_default():
        copy, _ = build_model(_unsharded(cfg), run.bundle)
    missing, unexpected = copy.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"FSDP export: state does not fit the model (missing {missing}, unexpected {unexpected})")
    export_model(copy, run.bundle, Path(cfg.out_dir), summary)


def _unsharded(cfg: Any) -> Any:
    from dataclasses import replace

    return replace(cfg, gradient_checkpointing=False, sharding="none")


class _seeded_cpu_default:
    """Build the export copy without disturbing torch's RNG (it would change nothing saved, but keep runs pure)."""

    def __enter__(self) -> None:
        self.state = torch.random.get_rng_state()

    def __exit__(self, *exc: object) -> None:
        torch.random.set_rng_state(self.state)
