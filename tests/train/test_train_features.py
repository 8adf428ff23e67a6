"""Gradient checkpointing, --eval, and the loggers (JSONL always, TensorBoard, Weights & Biases)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from train_helpers import addition_records, prepare_records, tiny_config  # noqa: E402

from sftprep.errors import ConfigError  # noqa: E402
from sftprep.train import monitor  # noqa: E402
from sftprep.train.data import read_parquet  # noqa: E402
from sftprep.train.distributed import DistEnv  # noqa: E402
from sftprep.train.evaluate import evaluate, load_eval_set  # noqa: E402
from sftprep.train.loop import accumulate, micro_batches, setup_run, train  # noqa: E402
from sftprep.train.monitor import read_log  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_records(tmp_path_factory.mktemp("features"), addition_records(32))


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_records(tmp_path_factory.mktemp("features-eval"), addition_records(11, seed=7), name="eval")


# ------------------------------------------------------------------------------- gradient checkpointing
def _layer_calls(run: Any) -> list[int]:
    """How often the first layer's MLP forward runs (module hooks do not fire in the recomputation)."""
    calls = [0]
    mlp = run.model.model.layers[0].mlp
    forward = mlp.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return forward(*args, **kwargs)

    mlp.forward = counted
    return calls


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(data: Path, tmp_path: Path) -> None:
    results = []
    for checkpointing in (False, True):
        cfg = tiny_config(data, tmp_path, gradient_checkpointing=checkpointing, batch_size=4, grad_accum=2)
        run = setup_run(cfg, DistEnv())
        calls = _layer_calls(run)
        run.loss_module.train()
        loss, _ = accumulate(run, micro_batches(run, 0))
        grads = {n: p.grad.clone() for n, p in run.model.named_parameters()}
        results.append((loss.item(), grads, calls[0]))
    (plain_loss, plain_grads, plain_calls), (ckpt_loss, ckpt_grads, ckpt_calls) = results
    assert (plain_calls, ckpt_calls) == (2, 4)  # 2 micro-batches; recomputed once each in backward
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-6)
    for name, g in plain_grads.items():
        assert torch.allclose(ckpt_grads[name], g, rtol=1e-5, atol=1e-7), name
    # whole runs: the same curve, and the saved model generates (use_cache restored)
    a = train(tiny_config(data, tmp_path / "a", max_steps=3))
    b = train(tiny_config(data, tmp_path / "b", max_steps=3, gradient_checkpointing=True))
    assert b.losses == pytest.approx(a.losses, rel=1e-5)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["use_cache"] is True


