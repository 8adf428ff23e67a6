"""The training loop: AdamW, warmup + cosine, gradient accumulation and clipping, checkpoints, resume.

Loss normalisation: every micro-batch contributes the *sum* of its token losses divided by the number
of trained tokens in the whole optimizer step (all micro-batches of all processes, all-reduced), so
batch 8 x accumulation 1 and batch 1 x accumulation 8 give the same loss and gradients.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sftprep.errors import ConfigError, SftprepError
from sftprep.train.bundle import DataBundle, load_data_bundle
from sftprep.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from sftprep.train.config import TrainConfig
from sftprep.train.data import Batch, DataStats, StepPlan, TrainExample, collate_packed, collate_padded, load_examples
from sftprep.train.data import pack_best_fit_decreasing as pack
from sftprep.train.distributed import DistEnv, all_reduce_sum, barrier, cleanup, on_main, setup_distributed
from sftprep.train.loss import SFTLoss
from sftprep.train.model import build_model, count_parameters
from sftprep.train.monitor import Monitor, StepMetrics, truncate_log
from sftprep.train.optim import build_optimizer, build_scheduler


class NonFiniteLossError(SftprepError):
    """The loss became NaN or infinite: training stops before the weights are updated."""

    exit_code = 1


@dataclass
class TrainResult:
    out_dir: Path
    steps: int  # optimizer steps done in total
    losses: list[float] = field(default_factory=list)  # this run's per-step losses
    stats: DataStats = field(default_factory=DataStats)
    seconds: float = 0.0
    records_per_s: float = 0.0
    tokens_per_s: float = 0.0
    padding_efficiency: float = 0.0  # real tokens / tokens processed (padding included)
    stopped_early: bool = False


@dataclass
class Run:
    """Everything one training run holds."""

    cfg: TrainConfig
    env: DistEnv
    bundle: DataBundle
    examples: list[TrainExample]
    units: list[list[int]]  # each unit: the example indices of one row (one example without packing)
    stats: DataStats
    plan: StepPlan
    model: nn.Module
    loss_module: nn.Module  # SFTLoss, possibly wrapped for data parallelism
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int
    autocast: torch.dtype | None


def train(cfg: TrainConfig, model: nn.Module | None = None) -> TrainResult:
    """Train `cfg.model` (or the given model) on cfg.data_dir; save model + tokenizer + template in cfg.out_dir."""
    cfg.validate()
    env = setup_distributed()
    try:
        return _train(cfg, env, model)
    finally:
        cleanup(env)


def _train(cfg: TrainConfig, env: DistEnv, model: nn.Module | None) -> TrainResult:
    out = Path(cfg.out_dir)
    checkpoint = _prepare_out_dir(cfg, env)
    run = setup_run(cfg, env, model)
    start = 0
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, run.model, run.optimizer, run.scheduler, cfg, run.env.world_size).step
        if env.is_main:
            truncate_log(out, start)
    stop = min(run.total_steps, cfg.stop_after or run.total_steps)
    result = TrainResult(out, start, stats=run.stats)
    monitor = Monitor(out, run.total_steps, start, cfg.quiet, env.is_main, cfg.log_every, cfg.tensorboard)
    processed = real = 0
    with monitor:
        _describe(run, monitor, start)
        t0 = time.perf_counter()
        try:
            for step in range(start, stop):
                m = train_step(run, step)
                result.losses.append(m.loss)
                result.steps = step + 1
                processed, real = processed + m.padded_tokens, real + m.tokens
                monitor.step(m)
                if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < stop:
                    _save(run, step + 1, monitor)
        except KeyboardInterrupt:
            if result.steps > start:
                _save(run, result.steps, monitor)
            raise
        result.seconds = time.perf_counter() - t0
        result.records_per_s, result.tokens_per_s = monitor.rates()
        result.padding_efficiency = real / processed if processed else 0.0
        if result.steps > start:
            _save(run, result.steps, monitor)
        result.stopped_early = result.steps < run.total_steps
        if not result.stopped_early:
            _finish(run, result, monitor)
    return result


def _prepare_out_dir(cfg: TrainConfig, env: DistEnv) -> Path | None:
    """The checkpoint to resume from, after checking / clearing OUT_DIR. Rank 0 decides and every
    process gets its answer (or its error), so ranks never disagree about OUT_DIR."""
    return on_main(lambda: _check_out_dir(cfg), env)


def _check_out_dir(cfg: TrainConfig) -> Path | None:
    out = Path(cfg.out_dir)
    if cfg.resume_from:
        path = Path(cfg.resume_from)
        if not (path / "state.json").is_file():
            raise ConfigError(f"--resume-from {path}: not a checkpoint directory (no state.json)")
        out.mkdir(parents=True, exist_ok=True)
        return path
    if cfg.resume:
        found = latest_checkpoint(out)
        if found is None:
            raise ConfigError(f"--resume: no checkpoint under {out}/checkpoints; run without --resume to start")
        return found
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise ConfigError(f"{out} exists; pass --resume to continue its run or --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
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
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * plan.steps_per_epoch))
    torch.manual_seed(cfg.seed)
    if model is None:
        info = {**bundle.tokenizer_record, "pad_id": bundle.pad_id, "eos_id": bundle.eos_id}
        model = build_model(cfg, info)
    model.to(env.device)
    loss_module: nn.Module = SFTLoss(model)
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=ids)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total)
    dtype = _autocast_dtype(cfg.precision, env.device)
    return Run(cfg, env, bundle, examples, units, stats, plan, model, loss_module, optimizer, scheduler, total, dtype)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def micro_batches(run: Run, step: int) -> list[Batch]:
    """This process's collated micro-batches of optimizer step `step`."""
    out = []
    for idx in run.plan.micro_batches(step, run.env.rank):
        rows = [[run.examples[i] for i in run.units[u]] for u in idx]
        if run.cfg.packing:
            out.append(collate_packed(rows, run.bundle.pad_id))
        else:
            out.append(collate_padded([r[0] for r in rows], run.bundle.pad_id))
    return out


