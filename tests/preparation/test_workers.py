"""--workers N gives the same bytes as one process: data-*.parquet, rejects.jsonl and manifest.json.

A mixed corpus (good, bad, multi-turn, weight 0, special-token strings, a JSON array file) in many small
batches and several shards, with the hand-checkable dummy tokenizer and with the embedded BPE tokenizer.
Also: --strict stops the same way, and a SIGKILLed parent leaves no worker process behind and resumes to
the same bytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dummy_tokenizer import write_dummy_tokenizer

import sftprep
import sftprep.preparation.run as run_module
from sftprep.errors import StrictModeError
from sftprep.preparation.run import AUTO_POOL_MIN_BYTES, worker_count


def msg(role: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def mixed_records(n: int) -> list[Any]:
    """Records of every kind, in a fixed order; strings are raw (possibly broken) JSONL lines."""
    out: list[Any] = []
    for i in range(n):
        kind = i % 11
        q, a = f"question {i}: what is {i} * {i}?", f"It is {i * i}."
        if kind == 0:
            out.append('{"messages": [{"role": "user", "content": "cut')
        elif kind == 1:
            out.append({"messages": [msg("user", q)]})  # no assistant turn
        elif kind == 2:
            out.append({"messages": [msg("user", q), msg("wizard", a)]})  # unknown role
        elif kind == 3:
            out.append({"messages": [msg("user", q), msg("assistant", i)]})  # wrong type
        elif kind == 4:
            turns = [msg("system", "Be exact.")]
            for k in range(3):
                weight = {"weight": 0} if k == 1 else {}  # the middle turn is context only
                turns += [msg("user", f"{q} ({k})"), msg("assistant", f"{a} ({k})", **weight)]
            out.append({"messages": turns})
        elif kind == 5:
            out.append({"messages": [msg("user", f"say <|im_end|> {i}"), msg("assistant", f"ok </s> {i}")]})
        elif kind == 6:
            out.append({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
        elif kind == 7:
            out.append({"instruction": q, "input": f"n={i}", "output": a})
        elif kind == 8:
            out.append({"messages": [msg("user", q), msg("assistant", a, weight=0)]})  # nothing to train
        else:
            out.append({"messages": [msg("user", q * (1 + i % 4)), msg("assistant", "¿Qué? 日本語 " + a)]})
    return out


def write_inputs(d: Path, n: int) -> list[str]:
    records = mixed_records(n)
    a = d / "a.jsonl"
    a.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    b = d / "b.json"  # a JSON array file: its records' "line" is the element index
    b.write_text(json.dumps([r for r in records[: n // 3] if not isinstance(r, str)]), encoding="utf-8")
    return [str(a), str(b)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_inputs(tmp_path_factory.mktemp("in"), 300)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_dummy_tokenizer(tmp_path_factory.mktemp("tok")))


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def assert_same_files(a: Path, b: Path) -> None:
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name] == fb[name], f"{name} differs between {a.name} and {b.name}"


@pytest.mark.parametrize(
    ("tokenizer", "mask"),
    [("dummy", "assistant"), ("dummy", "split-turns"), ("default", "assistant")],
)
def test_workers_give_the_same_bytes(
    tokenizer: str, mask: str, inputs: list[str], tok_dir: str, tmp_path: Path
) -> None:
    common = {
        "tokenizer": tok_dir if tokenizer == "dummy" else None,
        "template": "chatml",
        "mask": mask,
        "batch_size": 7,
        "shard_size": 40,
    }
    manifests = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        manifests[workers] = sftprep.prepare(inputs, out_dir=str(out), workers=workers, **common)
    m = manifests[1]
    assert len(m["shards"]) >= 3, "the corpus must fill several shards"
    assert m["records_read"] > 2 * common["batch_size"] * 3  # many batches, more than the workers' window
    assert m["records_rejected"] > 0 and m["special_tokens_in_content"] > 0
    assert set(m["rejected_by_reason"]) >= {"invalid_json", "no_assistant_turn", "unknown_role", "wrong_type"}
    assert m["examples_written"] > len(m["shards"])
    if mask == "split-turns":
        assert m["split_conversations"] > 0
    for workers in (2, 3):
        assert_same_files(tmp_path / "w1", tmp_path / f"w{workers}")
        assert manifests[workers] == m


def test_workers_zero_means_every_core_for_input_worth_a_pool() -> None:
    cores = max(1, os.cpu_count() or 1)
    assert worker_count(0) == worker_count(0, AUTO_POOL_MIN_BYTES) == cores
    assert worker_count(0, AUTO_POOL_MIN_BYTES - 1) == 1  # a small input: no pool to start
    assert worker_count(3, 10) == 3  # an explicit count is kept


@pytest.mark.parametrize("pool_from", [0, 1 << 40])  # every input gets a pool / none does
def test_workers_zero_gives_one_workers_bytes(
    inputs: list[str], tok_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool_from: int
) -> None:
    monkeypatch.setattr(run_module, "AUTO_POOL_MIN_BYTES", pool_from)
    common = {"tokenizer": tok_dir, "template": "chatml", "batch_size": 5, "shard_size": 30}
    sftprep.prepare(inputs, out_dir=str(tmp_path / "one"), workers=1, **common)
    sftprep.prepare(inputs, out_dir=str(tmp_path / "all"), workers=0, **common)
    assert_same_files(tmp_path / "one", tmp_path / "all")


def test_strict_stops_the_same_way_with_workers(inputs: list[str], tok_dir: str, tmp_path: Path) -> None:
    errors = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        with pytest.raises(StrictModeError) as info:
            sftprep.prepare(
                inputs,
                out_dir=str(out),
                workers=workers,
                strict=True,
                tokenizer=tok_dir,
                template="chatml",
                batch_size=3,
            )
        errors.append(str(info.value))
        assert not out.exists() and not (tmp_path / f".w{workers}.tmp").exists()
    assert errors[0] == errors[1]
    assert ":1: " in errors[0]  # the first record of a.jsonl is the first bad one


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the worker processes")
def test_sigkilled_parent_leaves_no_workers_and_resumes_to_the_same_bytes(tok_dir: str, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path, 6000)
    out = tmp_path / "out"
    kw = {"inputs": inputs, "tokenizer": tok_dir, "template": "chatml", "batch_size": 100, "shard_size": 200}
    child = "import json, sys, sftprep; sftprep.prepare(**json.loads(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", child, json.dumps({**kw, "out_dir": str(out), "workers": 2})])
    progress = out.with_name(".out.tmp") / "progress.json"
    deadline = time.monotonic() + 60
    while proc.poll() is None and not (progress.exists() and len(children(proc.pid)) >= 2):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers):
        assert time.monotonic() < deadline, f"workers {[w for w in workers if alive(w)]} outlived their parent"
        time.sleep(0.05)
    assert not out.exists()
    sftprep.prepare(**kw, out_dir=str(out), workers=2, resume=True)
    sftprep.prepare(**kw, out_dir=str(tmp_path / "reference"), workers=1)
    assert_same_files(out, tmp_path / "reference")
