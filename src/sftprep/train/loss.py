"""The masked SFT loss, projecting to the vocabulary only where a target is trained.

The base model gives hidden states [B, S, H]; the positions whose (shifted) target is trained are
gathered to [N, H] and only those go through the LM head, so [B, S, V] logits never exist.
The loss is a *sum* over trained tokens: the loop divides by the trainable-token count of the whole
optimizer step (all micro-batches, all processes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sftprep.train.data import Batch
from sftprep.train.fused_ce import linear_cross_entropy_sum
from sftprep.types import IGNORE_INDEX


def block_causal_mask(seq_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B, 1, S, S]: query i may attend key j iff both are in the same example and j <= i.

    Boolean (True = attend) when `dtype` is None, else additive (0 / dtype's minimum).
    """
    s = seq_ids.shape[-1]
    causal = torch.ones(s, s, dtype=torch.bool, device=seq_ids.device).tril()
    allowed = (seq_ids[:, :, None] == seq_ids[:, None, :]) & causal
    allowed = allowed[:, None]
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=seq_ids.device).masked_fill(~allowed, torch.finfo(dtype).min)


def logits_postprocess(config: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """What a model's own forward does to the head's output (softcapping, logit scaling)."""
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)  # Cohere multiplies
    divide = getattr(config, "logits_scaling", None)  # Granite divides

    def post(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            logits = logits * scale
        if divide is not None:
            logits = logits / divide
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return post


def model_inputs(model: nn.Module, t: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """Keyword arguments for the base model: 2D padding mask, or packed rows without cross-attention."""
    seq_ids, positions = t.get("seq_ids"), t.get("position_ids")
    if seq_ids is None:
        return {"input_ids": t["input_ids"], "attention_mask": t.get("attention_mask"), "position_ids": positions}
    assert positions is not None and t["input_ids"] is not None
    impl = str(getattr(model.config, "_attn_implementation", "sdpa") or "sdpa")
    if impl.startswith("flash_attention"):
        # varlen flash attention: one flattened row, sequence starts found from position_ids == 0
        flat = t["input_ids"].reshape(1, -1)
        return {"input_ids": flat, "attention_mask": None, "position_ids": positions.reshape(1, -1)}
    mask = block_causal_mask(seq_ids, torch.float32 if impl == "eager" else None)
    return {"input_ids": t["input_ids"], "attention_mask": mask, "position_ids": positions}


class SFTLoss(nn.Module):
    """Wraps a causal LM; forward(**batch.tensors()) -> summed cross-entropy over trained targets (fp32).

    Data-parallel wrappers wrap this module (its forward is the one that runs the model).
    """

    def __init__(self, model: nn.Module, fused: bool = True) -> None:
        super().__init__()
        self.model = model
        self.fused = fused  # chunked head + cross-entropy (fused_ce.py) where the head is a plain Linear
        self._post = logits_postprocess(model.config)
        config = model.config
        self._plain_logits = not any(
            getattr(config, k, None) is not None for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
        )

    def decoder(self) -> nn.Module:
        return self.model.get_decoder()  # type: ignore[operator]

    def head(self) -> nn.Module:
        return self.model.get_output_embeddings()  # type: ignore[operator]

    def hidden_states(self, t: dict[str, torch.Tensor | None]) -> torch.Tensor:
        ids = t["input_ids"]
        assert ids is not None
        out = self.decoder()(**model_inputs(self.model, t), use_cache=False)
        return out.last_hidden_state.reshape(ids.shape[0], ids.shape[1], -1)

    def trained_logits(self, t: dict[str, torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits [N, V] of trained positions only, their targets [N], the boolean selection [B, S])."""
        targets = t["targets"]
        assert targets is not None
        hidden = self.hidden_states(t)
        selected = targets != IGNORE_INDEX
        logits = self._post(self.head()(hidden[selected]))
        return logits, targets[selected], selected

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        seq_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t = {
            "input_ids": input_ids,
            "targets": targets,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "seq_ids": seq_ids,
        }
        head = self.head()
        if self.fused and type(head) is nn.Linear and self._plain_logits:
            assert targets is not None
            hidden = self.hidden_states(t)
            selected = targets != IGNORE_INDEX
            return linear_cross_entropy_sum(hidden[selected], head.weight, head.bias, targets[selected])
        logits, selected_targets, _ = self.trained_logits(t)
        return F.cross_entropy(logits.float(), selected_targets, reduction="sum")

    @torch.no_grad()
    def token_losses(self, batch: Batch) -> torch.Tensor:
        """[B, S] cross-entropy of every trained target (0 elsewhere), for inspection and tests."""
        logits, targets, selected = self.trained_logits(batch.tensors())
        out = torch.zeros(batch.targets.shape, dtype=torch.float32, device=batch.targets.device)
        out[selected] = F.cross_entropy(logits.float(), targets, reduction="none")
        return out


def full_logits_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The reference computation: every position through the LM head ([B, S, V] logits), then mask."""
    logits = model(**model_inputs(model, batch.tensors()), use_cache=False).logits
    logits = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(logits, batch.targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