# ------------------------------------------------------------------------------------------ eval
def hand_computed_eval_loss(model: torch.nn.Module, eval_dir: Path) -> tuple[float, int]:
    """Full-vocabulary logits of every position, labels shifted by hand, mean over the trained ones."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in read_parquet(eval_dir):
            logits = model(input_ids=torch.tensor(ids)[None]).logits[0].double()
            targets = torch.tensor(labels[1:])
            keep = targets != -100
            log_probs = torch.log_softmax(logits[:-1], dim=-1)
            total += -log_probs[keep, targets[keep]].sum().item()
            count += int(keep.sum())
    return total / count, count


@pytest.mark.parametrize("batch_size", [1, 3])
def test_eval_loss_is_the_masked_mean_over_trained_tokens(
    data: Path, eval_data: Path, tmp_path: Path, batch_size: int
) -> None:
    run = setup_run(tiny_config(data, tmp_path, eval_dir=str(eval_data)), DistEnv())
    eval_set = load_eval_set(str(eval_data), run.bundle, batch_size, None)
    got = evaluate(run.forward_module, eval_set, DistEnv(), run.bundle.pad_id, None)
    expected, count = hand_computed_eval_loss(run.model, eval_data)
    assert got.trainable_tokens == count
    assert got.loss == pytest.approx(expected, rel=1e-5)
    assert got.tokens == sum(len(ids) for ids, _ in read_parquet(eval_data)) and got.tokens_per_s > 0


def test_eval_runs_every_n_steps_and_at_the_end_and_is_logged(
    data: Path, eval_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[FakeWriter] = []
    monkeypatch.setattr(monitor, "_tensorboard", lambda path: writers.append(FakeWriter()) or writers[-1])
    out = tmp_path / "ev"
    result = train(tiny_config(data, out, max_steps=5, eval_dir=str(eval_data), eval_every=2, tensorboard=True))
    assert [e["step"] for e in result.evals] == [2, 4, 5]
    rows = read_log(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # one row per step, eval fields on the eval steps
    assert [r["step"] for r in rows if "eval_loss" in r] == [2, 4, 5]
    for e in result.evals:
        row = rows[e["step"] - 1]
        assert row["eval_loss"] == e["eval_loss"] and row["eval_tokens_per_s"] > 0
    # the eval loss of the final model, computed by hand from the saved weights
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(str(out))
    assert result.evals[-1]["eval_loss"] == pytest.approx(hand_computed_eval_loss(final, eval_data)[0], rel=1e-5)
    (w,) = writers
    assert [(v, s) for t, v, s in w.scalars if t == "eval/loss"] == [(e["eval_loss"], e["step"]) for e in result.evals]
    summary = json.loads((out / "sftprep_model.json").read_text())["training"]
    assert [e["step"] for e in summary["evals"]] == [2, 4, 5]


def test_eval_split_must_match_the_training_data(data: Path, tmp_path: Path) -> None:
    other = prepare_records(tmp_path, addition_records(4), name="other", template="zephyr")
    with pytest.raises(ConfigError, match="prepared with another template"):
        train(tiny_config(data, tmp_path / "x", eval_dir=str(other)))
    with pytest.raises(ConfigError, match="--eval-every needs --eval"):
        train(tiny_config(data, tmp_path / "y", eval_every=2))


# ------------------------------------------------------------------------------------------ loggers
class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        self.closed = True


def test_tensorboard_writes_event_files(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    train(tiny_config(data, tmp_path / "tb", max_steps=2, tensorboard=True))
    assert list((tmp_path / "tb" / "runs").glob("events.out.tfevents.*"))


def test_missing_tensorboard_or_wandb_is_said_not_silent(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(monitor, "_tensorboard", lambda path: None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    train(tiny_config(data, tmp_path / "m", max_steps=1, tensorboard=True, wandb=True))
    err = capfd.readouterr().err
    assert "tensorboard is not installed" in err and monitor.TENSORBOARD_HINT in err
    assert "wandb is not installed" in err and monitor.WANDB_HINT in err
    assert read_log(tmp_path / "m")  # JSONL always
    # the fix (the package installed: here, the real modules back) silences both notes
    monkeypatch.undo()
    pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb)")
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(tiny_config(data, tmp_path / "n", max_steps=1, tensorboard=True, wandb=True))
    assert "not installed" not in capfd.readouterr().err


def test_wandb_offline_logs_without_network(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb)")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "wb"
    train(tiny_config(data, out, max_steps=2, wandb=True, wandb_mode="offline", wandb_project="sftprep-test"))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (records,) = runs[0].glob("run-*.wandb")  # protobuf records: `wandb sync` uploads them later
    raw = records.read_bytes()
    assert b"train/loss" in raw and b"train/tokens_per_s" in raw
    assert all(json.dumps(row["loss"]).encode() in raw for row in read_log(out))


# ------------------------------------------------------------------------------- FSDP in one process
@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside peft
@pytest.mark.parametrize("lora", [False, True])
def test_fsdp_in_one_process_trains_and_exports_like_no_sharding(data: Path, tmp_path: Path, lora: bool) -> None:
    """FSDP2 on one process (an in-memory process group), with gradient checkpointing; with LoRA the export
    rebuilds the adapters on an unsharded copy and merges them."""
    from safetensors.torch import load_file
    from train_helpers import TINY

    from sftprep.train.config import LoraConfig
    from sftprep.train.model import tiny_llama

    options: dict[str, Any] = {"max_steps": 3, "lr": 1e-2, "gradient_checkpointing": True}
    if lora:
        pytest.importorskip("peft", reason="peft is not installed (pip install 'sftprep[train]')")
        base = tmp_path / "base"
        tiny_llama(8192, TINY, pad_id=0, eos_id=1, seed=3).save_pretrained(str(base))
        options.update(model=str(base), lora=LoraConfig(r=4, alpha=8))
    plain = train(tiny_config(data, tmp_path / "plain", **options))
    sharded = train(tiny_config(data, tmp_path / "fsdp", sharding="fsdp", **options))
    assert sharded.losses == pytest.approx(plain.losses, rel=1e-5)
    a, b = (
        load_file(str(tmp_path / "fsdp" / "model.safetensors")),
        load_file(str(tmp_path / "plain" / "model.safetensors")),
    )
    assert sorted(a) == sorted(b)
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in b)
    assert (tmp_path / "fsdp" / "adapter").is_dir() == lora
    import torch.distributed as dist

    assert not dist.is_initialized()  # the run's own process group is gone
