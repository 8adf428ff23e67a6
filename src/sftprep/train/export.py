"""Save the trained model for inference, with the tokenizer and template the data was prepared with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from sftprep.errors import ConfigError
from sftprep.train.bundle import DataBundle, save_bundle
from sftprep.train.model import final_model, no_progress_bars


def export_model(model: nn.Module, bundle: DataBundle, out_dir: Path, summary: dict[str, Any]) -> None:
    """OUT_DIR: HF model files (LoRA merged; the adapter alone in OUT_DIR/adapter), tokenizer files,
    sftprep_model.json (template, options, training summary)."""
    from sftprep.train.generate import PromptRenderer

    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(str(out_dir / "adapter"))  # type: ignore[operator]
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
    with no_progress_bars():
        merged.save_pretrained(str(out_dir))  # type: ignore[operator]
    save_bundle(bundle, out_dir, {"training": summary, "stop_text": stop_text, "stop_ids": stop_ids})
