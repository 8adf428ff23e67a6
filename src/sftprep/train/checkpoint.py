"""Checkpoints under OUT_DIR/checkpoints/step-NNNNNNNN: trainable weights, optimizer, schedule, RNG
(with FSDP: every process's shards of the model and optimizer, through torch.distributed.checkpoint).

Data order is a function of (seed, step), so the step number is all the data state there is.
A checkpoint is written to a temporary directory and renamed, so a crash never leaves half of one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sftprep.errors import ConfigError
from sftprep.train.config import RESUME_INVARIANTS, TrainConfig
from sftprep.train.distributed import DistEnv, barrier
from sftprep.train.model import trainable_parameters
from sftprep.train.parallel import load_sharded, save_sharded

CHECKPOINTS = "checkpoints"
PREFIX = "step-"
STATE_FILE = "state.json"
DCP_DIR = "dcp"  # sharded (FSDP) model + optimizer state, one file per process


@dataclass
class CheckpointContext:
    """What a checkpoint saves or restores."""

    env: DistEnv
    model: nn.Module  # the HF model (possibly with LoRA); its trainable parameters are saved
    loss_module: nn.Module  # the FSDP root when sharded
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sharded: bool = False


@dataclass
class Resumed:
    step: int
    config: dict[str, Any]
    metrics: dict[str, Any]


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINTS


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.random.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    ctx: CheckpointContext,
    cfg: TrainConfig,
    metrics: dict[str, Any],
) -> Path | None:
    """Every process calls it. Sharded (FSDP): each writes its shards with torch.distributed.checkpoint;
    else rank 0 writes the trainable weights and the optimizer. Rank 0 writes the rest, renames the
    directory into place and prunes old checkpoints. Returns the path on rank 0."""
    env = ctx.env
    root = checkpoint_root(out_dir)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}"
    if env.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier(env)
    if ctx.sharded:
        save_sharded(str(tmp / DCP_DIR), ctx.loss_module, ctx.optimizer)
    elif env.is_main:
        weights = {n: p.detach().cpu() for n, p in trainable_parameters(ctx.model).items()}
        torch.save(weights, tmp / "weights.pt")
        torch.save(ctx.optimizer.state_dict(), tmp / "optimizer.pt")
    barrier(env)
    if not env.is_main:
        barrier(env)
        return None
    torch.save({"scheduler": ctx.scheduler.state_dict(), "rng": rng_state()}, tmp / "trainer.pt")
    state = {
        "step": step,
        "config": cfg.to_dict(),
        "metrics": metrics,
        "world_size": env.world_size,
        "format": "dcp" if ctx.sharded else "torch",
    }
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", "utf-8")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    prune(out_dir, cfg.keep_checkpoints)
    barrier(env)
    return final


def prune(out_dir: str | Path, keep: int) -> None:
    found = list_checkpoints(out_dir)
    for old in found[: max(0, len(found) - max(1, keep))]:
        shutil.rmtree(old)


def _unreadable(path: Path, what: str, error: BaseException) -> ConfigError:
    others = [p for p in list_checkpoints(path.parent.parent) if p != path] if path.parent.name == CHECKPOINTS else []
    fix = (
        f"resume from an earlier one: --resume-from {others[-1]}"
        if others
        else "start afresh: run the same command with --overwrite instead of --resume"
    )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ConfigError(f"checkpoint {path} is unreadable ({what}: {first}); {fix}")


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / STATE_FILE).read_text("utf-8"))
        int(state["step"]), dict(state["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _unreadable(path, STATE_FILE, e) from e
    return state


def load_checkpoint(path: Path, ctx: CheckpointContext, cfg: TrainConfig) -> Resumed:
    state = read_state(path)
    check_compatible(state["config"], cfg, path)
    written = state.get("world_size", 1)
    if written != ctx.env.world_size:  # the global batch and data order depend on it
        raise ConfigError(
            f"cannot resume from {path}: it was written by {written} process(es) and this run "
            f"has {ctx.env.world_size}; resume with the same process count (torchrun --nproc_per_node, --nnodes)"
        )
    if ctx.sharded:
        try:
            load_sharded(str(path / DCP_DIR), ctx.loss_module, ctx.optimizer)
        except Exception as e:  # DCP raises CheckpointException (wrapping each rank's error) or OSError
            raise _unreadable(path, DCP_DIR, e) from e
    else:
        weights = _load(path, "weights.pt")
        expected = set(trainable_parameters(ctx.model))
        if set(weights) != expected:
            raise ConfigError(f"{path}: its weights do not match the model (different --model or --lora settings?)")
        ctx.model.load_state_dict(weights, strict=False)
        try:
            ctx.optimizer.load_state_dict(_load(path, "optimizer.pt"))
        except (ValueError, KeyError) as e:
            raise _unreadable(path, "optimizer.pt", e) from e
    trainer = _load(path, "trainer.pt", weights_only=False)
    try:
        ctx.scheduler.load_state_dict(trainer["scheduler"])
        set_rng_state(trainer["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise _unreadable(path, "trainer.pt", e) from e
    return Resumed(int(state["step"]), state["config"], state.get("metrics", {}))


def _load(path: Path, name: str, weights_only: bool = True) -> Any:
    try:
        return torch.load(path / name, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # a truncated or foreign file: pickle, zip and torch errors of many kinds
        raise _unreadable(path, name, e) from e


def check_compatible(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    defaults = TrainConfig(data_dir="").to_dict()  # keys an older checkpoint does not have
    changed = [k for k in RESUME_INVARIANTS if saved.get(k, defaults.get(k)) != now.get(k)]
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k, defaults.get(k))!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"cannot resume from {path}: options that fix data order or the model changed ({detail})")
