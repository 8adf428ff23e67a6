"""`sftprep demo`: two-digit addition, prepared with sftprep, trained on CPU, scored on held-out pairs.

Synthetic chats ("What is 47 + 38?" -> "85", with a system prompt, some with two exchanges) are
prepared with the embedded tokenizer and the chatml template (digits are single tokens), the tiny
Llama is trained on them, and exact-match accuracy is measured by generating answers to questions
whose number pairs (in either order) never appear in training. It runs once with the default
assistant-only mask and once with mask "none" (every token trained), and prints both.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sftprep.train.config import TinyModelConfig, TrainConfig

SYSTEM = "Add the numbers."
MASKS = ("assistant", "none")


@dataclass
class DemoConfig:
    seed: int = 0
    train_records: int = 6000
    eval_questions: int = 200
    multi_turn_fraction: float = 0.25
    # 3 layers: with 2 the model stays on a plateau (units digit unknown) for 800+ steps
    tiny: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(hidden_size=128, num_layers=3, num_heads=8))
    max_steps: int = 800  # batch 32: 197/200 (seed 0), 200/200 (seed 1); 600 or 700 steps stay on the plateau
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1


QUICK = DemoConfig(
    train_records=300,
    eval_questions=20,
    tiny=TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2),
    max_steps=25,
    batch_size=16,
    warmup_steps=3,
)


@dataclass
class DemoRow:
    mask: str
    steps: int
    train_seconds: float
    total_seconds: float
    correct: int
    total: int
    final_loss: float
    samples: list[tuple[str, str, str]] = field(default_factory=list)  # (question, expected, got)

    @property
    def exact_match(self) -> float:
        return self.correct / self.total if self.total else 0.0


def split_pairs(seed: int, n_eval: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(training pairs, held-out pairs): a held-out pair is never trained in either order."""
    rng = random.Random(seed)
    unordered = [(a, b) for a in range(10, 100) for b in range(a, 100)]
    rng.shuffle(unordered)
    held = set(unordered[:n_eval])
    train = [(a, b) for a in range(10, 100) for b in range(10, 100) if (min(a, b), max(a, b)) not in held]
    held_out = [(b, a) if rng.random() < 0.5 else (a, b) for a, b in unordered[:n_eval]]
    return train, held_out


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


def make_records(pairs: list[tuple[int, int]], n: int, multi_fraction: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    records = []
    for _ in range(n):
        turns = 2 if rng.random() < multi_fraction else 1
        messages = [{"role": "system", "content": SYSTEM}]
        for a, b in rng.sample(pairs, turns):
            messages += [{"role": "user", "content": question(a, b)}, {"role": "assistant", "content": str(a + b)}]
        records.append({"messages": messages})
    return records


def train_config(demo: DemoConfig, data_dir: Path, out_dir: Path, quiet: bool) -> TrainConfig:
    return TrainConfig(
        data_dir=str(data_dir),
        out_dir=str(out_dir),
        model="tiny",
        tiny=demo.tiny,
        batch_size=demo.batch_size,
        max_steps=demo.max_steps,
        lr=demo.lr,
        min_lr_ratio=demo.min_lr_ratio,
        warmup_steps=demo.warmup_steps,
        weight_decay=demo.weight_decay,
        seed=demo.seed,
        overwrite=True,
        quiet=quiet,
        log_every=max(1, demo.max_steps // 6),
        tensorboard=False,
    )


def evaluate(model_dir: Path, pairs: list[tuple[int, int]]) -> tuple[int, list[tuple[str, str, str]]]:
    """(number answered exactly, every (question, expected, answer))."""
    from sftprep.train.generate import generate, load_for_generation

    model, renderer = load_for_generation(model_dir, device="cpu")
    results = []
    for a, b in pairs:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(a, b)}]
        got = generate(model, renderer, messages, max_new_tokens=4).strip()
        results.append((question(a, b), str(a + b), got))
    return sum(exp == got for _, exp, got in results), results


def run_mask(demo: DemoConfig, mask: str, records_file: Path, work: Path, quiet: bool, threads: int = 1) -> DemoRow:
    """Prepare with `mask`, train, score. Tiny matrices: one intra-op thread is as fast as two on a
    quiet machine and much faster on a busy one (threads wait on each other at every op)."""
    import torch

    import sftprep
    from sftprep.train.loop import train

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        data_dir, model_dir = work / f"data-{mask}", work / f"model-{mask}"
        sftprep.prepare(str(records_file), str(data_dir), tokenizer=None, template="chatml", mask=mask, overwrite=True)
        result = train(train_config(demo, data_dir, model_dir, quiet))
        _, held_out = split_pairs(demo.seed, demo.eval_questions)
        correct, samples = evaluate(model_dir, held_out)
    finally:
        torch.set_num_threads(before)
    return DemoRow(
        mask=mask,
        steps=result.steps,
        train_seconds=result.seconds,
        total_seconds=time.perf_counter() - t0,
        correct=correct,
        total=len(held_out),
        final_loss=result.losses[-1],
        samples=samples,
    )


def _run_mask_quietly(args: tuple[DemoConfig, str, Path, Path, int]) -> DemoRow:
    demo, mask, records_file, work, threads = args
    return run_mask(demo, mask, records_file, work, True, threads)


DEMO_MARKER = "sftprep_demo.json"
DEMO_FILES = (DEMO_MARKER, "results.json", "addition.jsonl", "data-*", "model-*", ".data-*", ".model-*")


