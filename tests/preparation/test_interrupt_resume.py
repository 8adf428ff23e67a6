"""Interrupted runs, --resume, refusing to overwrite, and the content-addressed no-op re-run.

(a) `prepare` killed with SIGKILL at several moments never leaves a partial OUT_DIR: it is absent or complete
(manifest present, every listed shard present and loadable, counts matching). (b) a killed run continued with
resume=True gives byte-identical files to an uninterrupted run, and keeps the shards closed before the kill.
(c) an OUT_DIR made from other inputs is left alone without --overwrite (exit 2). (d) a re-run with the same
inputs and options does nothing and says so; changing content, an option, the tokenizer or the template
recomputes with a new cache_key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from dummy_tokenizer import write_dummy_tokenizer

import sftprep
from sftprep.cli import main

N_RECORDS = 8000
RUN = {"template": "chatml", "batch_size": 200, "shard_size": 400}  # a checkpoint every 2 batches
CHILD = "import json, sys, sftprep; sftprep.prepare(**json.loads(sys.argv[1]))"
# the same, but SIGKILLed in the middle of deleting the old OUT_DIR (the moment of replacing it)
CHILD_DIES_IN_RMTREE = """
import json, os, shutil, signal, sys
from pathlib import Path
import sftprep
kw = json.loads(sys.argv[1])
real_rmtree = shutil.rmtree
def rmtree(path, *args, **kwargs):
    out = Path(kw["out_dir"])
    if Path(path) in (out, out.with_name("." + out.name + ".old")):  # deleting the old output, whatever it is called
        next(p for p in sorted(Path(path).iterdir()) if p.name == "manifest.json").unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_rmtree(path, *args, **kwargs)
shutil.rmtree = rmtree
sftprep.prepare(**kw)
"""


def record(i: int) -> str:
    if i % 97 == 0:
        return '{"messages": [{"role": "user"'  # invalid JSON: rejects.jsonl gets lines in every stretch
    turns = [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}."}]
    if i % 5 == 0:
        turns += [{"role": "user", "content": "and then?"}, {"role": "assistant", "content": f"then {i * 7}."}]
    return json.dumps({"messages": turns})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The input, the tokenizer, and an uninterrupted run's output (the reference bytes)."""
    d = tmp_path_factory.mktemp("corpus")
    src = d / "in.jsonl"
    src.write_text("".join(record(i) + "\n" for i in range(1, N_RECORDS + 1)), encoding="utf-8")
    tok = write_dummy_tokenizer(d / "tok")
    kwargs = {"inputs": [str(src)], "tokenizer": str(tok), **RUN}
    sftprep.prepare(out_dir=str(d / "reference"), **kwargs)
    return {"kwargs": kwargs, "reference": d / "reference"}


def staging(out: Path) -> Path:
    return out.with_name(f".{out.name}.tmp")


def snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.iterdir())}


def same_bytes(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert any(n.startswith("data-") for n in names) and "rejects.jsonl" in names and "manifest.json" in names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs"


def assert_absent_or_complete(out: Path) -> None:
    if not out.exists():
        return
    files = {p.name for p in out.iterdir()}
    assert "manifest.json" in files, f"partial OUT_DIR without a manifest: {sorted(files)}"
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert files == {"manifest.json", "rejects.jsonl", *manifest["shards"]}, sorted(files)
    rows = sum(pq.read_table(out / name).num_rows for name in manifest["shards"])
    assert rows == manifest["examples_written"]
    assert len((out / "rejects.jsonl").read_text("utf-8").splitlines()) == manifest["records_rejected"]


def start(kwargs: dict[str, Any], script: str = CHILD) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script, json.dumps(kwargs)], stderr=subprocess.PIPE)


