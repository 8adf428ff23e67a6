"""The training loop: outputs, determinism, loss normalisation across batch/accumulation, resume, NaN."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from train_helpers import addition_records, prepare_records, tiny_config  # noqa: E402

from sftprep.api import read_manifest  # noqa: E402
from sftprep.errors import ConfigError  # noqa: E402
from sftprep.train.bundle import BUNDLE_FILE  # noqa: E402
from sftprep.train.checkpoint import list_checkpoints  # noqa: E402
from sftprep.train.distributed import DistEnv  # noqa: E402
from sftprep.train.loop import NonFiniteLossError, accumulate, micro_batches, setup_run, train  # noqa: E402
from sftprep.train.monitor import read_log  # noqa: E402
from sftprep.train.optim import warmup_cosine  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_records(tmp_path_factory.mktemp("train"), addition_records(40))


def rel_close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def test_train_writes_model_tokenizer_template_and_log(data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "model"
    result = train(tiny_config(data, out, max_steps=8, lr=3e-3))
    assert result.steps == 8 and len(result.losses) == 8 and not result.stopped_early
    assert result.losses[-1] < result.losses[0]
    assert all(math.isfinite(x) for x in result.losses)
    assert [r["step"] for r in read_log(out)] == list(range(1, 9))
    assert result.records_per_s > 0 and result.tokens_per_s > 0 and 0 < result.padding_efficiency <= 1
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", BUNDLE_FILE):
        assert (out / name).is_file(), name
    saved = json.loads((out / BUNDLE_FILE).read_text())
    manifest = read_manifest(data)
    assert saved["template"] == manifest["template"] and saved["options"] == manifest["options"]
    assert saved["tokenizer"]["sha256"] == manifest["tokenizer"]["sha256"]
    assert saved["training"]["steps"] == 8
    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    assert model.config.vocab_size == manifest["tokenizer"]["vocab_size"]
    assert model.generation_config.eos_token_id == [1]  # <|im_end|>: chatml's end of turn and eos


def test_training_is_deterministic(data: Path, tmp_path: Path) -> None:
    a = train(tiny_config(data, tmp_path / "a", max_steps=3))
    b = train(tiny_config(data, tmp_path / "b", max_steps=3))
    assert a.losses == b.losses
    c = train(tiny_config(data, tmp_path / "c", max_steps=3, seed=1))
    assert c.losses != a.losses


@pytest.mark.parametrize("packing", [False, True])
def test_batch_and_accumulation_split_give_the_same_loss_and_gradients(
    data: Path, tmp_path: Path, packing: bool
) -> None:
    """8 x 1, 1 x 8 and 2 x 4 (examples or rows x accumulation): same loss and gradients (fp32, CPU)."""
    extra = {"packing": True, "max_length": 64} if packing else {}
    splits = [(8, 1), (1, 8), (2, 4)]
    runs = [setup_run(tiny_config(data, tmp_path, batch_size=b, grad_accum=a, **extra), DistEnv()) for b, a in splits]
    results = []
    for run in runs:
        loss, count = accumulate(run, micro_batches(run, 0))
        grads = {n: p.grad.clone() for n, p in run.model.named_parameters()}
        results.append((loss.item(), count, grads))
    ref_loss, ref_count, ref_grads = results[0]
    for loss, count, grads in results[1:]:
        assert count == ref_count
        assert rel_close(loss, ref_loss, 1e-5), (loss, ref_loss)
        for name, g in grads.items():
            assert torch.allclose(g, ref_grads[name], rtol=1e-5, atol=1e-5 * ref_grads[name].abs().max().item())
    # and whole training runs follow the same loss curve
    curves = [
        train(tiny_config(data, tmp_path / f"{b}x{a}", batch_size=b, grad_accum=a, max_steps=3, **extra)).losses
        for b, a in splits
    ]
    for curve in curves[1:]:
        assert all(rel_close(x, y, 1e-5) for x, y in zip(curve, curves[0])), (curve, curves[0])


def test_loss_is_normalised_by_trained_tokens_of_the_whole_step(data: Path, tmp_path: Path) -> None:
    run = setup_run(tiny_config(data, tmp_path, batch_size=2, grad_accum=3), DistEnv())
    batches = micro_batches(run, 0)
    from sftprep.train.loss import SFTLoss

    module = SFTLoss(run.model)
    with torch.no_grad():
        total = sum(module(**b.tensors()).item() for b in batches)
        count = sum(b.n_trainable for b in batches)
    loss, n = accumulate(run, batches)
    assert n == count and rel_close(loss.item(), total / count, 1e-6)


def test_resume_reproduces_the_uninterrupted_loss_curve(data: Path, tmp_path: Path) -> None:
    full = train(tiny_config(data, tmp_path / "full", max_steps=6, batch_size=2, grad_accum=2))
    out = tmp_path / "split"
    first = train(tiny_config(data, out, max_steps=6, batch_size=2, grad_accum=2, stop_after=3))
    assert first.stopped_early and first.steps == 3
    assert [p.name for p in list_checkpoints(out)] == ["step-00000003"]
    assert not (out / "model.safetensors").exists()
    second = train(tiny_config(data, out, max_steps=6, batch_size=2, grad_accum=2, resume=True, overwrite=False))
    assert second.steps == 6 and not second.stopped_early
    assert first.losses + second.losses == full.losses  # exact on CPU
    assert [r["loss"] for r in read_log(out)] == full.losses
    assert (out / "model.safetensors").is_file()


def test_resume_from_a_checkpoint_into_a_new_directory(data: Path, tmp_path: Path) -> None:
    full = train(tiny_config(data, tmp_path / "full", max_steps=4))
    first = train(tiny_config(data, tmp_path / "a", max_steps=4, stop_after=2))
    ckpt = list_checkpoints(tmp_path / "a")[-1]
    second = train(tiny_config(data, tmp_path / "b", max_steps=4, resume_from=str(ckpt), overwrite=False))
    assert first.losses + second.losses == full.losses
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        train(tiny_config(data, tmp_path / "c", resume_from=str(tmp_path)))


def test_resume_refuses_changed_data_order(data: Path, tmp_path: Path) -> None:
    train(tiny_config(data, tmp_path, max_steps=4, stop_after=2))
    with pytest.raises(ConfigError, match="batch_size"):
        train(tiny_config(data, tmp_path, max_steps=4, batch_size=2, resume=True))


def test_out_dir_and_resume_errors(data: Path, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(ConfigError, match="not written by `sftprep train`"):
        train(tiny_config(data, tmp_path, overwrite=False))
    with pytest.raises(ConfigError, match="not written by sftprep"):
        train(tiny_config(data, tmp_path, overwrite=True))
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(tiny_config(data, tmp_path / "fresh", resume=True))
    assert (tmp_path / "x").read_text() == "keep me"


def test_non_finite_loss_stops_training_with_a_clear_message(data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(data, tmp_path / "nan", max_steps=3)
    run = setup_run(cfg, DistEnv())
    with torch.no_grad():
        run.model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"step 1: the loss is nan \(not finite\); training stopped"):
        train(cfg, model=run.model)
    assert not (tmp_path / "nan" / "model.safetensors").exists()
    assert list_checkpoints(tmp_path / "nan") == []


def test_too_little_data_for_one_step_is_a_config_error(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fewer than one optimizer step"):
        train(tiny_config(data, tmp_path, batch_size=64))


def test_packing_reports_efficiency(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = train(tiny_config(data, tmp_path / "p", packing=True, max_length=128, quiet=False, max_steps=2))
    s = result.stats
    assert s.rows > 0 and s.row_capacity == 128
    assert s.rows < s.examples and 0.5 < s.packing_efficiency <= 1.0
    assert s.packing_efficiency == s.tokens / (s.rows * 128)
    err = capsys.readouterr().err
    assert f"efficiency {s.packing_efficiency:.1%}" in err and "tok/s" in err and "rec/s" in err


def test_quiet_prints_nothing(data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    train(tiny_config(data, tmp_path / "q", quiet=True, max_steps=2))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_warmup_then_cosine_schedule() -> None:
    f = warmup_cosine(warmup=4, total=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))
