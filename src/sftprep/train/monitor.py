"""Progress bar (rich), console loss lines, train_log.jsonl (always), TensorBoard and Weights & Biases
(when installed; a message says so when one is asked for but missing)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sftprep.train.config import TrainConfig

LOG_FILE = "train_log.jsonl"
TENSORBOARD_HINT = "pip install tensorboard"
WANDB_HINT = "pip install wandb"


@dataclass
class StepMetrics:
    step: int  # 1-based: optimizer steps done
    loss: float
    lr: float
    grad_norm: float
    examples: int
    tokens: int  # real tokens this step
    trainable_tokens: int
    padded_tokens: int  # tokens the model processed, padding included
    seconds: float


class Monitor:
    """Reports a run's progress; everything is a no-op on non-main processes."""

    def __init__(self, out_dir: Path, total: int, start: int, cfg: TrainConfig, active: bool) -> None:
        self.out_dir, self.total, self.start, self.cfg = out_dir, total, start, cfg
        self.quiet, self.active, self.log_every = cfg.quiet, active, cfg.log_every
        self.console = Console(stderr=True)
        self.examples = self.tokens = 0
        self.t0 = time.perf_counter()
        self._progress: Progress | None = None
        self._task: Any = None
        self._writer: Any = None
        self._wandb: Any = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Monitor:
        if not self.active:
            return self
        if not self.quiet:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total, completed=self.start, stats="")
        if self.cfg.tensorboard:
            self._writer = _tensorboard(self.out_dir / "runs")
            if self._writer is None:
                self.note(
                    f"tensorboard is not installed: logging to {LOG_FILE} only ({TENSORBOARD_HINT}, "
                    "or --no-tensorboard to silence this)"
                )
        if self.cfg.wandb:
            self._wandb = self._start_wandb()
        self.t0 = time.perf_counter()
        return self

    def _start_wandb(self) -> Any:
        try:
            import wandb
        except ImportError:
            self.note(f"--wandb: wandb is not installed ({WANDB_HINT}); logging to {LOG_FILE} without it")
            return None
        try:
            return wandb.init(
                project=self.cfg.wandb_project,
                dir=str(self.out_dir),
                name=self.out_dir.name,
                mode=self.cfg.wandb_mode,
                config=self.cfg.to_dict(),
                resume="allow",
            )
        except Exception as e:  # no API key in online mode, no network, a refused login
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.note(f"--wandb: cannot start a run ({why}); log in with `wandb login`, or use --wandb-mode offline")
            return None

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()

    # -- reporting -------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if self.active and not self.quiet:
            self.console.print(message, highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        """A warning shown even with --quiet (something asked for is not happening)."""
        if self.active:
            self.console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)

    def rates(self) -> tuple[float, float]:
        """(records/s, tokens/s) since this run started."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        return self.examples / elapsed, self.tokens / elapsed

    def step(self, m: StepMetrics, evaluation: dict[str, float] | None = None) -> None:
        """Log one optimizer step (with the eval metrics when the step evaluated)."""
        if not self.active:
            return
        self.examples += m.examples
        self.tokens += m.tokens
        rec_s, tok_s = self.rates()
        row: dict[str, Any] = {**asdict(m), "records_per_s": rec_s, "tokens_per_s": tok_s, **(evaluation or {})}
        with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {"train/loss": m.loss, "train/lr": m.lr, "train/grad_norm": m.grad_norm, "train/tokens_per_s": tok_s}
        scalars.update({f"eval/{k[5:]}": v for k, v in (evaluation or {}).items()})
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, value, m.step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=m.step)
        if self._progress is not None:
            stats = f"loss {m.loss:.4f}  lr {m.lr:.2e}  {rec_s:,.0f} rec/s  {tok_s:,.0f} tok/s"
            self._progress.update(self._task, completed=m.step, stats=stats)
            if m.step % self.log_every == 0 or m.step == self.total:
                self._progress.console.print(
                    f"step {m.step}/{self.total}  loss {m.loss:.4f}  lr {m.lr:.3e}  grad_norm {m.grad_norm:.3f}",
                    highlight=False,
                )
        if evaluation:
            ev = evaluation
            self.info(
                f"eval after step {m.step}: loss {ev['eval_loss']:.4f} on {ev['eval_trainable_tokens']:,.0f} "
                f"trained tokens ({ev['eval_tokens_per_s']:,.0f} tok/s)"
            )


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(path))


def read_log(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def truncate_log(out_dir: str | Path, last_step: int) -> None:
    """Forget logged steps after `last_step` (they were not checkpointed and will run again)."""
    rows = [r for r in read_log(out_dir) if r["step"] <= last_step]
    path = Path(out_dir) / LOG_FILE
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
