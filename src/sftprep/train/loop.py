"""The training loop: AdamW, warmup + cosine, gradient accumulation and clipping, evaluation,
checkpoints, resume.

Loss normalisation: every micro-batch contributes the *sum* of its token losses divided by the number
of trained tokens in the whole optimizer step (all micro-batches of all processes, all-reduced), so
batch 8 x accumulation 1 and batch 1 x accumulation 8 give the same loss and gradients.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sftprep.errors import SftprepError
from sftprep.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from sftprep.train.config import TrainConfig
from sftprep.train.data import Batch, DataStats, collate_packed, collate_padded
from sftprep.train.distributed import DistEnv, all_reduce_sum, barrier, cleanup, on_main, setup_distributed
from sftprep.train.evaluate import evaluate
from sftprep.train.model import count_parameters
from sftprep.train.monitor import Monitor, StepMetrics, truncate_log
from sftprep.train.outputs import open_out_dir
from sftprep.train.parallel import clip_gradients, gradient_sync
from sftprep.train.session import Run, check_paths, setup_run

__all__ = ["NonFiniteLossError", "Run", "TrainResult", "accumulate", "micro_batches", "setup_run", "train"]


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
    evals: list[dict[str, float]] = field(default_factory=list)  # {"step", "eval_loss", ...} per evaluation


def train(cfg: TrainConfig, model: nn.Module | None = None) -> TrainResult:
    """Train `cfg.model` (or the given model) on cfg.data_dir; save model + tokenizer + template in cfg.out_dir."""
    cfg.validate()
    check_paths(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = setup_distributed(group=cfg.sharding == "fsdp")
    try:
        with contextlib.ExitStack() as stack:
            checkpoint = on_main(lambda: open_out_dir(cfg, stack), env)
            return _train(cfg, env, model, checkpoint)
    finally:
        cleanup(env)


def _train(cfg: TrainConfig, env: DistEnv, model: nn.Module | None, checkpoint: Path | None) -> TrainResult:
    out = Path(cfg.out_dir)
    run = setup_run(cfg, env, model)
    start = 0
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, run.checkpoint_context(), cfg).step
        if env.is_main:
            truncate_log(out, start)
    stop = min(run.total_steps, cfg.stop_after or run.total_steps)
    result = TrainResult(out, start, stats=run.stats)
    monitor = Monitor(out, run.total_steps, start, cfg, env.is_main)
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
                evaluation = _maybe_evaluate(run, step + 1, stop, result)
                monitor.step(m, evaluation)
                if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < stop:
                    _save(run, step + 1, monitor)
        except KeyboardInterrupt:
            if result.steps > start and not env.distributed:
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


def _maybe_evaluate(run: Run, done: int, stop: int, result: TrainResult) -> dict[str, float] | None:
    """Evaluate after `done` steps every --eval-every steps and at the end of training."""
    every = run.cfg.eval_every
    at_end = done == run.total_steps
    if run.eval_set is None or not (at_end or (every and done % every == 0)):
        return None
    m = evaluate(run.forward_module, run.eval_set, run.env, run.bundle.pad_id, run.autocast)
    row = {
        "eval_loss": m.loss,
        "eval_tokens": m.tokens,
        "eval_trainable_tokens": m.trainable_tokens,
        "eval_seconds": m.seconds,
        "eval_tokens_per_s": m.tokens_per_s,
    }
    result.evals.append({"step": done, **row})
    return row


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
        amp = torch.autocast(env.device.type, dtype=run.autocast, enabled=run.autocast is not None)
        with gradient_sync(run.loss_module, sync), amp:
            summed = run.loss_module(**b.to(env.device).tensors())
        # data parallelism averages gradients over processes: scale back to a global token mean
        (summed * env.world_size / count).backward()
        total += summed.detach()
    return all_reduce_sum(total, env) / count, int(count.item())


def train_step(run: Run, step: int) -> StepMetrics:
    t0 = time.perf_counter()
    run.loss_module.train()
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
    norm = clip_gradients(params, run.cfg.max_grad_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return StepMetrics(
        step=step + 1,
        loss=value,
        lr=lr,
        grad_norm=norm,
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
    if run.embeddings:
        e = run.embeddings
        monitor.info(
            f"embeddings: {len(e['new_tokens'])} new token(s) ({', '.join(e['new_tokens'])}), rows "
            f"{e['rows_before']:,} -> {e['rows_after']:,}, initialised from the mean of the known rows"
        )
    if run.eval_set is not None:
        ev = run.eval_set
        monitor.info(f"eval: {len(ev.examples):,} examples, {ev.trainable_tokens:,} trained tokens ({cfg.eval_dir})")
    parallel = f", FSDP over {run.env.world_size} process(es)" if run.sharded else ""
    parallel += ", gradient checkpointing" if cfg.gradient_checkpointing else ""
    monitor.info(
        f"model: {cfg.model} ({trainable:,} trainable of {total:,} parameters{parallel}); "
        f"{run.total_steps:,} steps of {run.plan.global_batch} {'rows' if cfg.packing else 'examples'}"
        + (f", resuming after step {start}" if start else "")
    )


def _save(run: Run, step: int, monitor: Monitor) -> None:
    path = save_checkpoint(run.cfg.out_dir, step, run.checkpoint_context(), run.cfg, {"steps": step})
    if path is not None:
        monitor.info(f"checkpoint: {path}")


def _finish(run: Run, result: TrainResult, monitor: Monitor) -> None:
    """Save the model for inference with the tokenizer and template it was trained with."""
    from sftprep.train.export import export_model, export_sharded

    summary = training_summary(run, result)
    if run.sharded:
        export_sharded(run, summary)
    elif run.env.is_main:
        export_model(run.model, run.bundle, Path(run.cfg.out_dir), summary)
    if run.env.is_main:
        monitor.info(f"saved model, tokenizer and template to {run.cfg.out_dir}")
    barrier(run.env)


def training_summary(run: Run, result: TrainResult) -> dict[str, Any]:
    s = run.stats
    return {
        "data_dir": str(run.cfg.data_dir),
        "train": run.cfg.to_dict(),
        "steps": result.steps,
        "world_size": run.env.world_size,  # processes (data parallel)
        "sharding": run.cfg.sharding,
        "final_loss": result.losses[-1] if result.losses else None,
        "evals": result.evals,
        "seconds": result.seconds,
        "records_per_s": result.records_per_s,
        "tokens_per_s": result.tokens_per_s,
        "padding_efficiency": result.padding_efficiency,
        "data": {**s.__dict__, "packing_efficiency": s.packing_efficiency},
        "embeddings": run.embeddings,
        "checkpoints": [p.name for p in list_checkpoints(run.cfg.out_dir)],
    }
