"""LM head + cross-entropy in chunks of trained positions, the gradients computed in the forward pass
(the fused linear cross-entropy of Liger-Kernel and torchtune, in plain torch).

[N, V] logits never exist: each chunk of `rows` positions makes its logits, their log-sum-exp and
the gradient (softmax - one-hot) @ W and its transpose product, then drops them. The backward pass only
scales the stored gradients by the incoming one. Memory: one chunk of fp32 logits (~`CHUNK_ELEMENTS`)
instead of the logits, their log-softmax and their gradient (3 x N x V floats); the matmul FLOPs are
those of the plain head. Results equal `F.cross_entropy(h @ W.T + b, t, reduction="sum")` to float
rounding (tests: loss and gradients, 1e-5).
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_ELEMENTS = 1 << 24  # fp32 logits per chunk: 64 MiB


def chunk_rows(vocab: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(1, vocab))


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum over rows of cross_entropy(hidden @ weight.T + bias, targets); hidden [N, H], weight [V, H]."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        rows: int,
    ) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start : start + rows], targets[start : start + rows]
            logits = (h @ weight.t()).float()
            if bias is not None:
                logits += bias.float()
            picked = logits.gather(1, t[:, None]).squeeze(1)
            top = logits.amax(dim=-1, keepdim=True)
            grad = torch.sub(logits, top, out=logits).exp_()  # in place: one [rows, V] buffer per chunk
            norm = grad.sum(dim=-1)
            total += (top.squeeze(1) + norm.log() - picked).sum()
            if not (need_h or need_w or need_b):
                continue
            grad.div_(norm[:, None])  # softmax
            grad[torch.arange(len(t), device=t.device), t] -= 1.0
            g = grad.to(h.dtype)
            if grad_h is not None:
                grad_h[start : start + rows] = g @ weight
            if grad_w is not None:
                grad_w += g.t() @ h  # in the compute dtype (as the plain head's backward), summed in fp32
            if grad_b is not None:
                grad_b += grad.sum(0)
        ctx.save_for_backward(*(x for x in (grad_h, grad_w, grad_b) if x is not None))
        ctx.which = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        saved = iter(ctx.saved_tensors)
        grad_h, grad_w, grad_b = (next(saved) if has else None for has in ctx.which)
        w_dtype, b_dtype = ctx.dtypes
        out_h = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        out_w = (grad_w * grad_out).to(w_dtype) if grad_w is not None else None
        out_b = (grad_b * grad_out).to(b_dtype) if grad_b is not None else None
        return out_h, out_w, out_b, None, None


def linear_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    """The summed cross-entropy of the head's logits for `targets` (fp32), chunk by chunk. Under autocast
    the matmuls run in its dtype, as the plain head's would."""
    if hidden.shape[0] == 0:
        return hidden.sum().float() * 0 + weight.sum().float() * 0  # keeps the graph for DDP / FSDP
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    hidden, weight = hidden.to(dtype), weight.to(dtype)
    with torch.autocast(device, enabled=False):
        return ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_rows(weight.shape[0]))
