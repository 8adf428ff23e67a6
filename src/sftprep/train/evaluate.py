"""`--eval DIR`: the masked loss on a prepared eval split, normalised exactly like training.

eval loss = sum of the token losses of every trained target in DIR / the number of those targets
(over all processes), the same head-gathered fp32 cross-entropy the training step uses. Examples are
batched by length (least padding); every process runs the same number of batches (FSDP's collectives
need it), a process with none left runs a batch with no trained target.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sftprep.errors import ConfigError
from sftprep.train.bundle import DataBundle, load_data_bundle
from sftprep.train.data import TrainExample, collate_padded, load_examples
from sftprep.train.distributed import DistEnv, all_reduce_sum
from sftprep.types import IGNORE_INDEX


@dataclass
class EvalSet:
    examples: list[TrainExample]
    batch_size: int
    trainable_tokens: int
    dropped_too_long: int = 0


@dataclass
class EvalMetrics:
    loss: float
    tokens: int  # real tokens evaluated (all processes)
    trainable_tokens: int
    seconds: float
    tokens_per_s: float


def load_eval_set(eval_dir: str, train_bundle: DataBundle, batch_size: int, max_length: int | None) -> EvalSet:
    """The eval split's examples, checked to be prepared with the training data's tokenizer and template."""
    bundle = load_data_bundle(eval_dir)
    for what, a, b in (
        ("tokenizer", bundle.tokenizer_record.get("sha256"), train_bundle.tokenizer_record.get("sha256")),
        ("template", bundle.template_record.get("sha256"), train_bundle.template_record.get("sha256")),
    ):
        if a != b:
            raise ConfigError(
                f"--eval {eval_dir}: prepared with another {what} than the training data ({what} sha256 "
                f"{str(a)[:12]} vs {str(b)[:12]}); prepare it with the same --tokenizer and --template"
            )
    examples, stats = load_examples(eval_dir, max_length)
    if not examples:
        raise ConfigError(f"--eval {eval_dir}: no example with a trained target to evaluate")
    examples.sort(key=len)
    return EvalSet(examples, batch_size, stats.trainable_tokens, stats.dropped_too_long)


def _batches(eval_set: EvalSet, env: DistEnv) -> list[list[TrainExample] | None]:
    """This process's batches (contiguous runs of length-sorted examples); None = a batch with no target."""
    n, b = len(eval_set.examples), eval_set.batch_size
    per_step = b * env.world_size
    steps = math.ceil(n / per_step)
    out: list[list[TrainExample] | None] = []
    for s in range(steps):
        start = s * per_step + env.rank * b
        chunk = eval_set.examples[start : start + b]
        out.append(chunk or None)
    return out


@torch.no_grad()
def evaluate(
    module: nn.Module, eval_set: EvalSet, env: DistEnv, pad_id: int, autocast: torch.dtype | None
) -> EvalMetrics:
    """`module`: the SFTLoss (the FSDP root when sharded, never a DDP wrapper)."""
    was_training = module.training
    module.eval()
    t0 = time.perf_counter()
    total = torch.zeros((), dtype=torch.float64, device=env.device)
    tokens = 0
    for chunk in _batches(eval_set, env):
        if chunk is None:
            first = eval_set.examples[0]
            chunk = [TrainExample(first.input_ids, np.full(len(first), IGNORE_INDEX, dtype=np.int64))]
        else:
            tokens += sum(len(e) for e in chunk)
        batch = collate_padded(chunk, pad_id).to(env.device)
        amp = torch.autocast(env.device.type, dtype=autocast, enabled=autocast is not None)
        with amp:
            total += module(**batch.tensors()).double()
    total = all_reduce_sum(total, env)
    tokens = int(all_reduce_sum(torch.tensor(tokens, device=env.device), env).item())
    seconds = time.perf_counter() - t0
    module.train(was_training)
    loss = float(total.item()) / eval_set.trainable_tokens
    return EvalMetrics(loss, tokens, eval_set.trainable_tokens, seconds, tokens / seconds if seconds else 0.0)


def eval_dir_of(path: str) -> str:
    """Where the eval split is: DIR itself, or DIR/eval when DIR holds one (a split written beside the data)."""
    p = Path(path)
    if not (p / "manifest.json").is_file() and (p / "eval" / "manifest.json").is_file():
        return str(p / "eval")
    return path
