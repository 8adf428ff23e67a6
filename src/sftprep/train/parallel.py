"""Data parallelism, wired from torch: DDP (full replicas) or FSDP2 (`fully_shard` per decoder layer,
then the loss module as the root, with a mixed-precision policy), and their state dicts.

The loss module (SFTLoss) is the root so that its forward, which calls the decoder and the LM head
separately, gathers the root's parameters (embeddings, final norm, head) before use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from sftprep.train.distributed import DistEnv


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: HF's `_no_split_modules` classes (e.g. LlamaDecoderLayer)."""
    names: set[str] = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_fsdp(loss_module: nn.Module, model: nn.Module, env: DistEnv, param_dtype: torch.dtype | None) -> nn.Module:
    """FSDP2: each decoder layer its own unit, the rest (embeddings, norm, head) in the root unit.
    Parameters are kept in fp32 (sharded); `param_dtype` is what forward and backward compute in."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(loss_module, mesh=mesh, mp_policy=policy)
    return loss_module


def wrap(loss_module: nn.Module, model: nn.Module, env: DistEnv, sharding: str, dtype: torch.dtype | None) -> nn.Module:
    """The module each step calls: FSDP2-sharded, DDP-wrapped (several processes) or the loss module itself."""
    if sharding == "fsdp":
        return shard_fsdp(loss_module, model, env, dtype)
    loss_module.to(env.device)
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(loss_module, device_ids=ids)
    return loss_module


def is_fsdp(module: nn.Module) -> bool:
    return hasattr(module, "set_requires_gradient_sync")


def unwrapped(module: nn.Module) -> nn.Module:
    """The module to call without gradient sync (evaluation): DDP's inner module; FSDP's root itself."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


@contextlib.contextmanager
def gradient_sync(module: nn.Module, sync: bool) -> Iterator[None]:
    """Reduce gradients across processes only on the last micro-batch of a step."""
    if sync:
        yield
    elif isinstance(module, nn.parallel.DistributedDataParallel):
        with module.no_sync():
            yield
    elif is_fsdp(module):
        module.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)  # type: ignore[operator]
    else:
        yield


def clip_gradients(params: list[nn.Parameter], max_norm: float | None) -> float:
    """Clip to `max_norm` (None or <= 0: no clipping); returns the total gradient norm.

    Each parameter's norm is accumulated in float64: torch's fp32 CPU norm of a 262k-element embedding
    gradient is off by ~6e-5 relative, more than sharding changes it, so the logged norm would differ
    between 1 and N processes for no reason. Sharded (DTensor) gradients reduce across processes.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = [torch.linalg.vector_norm(g, 2.0, dtype=torch.float64) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
    if max_norm and max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return as_float(total)


def as_float(value: torch.Tensor | float) -> float:
    """A scalar tensor (a DTensor under FSDP: the full value) as a Python float."""
    full = getattr(value, "full_tensor", None)
    return float(full() if full is not None else value)


def full_model_state(loss_module: nn.Module, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Every process calls it; rank 0 gets the full (unsharded, CPU) state of the wrapped model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(loss_module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def save_sharded(path: str, loss_module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Each process writes its shards of the model and optimizer state (torch.distributed.checkpoint)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(loss_module, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=path)


def load_sharded(path: str, loss_module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(loss_module, optimizer)
    state: dict[str, Any] = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(loss_module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
