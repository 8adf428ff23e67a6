"""Memory of a 1 GB Parquet input (issue #13): the readers stream, so RSS stays flat whatever the file's size.

Run: .venv/bin/python benchmarks/parquet_rss.py [--gb 1.0] [--workers 1] [--keep]

Writes, in a temporary directory (removed unless --keep), a Parquet file of chat rows (`messages` as
list<struct<role, content>>, the way Hugging Face Hub datasets store them; uncompressed, so that its size on
disk is the text's size; row groups of 10,000 rows) built from the Alpaca and ShareGPT sets in ../shared/data
(each row made unique), and a file of a tenth of it. Then, each in a fresh process:

1. reading alone: `read_records` over every row (the reader's own memory);
2. `sftprep prepare FILE -o OUT --workers N` end to end (read, render, tokenize with the embedded tokenizer,
   label, write Parquet);

sampling the RSS of the process (and its workers) every 0.25 s. Prints the peak, the RSS at 10/50/90% of the
run, and the peak of the 1 GB file over the peak of the tenth (flat: about 1).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
ROWS_PER_GROUP = 10_000


def seed_chats() -> list[list[dict[str, str]]]:
    """Conversations from the shared Alpaca and ShareGPT files (text only)."""
    out = []
    for name in ("llama_factory/alpaca_en_demo.json", "alpaca_data_cleaned/gsm_8k_train.json"):
        for r in json.loads((SHARED / name).read_text()):
            user = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
            out.append([{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}])
    roles = {"human": "user", "gpt": "assistant"}
    for r in json.loads((SHARED / "fastchat/dummy_conversation.json").read_text()):
        msgs = [{"role": roles[m["from"]], "content": m["value"]} for m in r["conversations"] if m["from"] in roles]
        if msgs and msgs[-1]["role"] == "assistant":
            out.append(msgs)
    return out


def write_parquet(path: Path, target_bytes: int) -> tuple[int, int]:
    """Row groups of ROWS_PER_GROUP rows until the text written reaches `target_bytes`; (rows, row groups)."""
    chats = seed_chats()
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("id", pa.int64()), ("messages", pa.list_(message))])
    rows = groups = written = 0
    with pq.ParquetWriter(path, schema, compression="none") as w:
        while written < target_bytes:
            batch = []
            for _ in range(ROWS_PER_GROUP):
                msgs = chats[rows % len(chats)]
                first = {"role": msgs[0]["role"], "content": f"[{rows}] {msgs[0]['content']}"}  # unique rows
                batch.append({"id": rows, "messages": [first, *msgs[1:]]})
                written += sum(len(m["content"]) + 12 for m in batch[-1]["messages"]) + 8
                rows += 1
            w.write_table(pa.Table.from_pylist(batch, schema=schema))
            groups += 1
    return rows, groups


def rss_kb(pid: int) -> int:
    """VmRSS of `pid` and its children (worker processes), in KiB."""
    total = 0
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def sampled(cmd: list[str]) -> dict[str, float]:
    """Run `cmd`, sampling RSS every 0.25 s: seconds, peak and RSS at 10/50/90% of the run (MiB)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int]] = []
    while proc.poll() is None:
        samples.append((time.monotonic() - start, rss_kb(proc.pid)))
        time.sleep(0.25)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    samples = [s for s in samples if s[1]] or [(0.0, 0)]

    def at(frac: float) -> float:
        return min(samples, key=lambda s: abs(s[0] - frac * seconds))[1] / 1024

    return {"seconds": seconds, "peak": max(k for _, k in samples) / 1024, "p10": at(0.1), "p50": at(0.5),
            "p90": at(0.9)}  # fmt: skip


READ_ONLY = (
    "import sys; from sftprep.read.records import read_records; "
    "n = sum(1 for r in read_records(sys.argv[1]) if r.error is None); print(n)"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of the big file in GB (default 1)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sftprep-parquet-rss-"))
    sftprep = [str(Path(sys.executable).parent / "sftprep")]
    try:
        results = {}
        for label, size in (("1/10", a.gb / 10), ("1x", a.gb)):
            path = tmp / f"chats-{label.replace('/', '_')}.parquet"
            t0 = time.monotonic()
            rows, groups = write_parquet(path, int(size * 1e9))
            built = time.monotonic() - t0
            read = sampled([sys.executable, "-c", READ_ONLY, str(path)])
            out = tmp / f"out-{label.replace('/', '_')}"
            prep = sampled([*sftprep, "prepare", str(path), "-o", str(out), "--workers", str(a.workers), "-q"])
            manifest = json.loads((out / "manifest.json").read_text())
            results[label] = {"bytes": path.stat().st_size, "rows": rows, "row_groups": groups, "read": read,
                              "prepare": prep, "tokens": manifest["tokens"], "examples": manifest["examples_written"],
                              "built_s": built}  # fmt: skip
            shutil.rmtree(out)
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), platform.processor())  # fmt: skip
        print(f"machine: {cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
              f"{datetime.date.today()}; pyarrow {pa.__version__}; --workers {a.workers}")  # fmt: skip
        print("| file | size | rows | row groups | step | seconds | RSS peak | RSS at 10% / 50% / 90% of the run |")
        print("|---|---:|---:|---:|---|---:|---:|---|")
        for label, r in results.items():
            for step in ("read", "prepare"):
                s = r[step]
                what = step
                if step == "prepare":
                    what += f" ({r['tokens']:,} tokens, {r['tokens'] / s['seconds']:,.0f} tokens/s)"
                rss = f"{s['p10']:,.0f} / {s['p50']:,.0f} / {s['p90']:,.0f} MiB"
                size = f"{r['bytes'] / 1e6:,.0f} MB | {r['rows']:,} | {r['row_groups']}"
                print(f"| {label} | {size} | {what} | {s['seconds']:.1f} | {s['peak']:,.0f} MiB | {rss} |")
        for step in ("read", "prepare"):
            ratio = results["1x"][step]["peak"] / results["1/10"][step]["peak"]
            print(f"peak RSS {step}, 1x / 1/10 of the file: {ratio:.2f} (flat: about 1)")
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