def kill(
    proc: subprocess.Popen[bytes], when: Callable[[], bool], timeout: float = 30.0, sig: int = signal.SIGKILL
) -> bool:
    """Send `sig` to `proc` once `when()` holds and wait for it to end; False when it finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not when():
        assert time.monotonic() < deadline, "the child neither finished nor reached the kill point"
        time.sleep(0.01)
    if proc.poll() is not None:
        assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
        return False
    proc.send_signal(sig)
    assert proc.wait(timeout=timeout) != 0
    if proc.stderr:
        proc.stderr.close()
    return True


def _batches(out: Path) -> int:
    return (checkpoint(out) or {}).get("batches", 0)


def checkpoint(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((staging(out) / "progress.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- (a) + (b)


def test_sigkill_leaves_no_partial_output_and_resume_gives_the_same_bytes(
    corpus: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    kwargs = {**corpus["kwargs"], "out_dir": str(out), "resume": True}
    killed = 0
    # Each attempt resumes the previous one and is killed once it has got this far (staging started; a
    # checkpoint at batch 8, 20): the kill lands wherever the child is then, mid-batch or mid-write.
    for reached in (lambda: staging(out).exists(), lambda: _batches(out) >= 8, lambda: _batches(out) >= 20):
        killed += kill(start(kwargs), reached)
        assert_absent_or_complete(out)
    assert killed >= 2, "the run finished too fast to be interrupted: make the corpus bigger"
    manifest = sftprep.prepare(**kwargs)  # finish it
    assert not staging(out).exists()
    assert manifest["examples_written"] == N_RECORDS - N_RECORDS // 97  # one per record, bar the invalid ones
    same_bytes(out, corpus["reference"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_resume_continues_from_the_last_closed_shard(corpus: dict[str, Any], sig: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    kwargs = {**corpus["kwargs"], "out_dir": str(out)}
    progress: dict[str, Any] = {}

    def after_third_checkpoint() -> bool:
        progress.update(checkpoint(out) or {})
        return progress.get("batches", 0) >= 6

    assert kill(start(kwargs), after_third_checkpoint, sig=sig)  # SIGINT: KeyboardInterrupt keeps the staging dir
    assert_absent_or_complete(out)
    assert not out.exists()
    progress = checkpoint(out) or {}
    assert progress["batches"] >= 6 and len(progress["shards"]) >= 2
    kept = {name: (staging(out) / name).stat() for name in progress["shards"]}
    sftprep.prepare(**kwargs, resume=True)
    same_bytes(out, corpus["reference"])
    for name, before in kept.items():  # the shards closed before the kill were kept, not rewritten
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name


def test_resume_with_other_options_starts_over(corpus: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = tmp_path / "in.jsonl"
    src.write_text("".join(record(i) + "\n" for i in range(1, 2001)), encoding="utf-8")
    kwargs = {**corpus["kwargs"], "inputs": [str(src)], "out_dir": str(out)}
    assert kill(start(kwargs), lambda: (checkpoint(out) or {}).get("batches", 0) >= 2)
    small = {**kwargs, "shard_size": 1000}  # a different key: the checkpoint must not be used
    sftprep.prepare(**small, resume=True)
    sftprep.prepare(**{**small, "out_dir": str(tmp_path / "fresh")})
    same_bytes(out, tmp_path / "fresh")


def test_sigkill_while_overwriting_keeps_a_complete_output(corpus: dict[str, Any], tmp_path: Path) -> None:
    """Timed kills of a run replacing an existing OUT_DIR: the old or the new output, whole, or none."""
    out = tmp_path / "out"
    small = tmp_path / "small.jsonl"
    small.write_text("".join(record(i) + "\n" for i in range(1, 200)), encoding="utf-8")
    sftprep.prepare(**{**corpus["kwargs"], "inputs": [str(small)], "out_dir": str(out)})
    kwargs = {**corpus["kwargs"], "out_dir": str(out), "overwrite": True}
    for delay in (0.5, 1.5):
        t0 = time.monotonic()
        kill(start(kwargs), lambda d=delay, t=t0: time.monotonic() - t >= d)
        assert_absent_or_complete(out)


def test_sigkill_during_the_replacement_leaves_no_partial_output(corpus: dict[str, Any], tmp_path: Path) -> None:
    """The child deletes OUT_DIR's manifest.json as rmtree would, then SIGKILLs itself: a kill that lands
    inside the (short) rmtree window, made deterministic."""
    out = tmp_path / "out"
    small = tmp_path / "small.jsonl"
    small.write_text("".join(record(i) + "\n" for i in range(1, 200)), encoding="utf-8")
    kwargs = {**corpus["kwargs"], "inputs": [str(small)], "out_dir": str(out)}
    sftprep.prepare(**{**kwargs, "shard_size": 50})
    proc = start({**kwargs, "overwrite": True}, CHILD_DIES_IN_RMTREE)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert_absent_or_complete(out)


# ---------------------------------------------------------------------------- (c) + (d) through the CLI


def test_ctrl_c_exits_130(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise KeyboardInterrupt  # what SIGINT does in the middle of a run

    monkeypatch.setattr("sftprep.preparation.run.prepare", interrupted)
    code, _, err = cli("in.jsonl", "-o", "out")
    assert code == 130
    assert "interrupted" in err and "--resume" in err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """`sftprep prepare ARGS` in-process: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["sftprep", "prepare", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def small_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A tiny corpus in tmp_path (the cwd) and the CLI arguments that prepare it into ./out."""
    monkeypatch.chdir(tmp_path)
    Path("in.jsonl").write_text("".join(record(i) + "\n" for i in range(1, 21)), encoding="utf-8")
    write_dummy_tokenizer(tmp_path / "tok")
    return ["in.jsonl", "-o", "out", "--tokenizer", "tok", "--template", "chatml"]


def key(out: str = "out") -> str:
    return str(json.loads(Path(out, "manifest.json").read_text("utf-8"))["cache_key"])


@pytest.mark.parametrize("existing", ["other-inputs", "not-sftprep"])
def test_an_existing_out_dir_is_kept_without_overwrite(existing: str, cli: Any, small_run: list[str]) -> None:
    if existing == "other-inputs":
        Path("other.jsonl").write_text(record(1) + "\n", encoding="utf-8")
        assert cli("other.jsonl", *small_run[1:])[0] == 0
    else:
        Path("out").mkdir()
        Path("out", "notes.txt").write_text("mine", encoding="utf-8")
    before = snapshot(Path("out"))
    code, _, err = cli(*small_run)
    assert code == 2, err
    assert ("--overwrite" if existing == "other-inputs" else "not written by sftprep") in err
    assert "Traceback" not in err
    assert snapshot(Path("out")) == before
    assert not staging(Path("out")).exists()


def test_same_inputs_and_options_are_a_no_op(cli: Any, small_run: list[str]) -> None:
    assert cli(*small_run)[0] == 0
    before = snapshot(Path("out"))
    os.utime("in.jsonl")  # a newer mtime, the same content: still up to date (content-addressed)
    for extra in ([], ["--overwrite"], ["--workers", "2"]):  # neither changes the data
        code, out, err = cli(*small_run, *extra)
        assert code == 0, err
        assert "is up to date" in out
        assert snapshot(Path("out")) == before
        assert not staging(Path("out")).exists()


def test_any_change_recomputes_with_a_new_key(cli: Any, small_run: list[str], tmp_path: Path) -> None:
    assert cli(*small_run)[0] == 0
    keys = [key()]
    write_dummy_tokenizer(tmp_path / "tok-pad", pad="<|endoftext|>")

    def change_content() -> list[str]:
        Path("in.jsonl").write_text(Path("in.jsonl").read_text("utf-8").replace("answer 3.", "answer three."), "utf-8")
        return small_run

    changes: list[Callable[[], list[str]]] = [
        change_content,
        lambda: [*small_run, "--mask", "last-turn"],
        lambda: [*small_run[:-4], "--tokenizer", "tok-pad", "--template", "chatml"],
        lambda: [*small_run[:-2], "--template", "zephyr"],
    ]
    for change in changes:
        args = change()
        code, out, err = cli(*args, "--overwrite")
        assert code == 0, err
        assert "is up to date" not in out and "records read" in out
        keys.append(key())
        assert cli(*args)[1].count("is up to date") == 1  # and that result is now the cached one
    assert len(set(keys)) == len(keys), keys
    manifest = json.loads(Path("out", "manifest.json").read_text("utf-8"))
    assert manifest["template"]["name"] == "zephyr"
    assert manifest["options"]["mask"] == "assistant"


def test_editing_tokenizer_config_in_place_recomputes(cli: Any, small_run: list[str], tmp_path: Path) -> None:
    args = [*small_run[:-2], "--template", "zephyr"]  # zephyr renders {eos}
    assert cli(*args)[0] == 0
    write_dummy_tokenizer(tmp_path / "tok", eos="<eos>")  # same path, same tokenizer.json
    code, out, _ = cli(*args, "--overwrite")
    assert code == 0
    assert "is up to date" not in out
    assert json.loads(Path("out", "manifest.json").read_text("utf-8"))["tokenizer"]["eos_token"] == "<eos>"
