"""One definition of `sftprep train`'s options: every TrainConfig field is a flag and a config-file key,
flags given on the command line win over the file, and LoRA takes every peft LoraConfig field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import typer
from typer.testing import CliRunner

from sftprep.errors import ConfigError
from sftprep.train.cli_options import flags, resolve
from sftprep.train.commands import register
from sftprep.train.config import LoraConfig, TinyModelConfig, TrainConfig


def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


def printed_config(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(app(), ["train", *args, "--print-config"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_every_field_is_one_flag_in_the_help() -> None:
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("data_dir", "tiny", "lora")]
    fields += [f"tiny.{f.name}" for f in dataclasses.fields(TinyModelConfig)]
    fields += [f"lora.{f.name}" for f in dataclasses.fields(LoraConfig)]
    by_path = {".".join(f.path): f for f in flags()}
    assert sorted(by_path) == sorted([*fields, "lora"])
    names = [n for f in flags() for n in f.names]
    assert len(names) == len(set(names))  # no flag twice
    result = CliRunner().invoke(app(), ["train", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0
    for f in flags():
        assert f.names[-1].split("/")[0] in result.output, f.names
    assert all(f.help for f in flags())


def test_cli_flags_reach_the_config() -> None:
    cfg = printed_config(
        ["data", "-o", "out", "--batch-size", "3", "--lr", "0.01", "--tiny-hidden", "48", "--no-tiny-tie-embeddings",
         "--betas", "0.8", "0.9", "--gradient-checkpointing", "--sharding", "fsdp", "--eval", "ev", "--eval-every",
         "5", "--wandb", "--wandb-mode", "offline", "--max-grad-norm", "0"]
    )  # fmt: skip
    assert cfg["data_dir"] == "data" and cfg["out_dir"] == "out"
    assert (cfg["batch_size"], cfg["lr"], cfg["betas"]) == (3, 0.01, [0.8, 0.9])
    assert cfg["tiny"]["hidden_size"] == 48 and cfg["tiny"]["tie_word_embeddings"] is False
    assert cfg["gradient_checkpointing"] and cfg["sharding"] == "fsdp" and cfg["eval_dir"] == "ev"
    assert (cfg["eval_every"], cfg["wandb"], cfg["wandb_mode"], cfg["max_grad_norm"]) == (5, True, "offline", 0.0)
    assert cfg["lora"] is None


def test_lora_flags_cover_peft_fields() -> None:
    pytest.importorskip("peft", reason="peft is not installed (pip install 'sftprep[train]')")
    from sftprep.train.model import peft_config

    cfg = printed_config(
        ["data", "--lora", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1",
         "--lora-target-modules", "q_proj,v_proj", "--lora-target-modules", "up_proj", "--lora-bias", "lora_only",
         "--lora-use-rslora", "--lora-init", "gaussian", "--lora-layers-to-transform", "0",
         "--lora-option", 'rank_pattern={"q_proj": 2}', "--lora-option", "fan_in_fan_out=false"]
    )  # fmt: skip
    lora = LoraConfig(**cfg["lora"])
    peft = peft_config(lora)
    assert (peft.r, peft.lora_alpha, peft.lora_dropout, peft.bias) == (4, 8, 0.1, "lora_only")
    assert set(peft.target_modules) == {"q_proj", "v_proj", "up_proj"}
    assert peft.use_rslora and peft.init_lora_weights == "gaussian" and peft.layers_to_transform == [0]
    assert peft.rank_pattern == {"q_proj": 2} and peft.fan_in_fan_out is False
    with pytest.raises(ConfigError, match="not a field of peft"):
        peft_config(LoraConfig(options={"rank": 3}))


def test_config_file_then_explicit_flags(tmp_path: Path) -> None:
    toml = tmp_path / "train.toml"
    toml.write_text(
        'data_dir = "d"\nbatch-size = 16\nlr = 1e-3\npacking = true\n'
        '[tiny]\nhidden_size = 64\nnum_layers = 3\n[lora]\nr = 8\ntarget_modules = ["q_proj"]\n'
    )
    cfg = printed_config(["--config", str(toml), "--lr", "5e-4", "--model", "m", "--lora-alpha", "4"])
    assert (cfg["data_dir"], cfg["batch_size"], cfg["lr"], cfg["packing"]) == ("d", 16, 5e-4, True)
    assert (cfg["tiny"]["hidden_size"], cfg["tiny"]["num_layers"], cfg["tiny"]["num_heads"]) == (64, 3, 4)
    assert cfg["lora"]["r"] == 8 and cfg["lora"]["alpha"] == 4 and cfg["lora"]["target_modules"] == ["q_proj"]
    # a default given explicitly still wins over the file
    assert printed_config(["--config", str(toml), "--batch-size", "8", "--no-packing"])["batch_size"] == 8
    # JSON works the same; the printed config is itself a valid config file
    js = tmp_path / "train.json"
    js.write_text(json.dumps(cfg))
    assert printed_config(["--config", str(js)]) == cfg
    assert printed_config(["other", "--config", str(js)])["data_dir"] == "other"  # the argument wins


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('data_dir = "d"\nbatch_sise = 4\n', "unknown option 'batch_sise'; did you mean 'batch_size'?"),
        ('data_dir = "d"\nbatch_size = "four"\n', "batch_size: expected int, got 'four'"),
        ('data_dir = "d"\n[tiny]\nhidden = 4\n', "[tiny]: unknown option 'hidden'"),
        ('data_dir = "d"\nlora = 3\n', "'lora' must be a table"),
        ("batch_size = [1\n", "cannot parse"),
    ],
)
def test_config_file_mistakes_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as e:
        resolve(None, {}, path)
    assert message in str(e.value)


def test_lora_option_without_lora_and_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--lora-r is a LoRA option but LoRA is off: add --lora"):
        resolve("d", {"lora_r": 4})
    assert resolve("d", {"lora_r": 4, "lora": True}).lora.r == 4  # the fix the message names
    with pytest.raises(ConfigError, match="give DATA_DIR"):
        resolve(None, {})
    for options, message in (
        ({"sharding": "zero3"}, "--sharding 'zero3': expected one of none, fsdp"),
        ({"eval_every": 3}, "--eval-every needs --eval DIR"),
        ({"batch_size": 0}, "--batch-size 0: expected a positive integer"),
        ({"lora_option": ["noequals"], "lora": True}, "expected KEY=VALUE"),
    ):
        with pytest.raises(ConfigError, match=message):
            resolve("d", options).validate()


def test_checkpoint_config_round_trips() -> None:
    cfg = resolve("d", {"lora": True, "lora_r": 2, "tiny_hidden": 16, "betas": (0.5, 0.6)})
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.betas, tuple) and isinstance(again.lora, LoraConfig)
