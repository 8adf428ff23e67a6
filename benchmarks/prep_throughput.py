"""Preparation throughput of `sftprep prepare` vs the raw-tokenizer floor and TRL's SFTTrainer (issue #5).

Run: .venv/bin/python benchmarks/prep_throughput.py [--only all|main|rss|turns|workers] [--workers N] [--repeat N]
See benchmarks/README.md for what is measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_corpus import CACHE, TOK_DIR, ensure_corpus

ROOT = Path(__file__).resolve().parents[1]
RUNS = CACHE / "runs"
CLI = str(Path(sys.executable).parent / "sftprep")
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Preparation throughput"
Result = dict[str, Any]
Row = tuple[str, str, str]
# An exec'd wrapper measures the child: Linux carries a forking process's peak RSS over exec, so a child spawned
# straight from this (large) process would report at least our own peak.
_WRAP = (
    "import json,resource as r,subprocess as s,sys,time;t=time.perf_counter();"
    "rc=s.call(sys.argv[2:],stdout=s.DEVNULL);w=time.perf_counter()-t;u=r.getrusage(r.RUSAGE_CHILDREN);"
    "json.dump({'rc':rc,'s':w,'cpu':u.ru_utime+u.ru_stime,'kb':u.ru_maxrss},open(sys.argv[1],'w'))"
)


# -- runners: each returns {"seconds": wall, "cpu": user + system seconds, "tokens", ...} -----------------------
class WorkersUnsupported(Exception): ...  # sftprep rejected --workers


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its reaped children."""
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime


def run_cli(inputs: list[str], out: Path, workers: int = 1) -> Result:
    """`sftprep prepare` in a fresh process: wall and CPU seconds (startup included), peak RSS, manifest."""
    shutil.rmtree(out, ignore_errors=True)  # an up-to-date OUT_DIR would make the run a no-op
    cmd = [CLI, "prepare", *inputs, "-o", str(out), "--tokenizer", str(TOK_DIR), "--overwrite", "-q"]
    cmd += ["--workers", str(workers)]
    out.parent.mkdir(parents=True, exist_ok=True)
    stat = out.parent / f"{out.name}.json"
    proc = subprocess.run([sys.executable, "-c", _WRAP, str(stat), *cmd], stderr=subprocess.PIPE, text=True)
    m = json.loads(stat.read_text()) if stat.exists() else {"rc": proc.returncode}
    if m["rc"] != 0 and workers != 1 and "workers" in proc.stderr:
        raise WorkersUnsupported(proc.stderr.strip().splitlines()[-1])
    if m["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {m['rc']}:\n{proc.stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"seconds": m["s"], "cpu": m["cpu"], "rss_mb": m["kb"] / 1024, "manifest": manifest,
            "tokens": manifest["tokens"]}  # fmt: skip


def run_api(inputs: list[str], out: Path, workers: int = 1) -> Result:
    """`sftprep.prepare` in this process (imports already done; the tokenizer load is included)."""
    import sftprep

    extra = {"workers": workers}
    shutil.rmtree(out, ignore_errors=True)  # an up-to-date OUT_DIR would make the run a no-op
    t0, c0 = time.perf_counter(), _cpu()
    try:
        manifest = sftprep.prepare(inputs, out_dir=str(out), overwrite=True, tokenizer=str(TOK_DIR), **extra)
    except TypeError as e:
        if "workers" in str(e):
            raise WorkersUnsupported(str(e)) from e
        raise
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "manifest": manifest,
            "tokens": manifest["tokens"]}  # fmt: skip


def best(fn: Callable[..., Result], inputs: list[str], out: Path, workers: int, repeat: int = 1, *,
         fallback: bool = True) -> Result:  # fmt: skip
    """The fastest of `repeat` sftprep runs; without --workers (and saying so) when sftprep rejects it."""
    try:
        return min((fn(inputs, out, workers) for _ in range(repeat)), key=lambda r: r["seconds"])
    except WorkersUnsupported as e:
        print(f"workers not supported yet ({e})" + ("; running without --workers" if fallback else ""))
        if not fallback:
            raise
        return best(fn, inputs, out, 1, repeat)


