"""Training: what applying the LM head only at trained positions saves, and packing efficiency.

Run: .venv/bin/python benchmarks/train_head_gather.py [--vocab 32000 --hidden 128 --layers 2 --batch 8 --steps 5]
     .venv/bin/python benchmarks/train_head_gather.py --packing

Head gather: each variant runs in its own process (clean peak RSS) on the same batches of real prepared
examples (assistant-only labels): "full" = HF forward ([B, S, V] logits) + masked cross-entropy,
"gather" = sftprep's SFTLoss (base model -> hidden[trained] -> LM head -> cross-entropy). Reported:
median seconds per step (forward + backward) and peak RSS above the process's RSS before the first step.
Packing: real tokens / row capacity of best-fit-decreasing rows vs real tokens / padded tokens of
random batches of 8 (what padding to the longest example costs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {
    "fastchat dummy_conversation (multi-turn)": SHARED / "fastchat" / "dummy_conversation.json",
    "llama_factory alpaca_en_demo": SHARED / "llama_factory" / "alpaca_en_demo.json",
    "alpaca_data_cleaned gsm_8k_train": SHARED / "alpaca_data_cleaned" / "gsm_8k_train.json",
}


def prepared(path: Path, work: Path) -> Path:
    import sftprep

    out = work / path.stem
    if not (out / "manifest.json").is_file():
        sftprep.prepare(str(path), str(out), overwrite=True)  # embedded tokenizer, chatml, assistant-only
    return out


def demo_data(work: Path) -> Path:
    from sftprep.train.demo import make_records, split_pairs

    src = work / "addition.jsonl"
    train_pairs, _ = split_pairs(0, 200)
    src.write_text("".join(json.dumps(r) + "\n" for r in make_records(train_pairs, 4000, 0.25, 0)))
    return prepared(src, work)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------------------- head gather
def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from sftprep.train.config import TinyModelConfig
    from sftprep.train.data import collate_padded, load_examples
    from sftprep.train.loss import SFTLoss, full_logits_loss
    from sftprep.train.model import tiny_llama

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    examples, _ = load_examples(args.data, max_length=args.seq)
    rng = np.random.default_rng(0)
    batches = [collate_padded([examples[i] for i in rng.choice(len(examples), args.batch)], 0) for _ in range(4)]
    tiny = TinyModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=4, tie_word_embeddings=False)
    model = tiny_llama(args.vocab, tiny, pad_id=0, eos_id=1, seed=0)
    loss_module = SFTLoss(model)

    def step(k: int) -> float:
        b = batches[k % len(batches)]
        loss = full_logits_loss(model, b) if args.worker == "full" else loss_module(**b.tensors())
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss)

    base = rss_bytes()
    losses = [step(0)]  # warm-up
    times = []
    for k in range(1, args.steps + 1):
        t0 = time.perf_counter()
        losses.append(step(k))
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokens = sum(b.padded_tokens for b in batches) / len(batches)
    trained = sum(b.n_trainable for b in batches) / len(batches)
    return {
        "variant": args.worker,
        "seconds_per_step": statistics.median(times),
        "peak_rss_above_base_mib": (peak - base) / 2**20,
        "first_loss": losses[0],
        "positions": tokens,
        "trained_positions": trained,
    }


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", variant, "--data", str(args.data)]
    for k in ("vocab", "hidden", "layers", "batch", "seq", "steps", "threads"):
        cmd += [f"--{k}", str(getattr(args, k))]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def head_gather(args: argparse.Namespace, work: Path) -> None:
    src = next((p for name, p in DATASETS.items() if p.is_file() and args.dataset in name), None)
    args.data = prepared(src, work) if src else demo_data(work)
    rows = [run_variant(v, args) for v in ("full", "gather")]
    full, gather = rows
    assert abs(full["first_loss"] - gather["first_loss"]) <= 1e-4 * abs(full["first_loss"]), rows
    print(
        f"data: {src or 'demo additions'}; {args.threads} thread(s); vocab {args.vocab}, hidden {args.hidden}, "
        f"{args.layers} layers, "
        f"batch {args.batch} (padded positions/step {full['positions']:.0f}, trained {full['trained_positions']:.0f})"
    )
    print("| variant | s/step (fwd+bwd) | peak RSS above base (MiB) |")
    print("|---|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['seconds_per_step']:.3f} | {r['peak_rss_above_base_mib']:.0f} |")
    print(
        f"saving: {1 - gather['seconds_per_step'] / full['seconds_per_step']:.0%} time, "
        f"{1 - gather['peak_rss_above_base_mib'] / full['peak_rss_above_base_mib']:.0%} peak memory"
    )


# ----------------------------------------------------------------------------------------- packing
def packing(work: Path) -> None:
    from sftprep.train.data import load_examples, pack_best_fit_decreasing

    sets = {name: p for name, p in DATASETS.items() if p.is_file()}
    data = {name: prepared(p, work) for name, p in sets.items()}
    data["demo additions (4,000 chats)"] = demo_data(work)
    print("| data | examples | mean tokens | padded batches of 8 | BFD 1024 | BFD 2048 | BFD 4096 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name, d in data.items():
        examples, _ = load_examples(d)
        lengths = [len(e) for e in examples]
        order = rng.permutation(len(lengths))
        batches = [order[i : i + 8] for i in range(0, len(order) - 7, 8)]
        padded = sum(sum(lengths[i] for i in b) for b in batches) / sum(8 * max(lengths[i] for i in b) for b in batches)
        cells = []
        for cap in (1024, 2048, 4096):
            fit = [n for n in lengths if n <= cap]
            t0 = time.perf_counter()
            rows = pack_best_fit_decreasing(fit, cap)
            dt = time.perf_counter() - t0
            cells.append(f"{sum(fit) / (len(rows) * cap):.1%} ({len(rows)} rows, {dt * 1000:.0f} ms)")
        print(f"| {name} | {len(lengths):,} | {np.mean(lengths):.0f} | {padded:.1%} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=["full", "gather"])
    p.add_argument("--data", type=Path)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024, help="drop longer examples")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    p.add_argument("--dataset", default="fastchat", help="a substring of a name in DATASETS (../shared)")
    p.add_argument("--packing", action="store_true")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    work = Path(os.environ.get("SFTPREP_BENCH_CACHE", tempfile.gettempdir())) / "sftprep-train-bench"
    work.mkdir(parents=True, exist_ok=True)
    if args.packing:
        packing(work)
    else:
        head_gather(args, work)


if __name__ == "__main__":
    main()
