"""Checkpoints under OUT_DIR/checkpoints/step-NNNNNNNN: trainable weights, optimizer, schedule, RNG.

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
from sftprep.train.model import trainable_parameters

CHECKPOINTS = "checkpoints"
PREFIX = "step-"


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
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file()]
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
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    metrics: dict[str, Any],
    world_size: int = 1,
) -> Path:
    root = checkpoint_root(out_dir)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {n: p.detach().cpu() for n, p in trainable_parameters(model).items()}
    torch.save(weights, tmp / "weights.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save({"scheduler": scheduler.state_dict(), "rng": rng_state()}, tmp / "trainer.pt")
    state = {"step": step, "config": cfg.to_dict(), "metrics": metrics, "world_size": world_size}
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", "utf-8")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    prune(out_dir, cfg.keep_checkpoints)
    return final


def prune(out_dir: str | Path, keep: int) -> None:
    found = list_checkpoints(out_dir)
    for old in found[: max(0, len(found) - max(1, keep))]:
        shutil.rmtree(old)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    world_size: int = 1,
) -> Resumed:
    state = json.loads((path / "state.json").read_text("utf-8"))
    check_compatible(state["config"], cfg, path)
    if state.get("world_size", 1) != world_size:  # the global batch and data order depend on it
        raise ConfigError(
            f"cannot resume from {path}: it was written by {state.get('world_size', 1)} process(es) and this run "
            f"has {world_size}; resume with the same process count (torchrun --nproc_per_node, --nnodes)"
        )
    weights = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    expected = set(trainable_parameters(model))
    if set(weights) != expected:
        raise ConfigError(f"{path}: its weights do not match the model (different --model or --lora settings?)")
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    trainer = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    scheduler.load_state_dict(trainer["scheduler"])
    set_rng_state(trainer["rng"])
    return Resumed(int(state["step"]), state["config"], state.get("metrics", {}))


def check_compatible(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    now = json.loads(json.dumps(cfg.to_dict()))
    changed = [k for k in RESUME_INVARIANTS if saved.get(k) != now.get(k)]
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"cannot resume from {path}: options that fix data order or the model changed ({detail})")