def run_floor(texts: list[str], repeat: int = 1, configured: bool = False) -> Result:
    """HF tokenizers' batch encode (offsets included) of the already-rendered texts: the floor. `configured`:
    the backend as transformers sets it up from tokenizer_config.json (what transformers, TRL and sftprep
    encode with; for qwen2.5 it adds an NFC normalizer the file lacks), shown for reference."""
    from tokenizers import Tokenizer

    if configured:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(TOK_DIR)).backend_tokenizer
    else:
        tok = Tokenizer.from_file(str(TOK_DIR / "tokenizer.json"))
    runs = []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu()
        encs = tok.encode_batch(texts, add_special_tokens=False)
        runs.append({"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0})
    return min(runs, key=lambda r: r["seconds"]) | {"tokens": sum(len(e.ids) for e in encs)}


def run_trl(corpus: Path) -> Result:
    """TRL's SFTTrainer dataset preparation with assistant_only_loss=True, dataset_num_proc = core count."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # forked map workers; unset again for the sftprep runs
    try:
        import datasets
        from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
        from transformers import logging as hf_logging
        from trl import SFTConfig, SFTTrainer
        from trl import __version__ as trl_version

        datasets.disable_caching()
        datasets.disable_progress_bars()
        hf_logging.set_verbosity_error()
        warnings.filterwarnings("ignore", category=FutureWarning)
        tok = AutoTokenizer.from_pretrained(str(TOK_DIR))
        t0 = time.perf_counter()
        ds = datasets.Dataset.from_list([json.loads(line) for line in corpus.open(encoding="utf-8")])
        load_s = time.perf_counter() - t0
        # A tiny random model (nothing can be downloaded): only the trainer's data plumbing matters here.
        cfg = Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
        args = SFTConfig(output_dir=str(RUNS / "trl"), assistant_only_loss=True, dataset_num_proc=os.cpu_count(),
                         max_length=None, report_to="none", use_cpu=True)  # fmt: skip
        # Construction swaps in TRL's Qwen2.5 training template ({% generation %} tags; the Qwen2.5 template has
        # none); the whole corpus then goes through the same _prepare_dataset that the constructor calls.
        trainer = SFTTrainer(model=Qwen2ForCausalLM(cfg), args=args, train_dataset=ds.select(range(8)),
                             processing_class=tok)  # fmt: skip
        t0, c0 = time.perf_counter(), _cpu()
        out = trainer._prepare_dataset(ds, tok, args, False, None, "bench")
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        trainable = sum(sum(v != -100 for v in labels) for labels in out["labels"])
        return {"seconds": seconds, "cpu": cpu, "load_seconds": load_s, "tokens": sum(map(len, out["input_ids"])),
                "trainable": trainable, "version": trl_version,
                "template": "TRL's training template" if trainer.chat_template else "the tokenizer's own"}  # fmt: skip
    finally:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)


# -- sub-benchmarks: each measures, then returns its rows for the table ------------------------------------------
def _tps(r: Result) -> str:
    return f"{r['tokens'] / r['seconds']:,.0f} tok/s ({r['seconds']:.2f} s wall, {r['cpu']:.2f} s CPU)"


def _ratio(a: Result, b: Result, per: str = "seconds") -> float:
    return (a["tokens"] / a[per]) / (b["tokens"] / b[per])


def _check(ok: bool, target: str) -> str:
    return f"{target}: {'PASS' if ok else 'FAIL'}"


def bench_main(meta: Result, workers: int, repeat: int) -> tuple[list[Row], Result]:
    d = Path(meta["dir"])
    cli = best(run_cli, [str(d / "corpus.jsonl")], RUNS / "cli", workers, repeat)
    api = best(run_api, [str(d / "corpus.jsonl")], RUNS / "api", workers, repeat)
    texts = json.loads((d / "rendered.json").read_text(encoding="utf-8"))
    floor = run_floor(texts, repeat)
    configured = run_floor(texts, repeat, configured=True)
    m = cli["manifest"]
    rows = [
        ("corpus", f"{meta['conversations']:,} conversations, {meta['tokens']:,} tokens (qwen2.5 + its template)", ""),
        (f"(1) `sftprep prepare --workers {workers}`, CLI, fresh process", _tps(cli), ""),
        (f"(1') `sftprep.prepare(workers={workers})`, in-process API", _tps(api), ""),
        ("sftprep tokens / trainable / examples", f"{m['tokens']:,} / {m['trainable_tokens']:,} / "
         f"{m['examples_written']:,} ({m['records_rejected']} rejected)", ""),
        ("(2) floor: tokenizers `encode_batch`", _tps(floor) + f"; {floor['tokens']:,} tokens", ""),
        ("(2') the same, tokenizer as transformers configures it", _tps(configured) + " (reference only)", ""),
        ("(1)/(2)", f"{_ratio(cli, floor):.2f} (API: {_ratio(api, floor):.2f}; tokens per CPU second: "
         f"{_ratio(cli, floor, 'cpu'):.2f})", _check(_ratio(cli, floor) >= 0.8, ">= 0.8")),
    ]  # fmt: skip
    try:
        trl = run_trl(d / "corpus.jsonl")
    except Exception as e:  # say exactly why the peer could not run
        print(f"TRL could not run: {type(e).__name__}: {e}")
        return [*rows, ("(3) TRL SFTTrainer preparation", f"could not run: {type(e).__name__}: {e}", "")], cli
    return [
        *rows,
        (f"(3) TRL {trl['version']} SFTTrainer preparation", _tps(trl), ""),
        ("TRL tokens / trainable", f"{trl['tokens']:,} / {trl['trainable']:,} ({trl['template']}; "
         f"Dataset.from_list {trl['load_seconds']:.2f} s, not timed)", ""),
        ("(1)/(3)", f"{_ratio(cli, trl):.2f} (API: {_ratio(api, trl):.2f}; tokens per CPU second: "
         f"{_ratio(cli, trl, 'cpu'):.2f})", _check(_ratio(cli, trl) >= 4, ">= 4")),
    ], cli  # fmt: skip


def bench_rss(meta: Result, workers: int, one: Result | None) -> list[Row]:  # 1x: the main CLI run if any
    d = Path(meta["dir"])
    one = one or best(run_cli, [str(d / "corpus.jsonl")], RUNS / "rss-1x", workers)
    ten = best(run_cli, [str(d / "corpus-10x.jsonl")], RUNS / "rss-10x", workers)
    rows = [(f"peak RSS, CLI, {k} corpus", f"{v['rss_mb']:,.0f} MiB; {v['tokens']:,} tokens, {_tps(v)}", "")
            for k, v in (("1x", one), ("10x", ten))]  # fmt: skip
    ratio = ten["rss_mb"] / one["rss_mb"]
    return [*rows, ("peak RSS 10x / 1x", f"{ratio:.2f}", _check(ratio <= 1.2, "<= 1.2"))]


def bench_turns(meta: Result, workers: int, repeat: int) -> list[Row]:
    d = Path(meta["dir"])
    run_api([str(d / "turns-2.jsonl")], RUNS / "warm")  # imports and template compilation out of the way
    r = {n: best(run_api, [str(d / f"turns-{n}.jsonl")], RUNS / f"turns-{n}", workers, repeat) for n in ("2", "40")}
    rows = [(f"{n}-turn conversations, API", f"{_tps(v)}; {v['manifest']['records_read']:,} conversations, "
             f"{v['tokens']:,} tokens", "") for n, v in r.items()]  # fmt: skip
    cost = _ratio(r["2"], r["40"])
    return [*rows, ("time per token, 40-turn / 2-turn", f"{cost:.2f}", _check(cost <= 1.5, "<= 1.5"))]


def bench_workers(meta: Result, repeat: int) -> list[Row]:
    corpus = [str(Path(meta["dir"]) / "corpus.jsonl")]
    try:
        two = best(run_cli, corpus, RUNS / "w2", 2, repeat, fallback=False)
    except WorkersUnsupported:
        return [("`--workers 2`", "workers not supported yet", "")]
    one = best(run_cli, corpus, RUNS / "w1", 1, repeat)
    shards = [[p.read_bytes() for p in sorted((RUNS / w).glob("data-*.parquet"))] for w in ("w1", "w2")]
    same = shards[0] == shards[1]
    return [
        ("CLI, workers=1", _tps(one), ""),
        ("CLI, `--workers 2`", _tps(two) + f"; speed-up {one['seconds'] / two['seconds']:.2f}x", ""),
        ("data-*.parquet, workers 1 vs 2", f"{len(shards[0])} shard(s), bytes {'identical' if same else 'DIFFER'}",
         _check(same, "identical")),
    ]  # fmt: skip


# -- report ------------------------------------------------------------------------------------------------------
def environment() -> str:
    from importlib.metadata import distributions

    have = {d.metadata["Name"].lower(): d.version for d in distributions()}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())  # fmt: skip
    pkgs = ", ".join(f"{p} {have.get(p, 'absent')}" for p in ("sftprep", "tokenizers", "transformers", "trl",
                                                                "datasets", "torch"))  # fmt: skip
    return f"{os.cpu_count()} cores ({cpu}); Python {platform.python_version()}, {pkgs}"


def write_results(body: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, leaving other sections alone."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("" if end < 0 else text[end:])
    RESULTS.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["all", "main", "rss", "turns", "workers"], default="all")
    ap.add_argument("--workers", type=int, default=0, help="sftprep --workers for the timed runs (0: every core)")
    ap.add_argument("--repeat", type=int, default=1, help="report the fastest of N runs (not TRL, not RSS)")
    ap.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    a = ap.parse_args()
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    meta = ensure_corpus()
    print(f"corpus {meta['dir']}: {meta['conversations']:,} conversations, {meta['tokens']:,} tokens", flush=True)
    rows, cli = bench_main(meta, a.workers, a.repeat) if a.only in ("all", "main") else ([], None)
    rows += bench_rss(meta, a.workers, cli) if a.only in ("all", "rss") else []
    rows += bench_turns(meta, a.workers, a.repeat) if a.only in ("all", "turns") else []
    rows += bench_workers(meta, a.repeat) if a.only in ("all", "workers") else []
    shutil.rmtree(RUNS, ignore_errors=True)
    body = (
        f"{SECTION}\n\n`python benchmarks/prep_throughput.py --only {a.only} --workers {a.workers} --repeat "
        f"{a.repeat}` on {dt.date.today()}, {time.perf_counter() - t0:.0f} s in all; 1-min load average "
        f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (above the core count, other work shared "
        f"the cores: compare CPU seconds, not wall). {environment()}.\n\n"
        "| measurement | result | target |\n|---|---|---|\n" + "".join(f"| {x} | {y} | {z} |\n" for x, y, z in rows)
    )
    print("\n" + body)
    if not a.no_write:
        write_results(body)
        print(f"updated the '{SECTION}' section of {RESULTS}")


if __name__ == "__main__":
    main()
