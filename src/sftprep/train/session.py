"""Everything one training run holds, and how it is set up: data, step plan, model, parallelism,
optimizer, schedule and the optional eval split."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sftprep.errors import ConfigError
from sftprep.train.bundle import DataBundle, load_data_bundle
from sftprep.train.checkpoint import CheckpointContext
from sftprep.train.config import TrainConfig
from sftprep.train.data import DataStats, StepPlan, TrainExample, load_examples
from sftprep.train.data import pack_best_fit_decreasing as pack
from sftprep.train.distributed import DistEnv
from sftprep.train.evaluate import EvalSet, eval_dir_of, load_eval_set
from sftprep.train.loss import SFTLoss
from sftprep.train.model import build_model
from sftprep.train.optim import build_optimizer, build_scheduler
from sftprep.train.parallel import unwrapped, wrap


@dataclass
class Run:
    cfg: TrainConfig
    env: DistEnv
    bundle: DataBundle
    examples: list[TrainExample]
    units: list[list[int]]  # each unit: the example indices of one row (one example without packing)
    stats: DataStats
    plan: StepPlan
    model: nn.Module  # the HF model (with LoRA adapters when configured)
    loss_module: nn.Module  # SFTLoss, possibly DDP-wrapped or FSDP-sharded
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int
    autocast: torch.dtype | None  # None under FSDP: its mixed-precision policy casts instead
    compute_dtype: torch.dtype | None = None
    eval_set: EvalSet | None = None
    embeddings: dict[str, Any] | None = None  # what resizing the embeddings did (new tokens)

    @property
    def sharded(self) -> bool:
        return self.cfg.sharding == "fsdp"

    @property
    def forward_module(self) -> nn.Module:
        """The loss module to call without gradient sync (evaluation)."""
        return unwrapped(self.loss_module)

    def checkpoint_context(self) -> CheckpointContext:
        return CheckpointContext(self.env, self.model, self.loss_module, self.optimizer, self.scheduler, self.sharded)


def check_paths(cfg: TrainConfig) -> None:
    """Plain errors for paths that cannot work, before anything is loaded."""
    _prepared_dir(cfg.data_dir, "DATA_DIR")
    if cfg.eval_dir:
        _prepared_dir(eval_dir_of(cfg.eval_dir), "--eval")
    if cfg.model != "tiny":
        p = Path(cfg.model)
        if not p.is_dir() or not (p / "config.json").is_file():
            what = "no such directory" if not p.exists() else "not a directory" if not p.is_dir() else "no config.json"
            raise ConfigError(
                f"--model {cfg.model}: not a local HF model directory ({what}); give a directory saved with "
                "save_pretrained (config.json + weights), or --model tiny"
            )


def _prepared_dir(path: str, what: str) -> None:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} {path}: no such directory; give a directory written by `sftprep prepare`")
    if not p.is_dir():
        raise ConfigError(f"{what} {path}: a file, not a directory; give a directory written by `sftprep prepare`")
    manifest = p / "manifest.json"
    if not manifest.is_file():
        raise ConfigError(f"{what} {path}: no manifest.json; give a directory written by `sftprep prepare`")
    try:
        record = json.loads(manifest.read_text("utf-8"))
        record["tokenizer"], record["template"], record["shards"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{what} {path}: manifest.json is unreadable or incomplete ({e}); prepare it again") from e
    missing = [s for s in record["shards"] if not (p / s).is_file()]
    if missing:
        raise ConfigError(f"{what} {path}: missing data files {', '.join(missing[:3])}; prepare it again")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def setup_run(cfg: TrainConfig, env: DistEnv, model: nn.Module | None = None) -> Run:
    """Data, units, step plan, model, optimizer and schedule (no training yet)."""
    bundle = load_data_bundle(cfg.data_dir)
    examples, stats = load_examples(cfg.data_dir, cfg.row_capacity if cfg.packing else cfg.max_length)
    if cfg.packing:
        units = pack([len(e) for e in examples], cfg.row_capacity)
        stats.rows, stats.row_capacity = len(units), cfg.row_capacity
    else:
        units = [[i] for i in range(len(examples))]
    plan = StepPlan(len(units), cfg.batch_size, cfg.grad_accum, env.world_size, cfg.seed)
    if plan.steps_per_epoch == 0:
        what = "packed rows" if cfg.packing else "examples"
        raise ConfigError(
            f"{cfg.data_dir}: {len(units)} {what}, fewer than one optimizer step takes "
            f"(batch size {cfg.batch_size} x grad accum {cfg.grad_accum} x {env.world_size} processes)"
        )
    eval_set = None
    if cfg.eval_dir:
        limit = cfg.row_capacity if cfg.packing else cfg.max_length
        eval_set = load_eval_set(eval_dir_of(cfg.eval_dir), bundle, cfg.eval_batch_size or cfg.batch_size, limit)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * plan.steps_per_epoch))
    torch.manual_seed(cfg.seed)
    embeddings = None
    if model is None:
        model, embeddings = build_model(cfg, bundle)
    dtype = autocast_dtype(cfg.precision, env.device)
    loss_module = wrap(SFTLoss(model), model, env, cfg.sharding, dtype)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total)
    autocast = None if cfg.sharding == "fsdp" else dtype
    return Run(
        cfg, env, bundle, examples, units, stats, plan, model, loss_module, optimizer, scheduler, total,
        autocast, dtype, eval_set, embeddings,
    )  # fmt: skip
