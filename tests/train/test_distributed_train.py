"""Data-parallel training: 2 CPU processes (torchrun, gloo) match 1 process with the same global batch,
with full replicas (DDP) and with FSDP2 (`--sharding fsdp`: parameters, gradients and optimizer state
sharded, checkpoints written shard by shard through torch.distributed.checkpoint).

The commands are the README's ("Training on several processes and nodes"):

    torchrun --standalone --nproc_per_node 2 -m sftprep train DATA -o OUT2 --batch-size 2 --grad-accum 2 OPTIONS
    torchrun --standalone --nproc_per_node 2 -m sftprep train DATA -o OUTF --batch-size 2 --grad-accum 2 \
        --sharding fsdp OPTIONS
    sftprep train DATA -o OUT1 --batch-size 8 OPTIONS

Global batch = per-process batch x processes x accumulation = 2 x 2 x 2 = 8 x 1 x 1. (`torchrun` is
`python -m torch.distributed.run`; `sftprep` is `python -m sftprep`: the test runs them with this Python.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

from safetensors.torch import load_file  # noqa: E402
from train_helpers import addition_records, prepare_records  # noqa: E402

from sftprep.train.bundle import BUNDLE_FILE  # noqa: E402
from sftprep.train.config import TinyModelConfig, TrainConfig  # noqa: E402
from sftprep.train.distributed import DistEnv  # noqa: E402
from sftprep.train.loop import setup_run  # noqa: E402
from sftprep.train.monitor import read_log  # noqa: E402

STEPS = 4
# Shared by both runs: a tiny model, fixed seed, fp32, one torch thread per process.
OPTIONS = [
    "--model", "tiny", "--tiny-hidden", "32", "--tiny-layers", "2", "--tiny-heads", "2",
    "--max-steps", str(STEPS), "--lr", "3e-3", "--precision", "fp32", "--seed", "0",
    "--threads", "1", "--no-tensorboard", "--quiet",
]  # fmt: skip
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
FSDP = ["--sharding", "fsdp"]
SFTPREP = [sys.executable, "-m", "sftprep"]
RTOL = 1e-5  # the bound: loss and final weights within 1e-5 relative
# Element-wise bound on the final weights. Adam's step is lr * m / (sqrt(v) + eps), about lr * sign(g)
# for a weight whose gradient is tiny, so float rounding of the gradient sum (2 processes x 2
# micro-batches vs one batch) moves a few such weights by up to ~1e-6 (lr 3e-3). A single process
# with batch 2 x accumulation 4 instead of 8 x 1 shows the same differences. A wrong sharding or
# normalisation moves weights by ~lr, 300x more than this.
ATOL = 1e-5
# a launcher's variables, when the tests themselves run under one
LAUNCHER_VARS = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith("TORCHELASTIC_")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_all(commands: list[list[str]]) -> None:
    """Start the commands together and wait for all; each must succeed."""
    procs = [
        subprocess.Popen([*c, *OPTIONS], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in commands
    ]
    for command, proc in zip(commands, procs):
        try:
            output, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        assert proc.returncode == 0, f"{' '.join(command)} exited {proc.returncode}:\n{output}"


TWO_BY_TWO = ["--batch-size", "2", "--grad-accum", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data, 2-process OUT, 1-process OUT): both runs launched together, as subprocesses."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = prepare_records(tmp, addition_records(40))
    two, one = tmp / "out2", tmp / "out1"
    torchrun = [*TORCHRUN, "-m", "sftprep", "train", str(data), *TWO_BY_TWO]
    run_all(
        [
            [*torchrun, "-o", str(two)],
            [*SFTPREP, "train", str(data), "-o", str(one), "--batch-size", "8"],
            # FSDP2: uninterrupted, and interrupted after step 2 (its resumption runs in the test)
            [*torchrun, "-o", str(tmp / "fsdp"), *FSDP],
            [*torchrun, "-o", str(tmp / "fsdp-split"), *FSDP, "--stop-after", "2"],
        ]
    )
    return data, two, one


def training_record(out: Path) -> dict[str, Any]:
    return json.loads((out / BUNDLE_FILE).read_text("utf-8"))["training"]


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b))


def test_two_processes_really_ran_data_parallel(runs: tuple[Path, Path, Path]) -> None:
    _, two, one = runs
    t2, t1 = training_record(two), training_record(one)
    assert (t2["world_size"], t2["train"]["batch_size"], t2["train"]["grad_accum"]) == (2, 2, 2)
    assert (t1["world_size"], t1["train"]["batch_size"], t1["train"]["grad_accum"]) == (1, 8, 1)
    assert t2["steps"] == t1["steps"] == STEPS
    # only rank 0 writes the log and checkpoints: one line per step, one final checkpoint
    assert [r["step"] for r in read_log(two)] == list(range(1, STEPS + 1))
    assert t2["checkpoints"] == t1["checkpoints"] == [f"step-{STEPS:08d}"]


def test_losses_match_one_process_with_the_same_global_batch(runs: tuple[Path, Path, Path]) -> None:
    _, two, one = runs
    log1 = read_log(one)
    assert_logs_match(read_log(two), log1)
    assert_logs_match(read_log(one.parent / "fsdp"), log1)
    losses = [r["loss"] for r in log1]
    assert losses[-1] < losses[0] - 0.1, losses  # it trained


def assert_logs_match(log2: list[dict[str, Any]], log1: list[dict[str, Any]]) -> None:
    assert len(log2) == len(log1) == STEPS
    for a, b in zip(log2, log1):
        # the same 8 examples each step, the loss normalised by the same global trained-token count
        counts = ("examples", "tokens", "trainable_tokens")
        assert [a[k] for k in counts] == [b[k] for k in counts]
        assert a["examples"] == 8
        assert rel_diff(a["loss"], b["loss"]) <= RTOL, (a, b)
        assert rel_diff(a["grad_norm"], b["grad_norm"]) <= RTOL, (a, b)


@pytest.mark.parametrize("out", ["out2", "fsdp"])
def test_final_weights_match_one_process_with_the_same_global_batch(runs: tuple[Path, Path, Path], out: str) -> None:
    data, _, one = runs
    two = one.parent / out
    w2, w1 = load_file(str(two / "model.safetensors")), load_file(str(one / "model.safetensors"))
    assert sorted(w2) == sorted(w1) and w1
    # the weights both runs started from (setup_run seeds and builds the model as `sftprep train` does)
    cfg = TrainConfig(str(data), tiny=TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2), batch_size=8)
    init = {k: v.detach() for k, v in setup_run(cfg, DistEnv()).model.state_dict().items()}
    moved = 0.0
    for name, b in w1.items():
        a = w2[name]
        diff = (a - b).norm().item()
        assert diff <= RTOL * b.norm().item(), f"{name}: relative difference {diff / b.norm().item():.2e}"
        assert torch.allclose(a, b, rtol=RTOL, atol=ATOL), f"{name}: max |diff| {(a - b).abs().max().item():.2e}"
        step = (b - init[name]).norm().item()
        assert diff <= 1e-3 * step, f"{name}: the runs differ by {diff:.2e}, training moved it by {step:.2e}"
        moved = max(moved, step)
    assert moved > 0.01  # the weights really changed


def test_resume_with_another_process_count_is_refused(runs: tuple[Path, Path, Path]) -> None:
    """The 2-process run's checkpoint cannot be resumed by 1 process: the global batch would change."""
    data, two, _ = runs
    out = two.parent / "out2-resumed-by-one"
    out.mkdir()
    checkpoint = next(p for p in (two / "checkpoints").iterdir() if p.name.startswith("step-"))
    state = json.loads((checkpoint / "state.json").read_text("utf-8"))
    assert state["world_size"] == 2
    command = [*SFTPREP, "train", str(data), "-o", str(out), "--resume-from", str(checkpoint), "--batch-size", "2"]
    proc = subprocess.run([*command, "--grad-accum", "2", *OPTIONS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "written by 2 process(es) and this run has 1" in proc.stdout + proc.stderr


def test_fsdp_run_was_sharded_and_saves_a_loadable_hf_model(runs: tuple[Path, Path, Path]) -> None:
    from transformers import AutoModelForCausalLM

    _, _, one = runs
    fsdp = one.parent / "fsdp"
    record = training_record(fsdp)
    assert (record["world_size"], record["sharding"], record["train"]["sharding"]) == (2, "fsdp", "fsdp")
    (checkpoint,) = (fsdp / "checkpoints").iterdir()
    state = json.loads((checkpoint / "state.json").read_text("utf-8"))
    assert (state["format"], state["world_size"]) == ("dcp", 2)
    shards = sorted(p.name for p in (checkpoint / "dcp").iterdir() if p.suffix == ".distcp")
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # one file per process: nobody held everything
    assert not (checkpoint / "weights.pt").exists()
    model = AutoModelForCausalLM.from_pretrained(str(fsdp))
    reference = AutoModelForCausalLM.from_pretrained(str(one))
    drop = {"_name_or_path"}
    config, expected = ({k: v for k, v in m.config.to_dict().items() if k not in drop} for m in (model, reference))
    assert config == expected
    with torch.no_grad():
        ids = torch.tensor([[5, 6, 7, 8]])
        assert torch.allclose(model(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)


def test_fsdp_resume_from_sharded_checkpoint_reproduces_the_uninterrupted_run(runs: tuple[Path, Path, Path]) -> None:
    data, _, one = runs
    split, full = one.parent / "fsdp-split", one.parent / "fsdp"
    assert [r["step"] for r in read_log(split)] == [1, 2] and not (split / "model.safetensors").exists()
    assert [p.name for p in (split / "checkpoints").iterdir()] == ["step-00000002"]
    run_all([[*TORCHRUN, "-m", "sftprep", "train", str(data), "-o", str(split), *TWO_BY_TWO, *FSDP, "--resume"]])
    assert [r["loss"] for r in read_log(split)] == [r["loss"] for r in read_log(full)]  # exact: same shards
    a, b = load_file(str(split / "model.safetensors")), load_file(str(full / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)