def accumulate(run: Run, batches: list[Batch]) -> tuple[torch.Tensor, int]:
    """Backward every micro-batch with loss = token-loss sum / trained tokens of the whole step.

    Returns (the step's loss over all processes, that token count). Gradients are left in .grad.
    """
    env = run.env
    count = all_reduce_sum(torch.tensor(float(sum(b.n_trainable for b in batches)), device=env.device), env)
    total = torch.zeros((), dtype=torch.float32, device=env.device)
    for j, b in enumerate(batches):
        sync = not env.distributed or j == len(batches) - 1
        no_sync = contextlib.nullcontext() if sync else run.loss_module.no_sync()  # type: ignore[operator]
        amp = torch.autocast(env.device.type, dtype=run.autocast, enabled=run.autocast is not None)
        with no_sync, amp:
            summed = run.loss_module(**b.to(env.device).tensors())
        # data parallelism averages gradients over processes: scale back to a global token mean
        (summed * env.world_size / count).backward()
        total += summed.detach()
    return all_reduce_sum(total, env) / count, int(count.item())


def train_step(run: Run, step: int) -> StepMetrics:
    t0 = time.perf_counter()
    run.model.train()
    batches = micro_batches(run, step)
    loss, count = accumulate(run, batches)
    value = float(loss.item())
    if not math.isfinite(value):
        run.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(
            f"step {step + 1}: the loss is {value} (not finite); training stopped before updating the weights. "
            "Lower --lr, keep --max-grad-norm, try --precision fp32, or resume from an earlier checkpoint"
        )
    params = [p for p in run.model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, run.cfg.max_grad_norm or math.inf)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return StepMetrics(
        step=step + 1,
        loss=value,
        lr=lr,
        grad_norm=float(norm),
        examples=_global(sum(b.n_examples for b in batches), run.env),
        tokens=_global(sum(b.n_tokens for b in batches), run.env),
        trainable_tokens=count,
        padded_tokens=_global(sum(b.padded_tokens for b in batches), run.env),
        seconds=time.perf_counter() - t0,
    )


def _global(n: int, env: DistEnv) -> int:
    return int(all_reduce_sum(torch.tensor(n, device=env.device), env).item()) if env.distributed else n


def _describe(run: Run, monitor: Monitor, start: int) -> None:
    s, cfg = run.stats, run.cfg
    trainable, total = count_parameters(run.model)
    limit = cfg.row_capacity if cfg.packing else cfg.max_length
    too_long = f", {s.dropped_too_long:,} longer than {limit} tokens" if limit else ""
    monitor.info(
        f"data: {s.examples:,} examples, {s.tokens:,} tokens ({s.trainable_tokens:,} trained) from "
        f"{s.examples_read:,} read; dropped {s.dropped_no_target:,} without a trained target{too_long}"
    )
    if cfg.packing:
        monitor.info(
            f"packing: {s.rows:,} rows of {s.row_capacity} tokens, efficiency {s.packing_efficiency:.1%} "
            "(real tokens / row capacity)"
        )
    monitor.info(
        f"model: {cfg.model} ({trainable:,} trainable of {total:,} parameters); "
        f"{run.total_steps:,} steps of {run.plan.global_batch} {'rows' if cfg.packing else 'examples'}"
        + (f", resuming after step {start}" if start else "")
    )


def _save(run: Run, step: int, monitor: Monitor) -> None:
    if run.env.is_main:
        metrics = {"steps": step}
        path = save_checkpoint(
            run.cfg.out_dir, step, run.model, run.optimizer, run.scheduler, run.cfg, metrics, run.env.world_size
        )
        monitor.info(f"checkpoint: {path}")
    barrier(run.env)


def _finish(run: Run, result: TrainResult, monitor: Monitor) -> None:
    """Save the model for inference with the tokenizer and template it was trained with."""
    if run.env.is_main:
        from sftprep.train.export import export_model

        summary = training_summary(run, result)
        export_model(run.model, run.bundle, Path(run.cfg.out_dir), summary)
        monitor.info(f"saved model, tokenizer and template to {run.cfg.out_dir}")
    barrier(run.env)


def training_summary(run: Run, result: TrainResult) -> dict[str, Any]:
    s = run.stats
    return {
        "data_dir": str(run.cfg.data_dir),
        "train": json.loads(json.dumps(run.cfg.to_dict())),
        "steps": result.steps,
        "world_size": run.env.world_size,  # processes (data parallel)
        "final_loss": result.losses[-1] if result.losses else None,
        "seconds": result.seconds,
        "records_per_s": result.records_per_s,
        "tokens_per_s": result.tokens_per_s,
        "padding_efficiency": result.padding_efficiency,
        "data": {**s.__dict__, "packing_efficiency": s.packing_efficiency},
        "checkpoints": [p.name for p in list_checkpoints(run.cfg.out_dir)],
    }
