"""Process-group helpers: one process by default, DDP when launched by torchrun / accelerate launch."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from sftprep.errors import ConfigError, SftprepError

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this run made the process group (and destroys it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(group: bool = False) -> DistEnv:
    """Join the process group named by the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK).

    `group`: make a process group even for one process (FSDP needs one): an in-memory store, no network.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ConfigError(f"WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun): {e}") from e
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    owns = not dist.is_initialized() and (world > 1 or group)
    if owns and world > 1:
        dist.init_process_group(backend=backend)
    elif owns:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    rank = dist.get_rank() if world > 1 else 0
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device, owns_group=owns)


def all_reduce_sum(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The sum over all processes (the value itself when there is one process)."""
    if env.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def on_main(fn: Callable[[], T], env: DistEnv) -> T:
    """Run `fn` on rank 0 only and give every process its result, or raise its SftprepError everywhere."""
    if not env.distributed:
        return fn()
    box: list[Any] = [None]
    if env.is_main:
        try:
            box[0] = ("ok", fn())
        except SftprepError as e:
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value
