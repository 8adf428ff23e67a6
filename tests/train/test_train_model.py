"""--model DIR (any local HF causal LM), --lora (peft), TensorBoard logging, the CLI functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from train_helpers import TINY, addition_records, prepare_records, tiny_config  # noqa: E402

from sftprep.api import read_manifest  # noqa: E402
from sftprep.errors import ConfigError  # noqa: E402
from sftprep.train import monitor  # noqa: E402
from sftprep.train.config import LoraConfig  # noqa: E402
from sftprep.train.loop import train  # noqa: E402
from sftprep.train.model import tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_records(tmp_path_factory.mktemp("model"), addition_records(24))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A 'pretrained' local HF model directory (a saved tiny Llama)."""
    tok = read_manifest(data)["tokenizer"]
    out = tmp_path_factory.mktemp("base")
    tiny_llama(tok["vocab_size"], TINY, tok["pad_id"], 1, seed=123).save_pretrained(str(out))
    return out


def test_model_dir_loads_the_pretrained_weights(data: Path, base_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from_dir = train(tiny_config(data, tmp_path / "dir", model=str(base_dir), max_steps=1, lr=1e-9))
    random_init = train(tiny_config(data, tmp_path / "tiny", max_steps=1, lr=1e-9))
    assert from_dir.losses != random_init.losses  # different weights (seed 123 vs 0)
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "dir"))
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    for (name, a), (_, b) in zip(reloaded.named_parameters(), base.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name  # lr 1e-9: still the base weights


def test_model_dir_must_be_a_local_hf_model(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a local HF model directory"):
        train(tiny_config(data, tmp_path / "x", model=str(tmp_path)))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside peft/transformers
def test_lora_trains_adapters_only_and_saves_merged_and_adapter(data: Path, base_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="peft is not installed (pip install peft)")
    from transformers import AutoModelForCausalLM

    lora = LoraConfig(r=4, alpha=8)
    out = tmp_path / "lora"
    full = train(tiny_config(data, tmp_path / "lora-full", model=str(base_dir), lora=lora, max_steps=4, lr=1e-2))
    result = train(tiny_config(data, out, model=str(base_dir), lora=lora, max_steps=4, lr=1e-2, stop_after=2))
    resumed = train(
        tiny_config(data, out, model=str(base_dir), lora=lora, max_steps=4, lr=1e-2, resume=True, overwrite=False)
    )
    assert result.losses + resumed.losses == full.losses  # resume with adapters only in the checkpoint
    assert (out / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    changed = {n for (n, a), (_, b) in zip(merged.named_parameters(), base.named_parameters()) if not torch.equal(a, b)}
    assert changed and all(any(t in n for t in ("q_proj", "k_proj", "v_proj", "o_proj")) for n in changed)
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_lora_without_peft_is_a_clear_error(
    data: Path, base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ConfigError, match="--lora needs the `peft` package"):
        train(tiny_config(data, tmp_path / "x", model=str(base_dir), lora=LoraConfig()))


def test_lora_on_the_tiny_model_is_refused(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--lora needs a pretrained"):
        train(tiny_config(data, tmp_path / "x", lora=LoraConfig()))


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        self.closed = True


def test_losses_go_to_tensorboard_when_installed(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writers: list[FakeWriter] = []

    def fake(path: Path) -> Any:
        writers.append(FakeWriter())
        return writers[-1]

    monkeypatch.setattr(monitor, "_tensorboard", fake)
    result = train(tiny_config(data, tmp_path / "tb", max_steps=3, tensorboard=True))
    (w,) = writers
    assert w.closed
    assert [(v, s) for t, v, s in w.scalars if t == "train/loss"] == [(x, i + 1) for i, x in enumerate(result.losses)]


def test_cli_functions(data: Path, tmp_path: Path) -> None:
    from sftprep.train.commands import generate_command, train_command
    from sftprep.train.generate import greedy, load_for_generation

    out = tmp_path / "cli"
    result = train_command(
        data, out, tiny_hidden=32, tiny_layers=1, tiny_heads=2, batch_size=4, max_steps=2, quiet=True, tensorboard=False
    )
    assert result.steps == 2 and (out / "model.safetensors").is_file()
    reply = generate_command(out, prompt="What is 1 + 2?", max_new_tokens=3)
    # the command's reply is the greedy decoding of the saved model on the prompt rendered as in training
    model, renderer = load_for_generation(out)
    prompt = renderer.render([{"role": "user", "content": "What is 1 + 2?"}])
    assert (
        renderer.tok.decode(prompt.input_ids) == "<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert reply == greedy(model, prompt, renderer.tok.decode, 3)
    assert reply == generate_command(out, prompt="What is 1 + 2?", max_new_tokens=3)  # deterministic


def test_typer_commands(data: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from sftprep.train.commands import register

    app = typer.Typer()
    register(app)
    out = tmp_path / "typer"
    args = ["train", str(data), "-o", str(out), "--tiny-hidden", "32", "--tiny-layers", "1", "--tiny-heads", "2"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "4", "--max-steps", "2", "--quiet", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file()
    result = CliRunner().invoke(app, ["generate", str(out), "--prompt", "What is 1 + 2?", "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert {"train", "generate", "demo"} <= {c.name for c in app.registered_commands}