def open_work_dir(work: Path, overwrite: bool, stack: contextlib.ExitStack) -> None:
    """Lock the work directory; replace it (--overwrite) only when an earlier demo wrote it."""
    from sftprep.errors import ConfigError
    from sftprep.outdir import check_replaceable, make_staging, out_dir_lock, replace_dir

    if work.exists() and not work.is_dir():
        raise ConfigError(f"--out-dir {work} is a file, not a directory; choose another --out-dir")
    stack.enter_context(out_dir_lock(work, "demo"))
    if work.exists() and any(work.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"--out-dir {work} exists; pass --overwrite to replace an earlier demo's directory, or choose "
                "another --out-dir"
            )
        check_replaceable(work, (DEMO_MARKER,), DEMO_FILES)
        replace_dir(make_staging(work, (DEMO_MARKER,)), work, (DEMO_MARKER,), DEMO_FILES)
    work.mkdir(parents=True, exist_ok=True)
    (work / DEMO_MARKER).write_text(json.dumps({"started": time.time()}) + "\n", "utf-8")


def run_demo(
    out_dir: str | Path = "sftprep-demo",
    quick: bool = False,
    masks: tuple[str, ...] = MASKS,
    quiet: bool = False,
    demo: DemoConfig | None = None,
    threads: int = 1,
    parallel: bool | None = None,
    overwrite: bool = False,
) -> list[DemoRow]:
    """Run every mask (in parallel processes, `threads` each, when there are cores for them)."""
    with contextlib.ExitStack() as stack:
        open_work_dir(Path(out_dir), overwrite, stack)
        return _run_demo(Path(out_dir), quick, masks, quiet, demo, threads, parallel)


def _run_demo(
    work: Path,
    quick: bool,
    masks: tuple[str, ...],
    quiet: bool,
    demo: DemoConfig | None,
    threads: int,
    parallel: bool | None,
) -> list[DemoRow]:
    demo = demo or (QUICK if quick else DemoConfig())
    train_pairs, _ = split_pairs(demo.seed, demo.eval_questions)
    records_file = work / "addition.jsonl"
    records = make_records(train_pairs, demo.train_records, demo.multi_turn_fraction, demo.seed)
    records_file.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    console = Console(stderr=True, quiet=quiet)
    if parallel is None:
        parallel = len(masks) > 1 and (os.cpu_count() or 1) >= len(masks) * threads
    what = f"{demo.train_records} chats, {demo.max_steps} steps of {demo.batch_size} on CPU"
    if parallel:
        console.print(f"[bold]demo[/]: masks {', '.join(masks)} in parallel ({what}, {threads} thread(s) each)")
        with ProcessPoolExecutor(len(masks), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_mask_quietly, (demo, m, records_file, work, threads)) for m in masks]
            _follow(futures, masks, work, demo.max_steps, console)
            rows = [f.result() for f in futures]
    else:
        rows = []
        for mask in masks:
            console.print(f"[bold]demo[/]: mask {mask!r}: {what}")
            rows.append(run_mask(demo, mask, records_file, work, quiet, threads))
    (work / "results.json").write_text(json.dumps([_row_json(r) for r in rows], indent=2) + "\n", "utf-8")
    return rows


def _follow(futures: list[Future[DemoRow]], masks: tuple[str, ...], work: Path, total: int, console: Console) -> None:
    """Progress of the parallel runs (step, loss, tokens/s, ETA), read from each run's train_log.jsonl."""
    from sftprep.train.monitor import read_log

    columns = (
        TextColumn("[bold]{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console, transient=False, disable=console.quiet) as progress:
        tasks = {m: progress.add_task(m, total=total, stats="preparing") for m in masks}
        while not all(f.done() for f in futures):
            for mask, future in zip(masks, futures):
                try:
                    rows = read_log(work / f"model-{mask}")
                except (OSError, ValueError):  # a line being written
                    continue
                if future.done():
                    stats = "done"
                elif rows:
                    last = rows[-1]
                    stats = f"loss {last['loss']:.4f}  {last['tokens_per_s']:,.0f} tok/s"
                    stats += "  evaluating" if last["step"] == total else ""
                else:
                    continue
                progress.update(tasks[mask], completed=rows[-1]["step"] if rows else total, stats=stats)
            time.sleep(0.5)


def _row_json(r: DemoRow) -> dict[str, Any]:
    d = {k: v for k, v in r.__dict__.items() if k != "samples"}
    return {**d, "exact_match": r.exact_match, "wrong": [s for s in r.samples if s[1] != s[2]][:20]}


def results_table(rows: list[DemoRow]) -> Table:
    table = Table(title="sftprep demo: two-digit addition, held-out pairs, greedy exact match")
    for col in ("mask", "steps", "train time", "total time", "final loss", "exact match"):
        table.add_column(col, justify="left" if col == "mask" else "right")
    for r in rows:
        table.add_row(
            r.mask,
            str(r.steps),
            f"{r.train_seconds:.1f} s",
            f"{r.total_seconds:.1f} s",
            f"{r.final_loss:.4f}",
            f"{r.exact_match:.1%} ({r.correct}/{r.total})",
        )
    return table


def with_overrides(demo: DemoConfig, **changes: Any) -> DemoConfig:
    return replace(demo, **{k: v for k, v in changes.items() if v is not None})
