"""`sftprep train` against TRL's SFTTrainer on the same prepared data, model, cores and global batch.

    python benchmarks/train_vs_trl.py                 # CPU: the issue's setting (96 Alpaca examples, qwen2.5
                                                      # vocabulary, Qwen2 hidden 64 x 2 layers, batch 8, 2 threads)
    python benchmarks/train_vs_trl.py --device cuda   # GPU: bf16, sdpa / flash-attention varlen, packing on/off,
                                                      # gradient checkpointing on/off, FSDP on 1 GPU, MFU

Both train a Qwen2-architecture model built from a config (random weights, seed 0, saved once; no
download) on a directory prepared by `sftprep prepare` (TRL reads its Parquet with `datasets`). TRL gets
the examples in sftprep's step order with a sequential sampler, so every step sees the same batch and
the losses of the first steps must agree (AdamW with the same betas/eps, cosine from step 0, no weight
decay, clip 1.0, fp32 on CPU). Each run is a fresh process, one after the other (same cores).
tokens/s = real (non-pad) tokens / wall time from the first step's start to the last step's end.
Peak memory: CPU, the process's peak RSS and the rise over the RSS before training; GPU,
torch.cuda.max_memory_allocated. Needs trl (pip install 'sftprep[bench]') and ../shared data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ALPACA = SHARED / "data" / "llama_factory" / "alpaca_en_demo.json"
QWEN = SHARED / "tokenizers" / "qwen2.5"
LOSS_TOL = 1e-4
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16


# ------------------------------------------------------------------------------------------ inputs
def build_inputs(a: argparse.Namespace) -> tuple[Path, Path]:
    """(prepared data dir, model dir) for these settings, built once and cached."""
    key = hashlib.sha256(json.dumps([a.examples, a.hidden, a.layers, a.heads, a.kv_heads]).encode()).hexdigest()[:12]
    work = Path(a.work) / key
    data, model = work / "data", work / "model"
    if (data / "manifest.json").is_file() and (model / "config.json").is_file():
        return data, model
    import shutil

    import sftprep

    work.mkdir(parents=True, exist_ok=True)
    rows = json.loads(ALPACA.read_text("utf-8"))[: a.examples]
    src = work / "alpaca.json"
    src.write_text(json.dumps(rows), "utf-8")
    sftprep.prepare(str(src), str(data), tokenizer=str(QWEN), overwrite=True)

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=151_936, hidden_size=a.hidden, intermediate_size=4 * a.hidden, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=151_643, eos_token_id=151_645, attention_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(str(model))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(QWEN / name, model / name)
    return data, model


def step_order(data: Path, batch: int, steps: int, seed: int) -> list[list[int]]:
    """The example indices of each step of `sftprep train` (no packing, one process)."""
    from sftprep.train.data import StepPlan, load_examples

    examples, _ = load_examples(data)
    plan = StepPlan(len(examples), batch, 1, 1, seed)
    return [plan.micro_batches(s)[0].tolist() for s in range(steps)]


# ------------------------------------------------------------------------------------------ memory
class PeakRSS:
    """Samples this process's RSS every 5 ms: the rise over the value at start."""

    def __init__(self) -> None:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def memory(device: str, rss: PeakRSS) -> dict[str, float]:
    if device == "cuda":
        import torch

        return {"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}
    return {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_rise_mib": (rss.peak - rss.start) / 2**20,
    }


# ------------------------------------------------------------------------------------------ workers
def run_sftprep(spec: dict[str, Any]) -> dict[str, Any]:
    from sftprep.train.cli_options import resolve
    from sftprep.train.loop import train

    options = {
        "batch_size": spec["batch"], "max_steps": spec["steps"], "lr": spec["lr"], "warmup_steps": 0,
        "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 0, "threads": spec.get("threads"),
        "precision": spec["precision"], "tensorboard": False, "quiet": True, "overwrite": True,
        **spec.get("sftprep", {}),
    }  # fmt: skip
    cfg = resolve(spec["data"], {"out_dir": spec["out"], "model": spec["model"], **options})
    with PeakRSS() as rss:
        result = train(cfg)
    return {
        "losses": result.losses, "tokens_per_s": result.tokens_per_s, "seconds": result.seconds,
        "padding_efficiency": result.padding_efficiency, **memory(spec["device"], rss),
    }  # fmt: skip


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    import datasets
    import torch
    import trl
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    ds = datasets.load_dataset("parquet", data_files=spec["shards"], split="train", cache_dir=spec["cache"])
    ds = ds.select([i for step in spec["order"] for i in step]).select_columns(["input_ids", "labels"])
    bf16 = spec["precision"] == "bf16"
    kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float32, "attn_implementation": spec.get("attn", "sdpa")}
    model = AutoModelForCausalLM.from_pretrained(spec["model"], **kwargs)
    losses: list[float] = []
    clock: dict[str, float] = {}

    class Trainer(trl.SFTTrainer):
        def _get_train_sampler(self, *args: Any, **kw: Any) -> Any:  # sftprep's order, step by step
            return SequentialSampler(self.train_dataset)

        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kw: Any) -> Any:
            out = super().compute_loss(model, inputs, *args, **kw)
            loss = out[0] if isinstance(out, tuple) else out
            if model.training:
                losses.append(float(loss.detach().float()))
            return out

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            clock.setdefault("start", time.perf_counter())

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if spec["device"] == "cuda":
                torch.cuda.synchronize()
            clock["end"] = time.perf_counter()

    args = trl.SFTConfig(
        output_dir=spec["out"], max_steps=spec["steps"], per_device_train_batch_size=spec["batch"],
        learning_rate=spec["lr"], lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=spec["device"] == "cpu", bf16=bf16, seed=0,
        dataloader_num_workers=0, max_length=None, gradient_checkpointing=spec.get("gc", False),
        packing=spec.get("packing", False), padding_free=spec.get("padding_free", False),
    )  # fmt: skip
    tok = AutoTokenizer.from_pretrained(spec["model"])
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    if spec["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        trainer.train()
    seconds = clock["end"] - clock["start"]
    return {
        "losses": losses,
        "tokens_per_s": spec["tokens"] / seconds,
        "seconds": seconds,
        **memory(spec["device"], rss),
    }


def worker(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    result = (run_sftprep if spec["framework"] == "sftprep" else run_trl)(spec)
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------------------ driver
def variants(device: str) -> list[dict[str, Any]]:
    if device == "cpu":  # TRL on CPU: no flash attention, so padding (its padding-free mode needs varlen kernels)
        return [
            {"name": "sftprep (padded batches)", "framework": "sftprep", "precision": "fp32"},
            {"name": "sftprep --gradient-checkpointing", "framework": "sftprep", "precision": "fp32",
             "sftprep": {"gradient_checkpointing": True}},
            {"name": "TRL SFTTrainer (padding)", "framework": "trl", "precision": "fp32"},
        ]  # fmt: skip
    fa = _has_flash_attn()
    attn = "flash_attention_2" if fa else "sdpa"
    out = [
        {"name": "sftprep bf16 sdpa padded", "framework": "sftprep", "precision": "bf16"},
        {"name": f"sftprep bf16 {attn} packing", "framework": "sftprep", "precision": "bf16",
         "sftprep": {"packing": True, "max_length": 4096, "attn_implementation": attn}},
        {"name": "sftprep bf16 padded + gradient checkpointing", "framework": "sftprep", "precision": "bf16",
         "sftprep": {"gradient_checkpointing": True}},
        {"name": "sftprep bf16 FSDP (1 GPU)", "framework": "sftprep", "precision": "bf16",
         "sftprep": {"sharding": "fsdp"}},
        {"name": "TRL bf16 sdpa padding", "framework": "trl", "precision": "bf16"},
        {"name": "TRL bf16 padding + gradient checkpointing", "framework": "trl", "precision": "bf16", "gc": True},
    ]  # fmt: skip
    if fa:  # TRL's recommendation with flash attention: packing (bfd) without padding
        out.append({"name": "TRL bf16 flash-attn packing (bfd, padding-free)", "framework": "trl",
                    "precision": "bf16", "attn": attn, "packing": True, "padding_free": True})  # fmt: skip
    return out


def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def run_variant(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    spec_file = work / f"spec-{abs(hash(spec['name']))}.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.get("threads") or os.cpu_count())}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(spec_file)], capture_output=True, text=True, env=env
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{spec['name']} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def mfu(tokens_per_s: float, params: int, a: argparse.Namespace, seq: float) -> float | None:
    """Model FLOPs utilisation: (6 N + 12 L H S) FLOPs per token (the full LM head counted)."""
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    peak = a.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if not peak:
        return None
    return tokens_per_s * (6 * params + 12 * a.layers * a.hidden * seq) / (peak * 1e12)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--examples", type=int, default=96)
    p.add_argument("--steps", type=int, default=None, help="default: one epoch (examples / batch)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    p.add_argument("--hidden", type=int, default=None, help="default 64 on CPU, 1024 on GPU")
    p.add_argument("--layers", type=int, default=None, help="default 2 on CPU, 12 on GPU")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 peak for MFU (default: by name)")
    p.add_argument("--work", default=os.environ.get("SFTPREP_BENCH_CACHE", "/tmp/sftprep-train-vs-trl"))
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker)
    if not ALPACA.is_file() or not QWEN.is_dir():
        raise SystemExit(f"needs {ALPACA} and {QWEN} (the shared data beside the project)")
    gpu = a.device == "cuda"
    a.hidden, a.layers = a.hidden or (1024 if gpu else 64), a.layers or (12 if gpu else 2)
    a.heads, a.kv_heads = max(1, a.hidden // 64) if gpu else 4, max(1, a.hidden // 256) if gpu else 2
    steps = a.steps or a.examples // a.batch
    data, model = build_inputs(a)
    from sftprep.api import shard_paths
    from sftprep.train.data import load_examples

    order = step_order(data, a.batch, steps, 0)
    examples, _ = load_examples(data)
    tokens = sum(len(examples[i]) for step in order for i in step)
    work = Path(a.work)
    common = {
        "device": a.device, "data": str(data), "model": str(model), "shards": [str(s) for s in shard_paths(data)],
        "order": order, "tokens": tokens, "batch": a.batch, "steps": steps, "lr": a.lr,
        "threads": None if gpu else a.threads, "cache": str(work / "hf-cache"),
    }  # fmt: skip
    rows = []
    for v in variants(a.device):
        spec = {**common, **v, "out": str(work / "out" / v["framework"])}
        t0 = time.perf_counter()
        result = run_variant(spec, work)
        rows.append({**v, **result, "wall_s": time.perf_counter() - t0})
        print(f"{v['name']}: {result['tokens_per_s']:,.0f} tok/s", file=sys.stderr)
    report(rows, a, tokens, steps, model)


def report(rows: list[dict[str, Any]], a: argparse.Namespace, tokens: int, steps: int, model: Path) -> None:
    import torch
    import transformers
    import trl
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(model))
    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    ref = next(r for r in rows if r["framework"] == "sftprep")
    trl_row = next(r for r in rows if r["framework"] == "trl")
    n = min(len(ref["losses"]), len(trl_row["losses"]))
    diffs = [abs(x - y) for x, y in zip(ref["losses"][:n], trl_row["losses"][:n])]
    mem = "peak_gpu_mib" if a.device == "cuda" else "peak_rss_mib"
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {a.device}"
    print(f"\n{time.strftime('%Y-%m-%d')}, {machine}; {versions}")
    threads = a.threads if a.device == "cpu" else "-"
    print(
        f"Qwen2 hidden {a.hidden} x {a.layers} layers, vocab {cfg.vocab_size:,}, {params:,} parameters; "
        f"{a.examples} Alpaca examples, batch {a.batch}, {steps} steps, {tokens:,} real tokens; threads {threads}"
    )
    print(f"\n| run | tokens/s | vs TRL | peak memory MiB{' (rise)' if a.device == 'cpu' else ''} | final loss |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        rise = f" ({r['rss_rise_mib']:,.0f})" if "rss_rise_mib" in r else ""
        print(f"| {r['name']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / trl_row['tokens_per_s']:.2f}x | "
              f"{r[mem]:,.0f}{rise} | {r['losses'][-1]:.4f} |")  # fmt: skip
    print(
        f"\nloss, first {n} steps, sftprep vs TRL (same batches): max |diff| {max(diffs):.2e} "
        f"({'PASS' if max(diffs) <= LOSS_TOL else 'FAIL'}, bound {LOSS_TOL})"
    )
    print(
        "step losses (sftprep / TRL): "
        + ", ".join(f"{x:.5f}/{y:.5f}" for x, y in zip(ref["losses"][:4], trl_row["losses"][:4]))
    )
    ratio = ref["tokens_per_s"] / trl_row["tokens_per_s"]
    print(
        f"sftprep / TRL tokens/s: {ratio:.2f}x"
        + (f" ({'PASS' if ratio >= 4 else 'FAIL'}, target >= 4 on CPU)" if a.device == "cpu" else "")
    )
    if a.device == "cuda":
        for r in rows:
            u = mfu(r["tokens_per_s"], params, a, tokens / (steps * a.batch))
            print(
                f"MFU {r['name']}: {u:.1%}" if u is not None else f"MFU {r['name']}: unknown GPU peak (--peak-tflops)"
            )
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "loss_max_diff": max(diffs), "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
