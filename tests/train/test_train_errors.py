"""User mistakes in train / generate / demo / tokenizer add-tokens: exit 2 and one message, never a
traceback; OUT_DIR replaced only when sftprep wrote it; every hint is applied and the error goes away."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from train_helpers import addition_records, prepare_records, tiny_config  # noqa: E402

from sftprep.errors import ConfigError  # noqa: E402
from sftprep.outdir import OutDirBusy, out_dir_lock  # noqa: E402
from sftprep.train.checkpoint import list_checkpoints  # noqa: E402
from sftprep.train.config import LoraConfig  # noqa: E402
from sftprep.train.loop import NonFiniteLossError, train  # noqa: E402
from sftprep.train.outputs import RUN_FILE  # noqa: E402

ROOT = REPO_ROOT
TINY_FLAGS = ["--tiny-hidden", "32", "--tiny-layers", "1", "--tiny-heads", "2", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_records(tmp_path_factory.mktemp("errors"), addition_records(16))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    out = tmp_path_factory.mktemp("trained") / "m"
    train(tiny_config(data, out, max_steps=1))
    return out


def cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`sftprep ARGS` in this process, as the installed command runs it: (exit code, stdout + stderr).
    An exception other than the CLI's own would propagate here: a traceback fails the test."""
    from sftprep import cli as sftprep_cli

    monkeypatch.setattr(sys, "argv", ["sftprep", *args])
    try:
        sftprep_cli.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_issue_example_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sftprep", "train", "out/nonexist"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 3, proc.stderr
    assert "DATA_DIR out/nonexist: no such directory" in proc.stderr


MISTAKES = [
    (["train", "{tmp}/nonexist"], "no such directory"),
    (["train", "{tmp}/file.txt"], "a file, not a directory"),
    (["train", "{tmp}/empty"], "no manifest.json"),
    (["train", "{data}", "-o", "{tmp}/o", "--model", "{tmp}/empty"], "not a local HF model directory (no config.json)"),
    (["train", "{data}", "-o", "{tmp}/o", "--model", "{tmp}/fake"], "transformers cannot load it"),
    (["train", "{data}", "-o", "{tmp}/file.txt"], "is a file, not a directory"),
    (["train", "{data}", "-o", "{data}", "--overwrite"], "holds, the DATA_DIR directory"),
    (["train", "{data}", "-o", "{tmp}/o", "--config", "{tmp}/nonexist.toml"], "--config"),
    (["train", "{data}", "-o", "{tmp}/o", "--precision", "fp8"], "--precision 'fp8'"),
    (["train", "{data}", "-o", "{tmp}/o", "--batch-size", "abc"], "Invalid value for '--batch-size'"),
    (["train", "{data}", "-o", "{tmp}/o", "--resume-from", "{tmp}/empty"], "not a checkpoint directory"),
    (["train", "{data}", "-o", "{tmp}/o", "--eval", "{tmp}/nonexist"], "--eval"),
    (["train", "{data}", "-o", "{tmp}/o", "--lora-r", "4"], "add --lora"),
    (["train", "{data}", "-o", "{tmp}/o", "--lora", "--model", "tiny"], "--lora needs a pretrained --model"),
    (["generate", "{tmp}/nonexist", "--prompt", "hi"], "no such directory"),
    (["generate", "{tmp}/empty", "--prompt", "hi"], "no sftprep_model.json"),
    (["generate", "{model}", "--prompt", "hi", "--messages", "{tmp}/m.json"], "exactly one of"),
    (["generate", "{model}", "--messages", "{tmp}/nonexist.json"], "cannot read JSON"),
    (["generate", "{model}", "--messages", "{tmp}/file.txt"], "cannot read JSON"),
    (["generate", "{model}", "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens 0"),
    (["demo", "--out-dir", "{tmp}/file.txt"], "is a file, not a directory"),
    (["demo", "--out-dir", "{tmp}/foreign"], "exists; pass --overwrite"),
    (["demo", "--out-dir", "{tmp}/foreign", "--overwrite"], "not written by sftprep"),
    (["demo", "--mask", "prompt"], "--mask prompt"),
    (["tokenizer", "add-tokens", "{tmp}/nonexist", "-o", "{tmp}/t", "--token", "<|X|>"], "no such file"),
    (["tokenizer", "add-tokens", "default", "-o", "{tmp}/t"], "nothing to add"),
    (["tokenizer", "add-tokens", "default", "-o", "{tmp}/t", "--template", "nosuch"], "not a built-in"),
    (["tokenizer", "add-tokens", "default", "-o", "{tmp}/foreign", "--token", "<|X|>"], "exists"),
]


@pytest.mark.parametrize(
    ("args", "message"), MISTAKES, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in enumerate(MISTAKES)]
)
def test_user_mistakes_exit_2_with_a_message(
    args: list[str], message: str, data: Path, model_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    (tmp_path / "file.txt").write_text("not json, not a directory")
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text(json.dumps({"model_type": "llama"}))  # no weights
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    (tmp_path / "m.json").write_text(json.dumps([{"role": "user", "content": "hi"}]))
    paths = {"tmp": str(tmp_path), "data": str(data), "model": str(model_dir)}
    code, output = cli([a.format(**paths) for a in args], capsys, monkeypatch)
    assert code == 2, output
    assert message in output and "Traceback" not in output, output
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------ OUT_DIR rules
def test_overwrite_replaces_only_a_directory_train_wrote(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    train(tiny_config(data, out, max_steps=1))
    assert (out / RUN_FILE).is_file()
    with pytest.raises(ConfigError) as e:
        train(tiny_config(data, out, max_steps=1, overwrite=False))
    assert "pass --resume to continue it or --overwrite to replace it" in str(e.value)
    train(tiny_config(data, out, max_steps=2, overwrite=True))  # the hint, applied
    assert len(json.loads((out / "sftprep_model.json").read_text())["training"]["checkpoints"]) == 1
    # a file sftprep did not write inside it: refused, named, kept
    (out / "my_notes.md").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files sftprep did not write: my_notes\.md"):
        train(tiny_config(data, out, max_steps=1, overwrite=True))
    assert (out / "my_notes.md").read_text() == "mine" and (out / "model.safetensors").is_file()
    # a directory without a train marker (here: prepared data) is never replaced
    other = prepare_records(tmp_path, addition_records(4), name="data2")
    before = sorted(p.name for p in other.iterdir())
    with pytest.raises(ConfigError, match=r"not written by sftprep \(no sftprep_run.json"):
        train(tiny_config(data, other, overwrite=True))
    assert sorted(p.name for p in other.iterdir()) == before


def test_resume_hint_and_no_checkpoint_hint(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    with pytest.raises(ConfigError, match=r"no checkpoint under .*; run without --resume to start"):
        train(tiny_config(data, out, max_steps=4, resume=True, overwrite=False))
    train(tiny_config(data, out, max_steps=4, overwrite=False, stop_after=2))  # the hint applied
    assert train(tiny_config(data, out, max_steps=4, resume=True, overwrite=False)).steps == 4


def test_one_writer_per_out_dir(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    with out_dir_lock(out, "train"), pytest.raises(OutDirBusy, match=r"being written by another sftprep run: pid"):
        train(tiny_config(data, out, max_steps=1))
    assert train(tiny_config(data, out, max_steps=1)).steps == 1  # once the holder is done


@pytest.mark.parametrize("damage", ["state", "weights"])
def test_corrupt_checkpoint_names_the_file_and_the_fix_works(data: Path, tmp_path: Path, damage: str) -> None:
    out = tmp_path / "c"
    train(tiny_config(data, out, max_steps=6, save_every=1, keep_checkpoints=2, stop_after=3))
    older, latest = list_checkpoints(out)
    if damage == "state":
        (latest / "state.json").write_text("{ truncated")
    else:
        (latest / "weights.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(ConfigError) as e:
        train(tiny_config(data, out, max_steps=6, save_every=1, resume=True, overwrite=False))
    message = str(e.value)
    what = "state.json" if damage == "state" else "weights.pt"
    assert f"checkpoint {latest} is unreadable ({what}" in message
    fix = f"--resume-from {older}"
    assert message.endswith(fix)
    again = train(tiny_config(data, out, max_steps=6, save_every=1, resume_from=str(older), overwrite=False))
    assert again.steps == 6
    # the only checkpoint damaged: the fix is a fresh start
    solo = tmp_path / "solo"
    train(tiny_config(data, solo, max_steps=4, stop_after=2))
    (list_checkpoints(solo)[0] / "trainer.pt").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="run the same command with --overwrite instead of --resume"):
        train(tiny_config(data, solo, max_steps=4, resume=True, overwrite=False))
    assert train(tiny_config(data, solo, max_steps=4, overwrite=True)).steps == 4


# ------------------------------------------------------------------------------------------ hints
@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside peft
def test_peft_hint_names_an_extra_that_has_peft(data: Path, tmp_path: Path, monkeypatch) -> None:
    from sftprep.train.model import PEFT_HINT, apply_lora

    tomllib = pytest.importorskip("tomllib", reason="Python < 3.11")

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert PEFT_HINT == "pip install 'sftprep[train]'" and any(r.startswith("peft") for r in extras["train"])
    from train_helpers import TINY

    from sftprep.train.model import tiny_llama

    base = tiny_llama(300, TINY, pad_id=0, eos_id=1, seed=0)
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ConfigError, match=r"--lora needs the `peft` package: pip install 'sftprep\[train\]'"):
        apply_lora(base, LoraConfig(), seed=0)
    monkeypatch.undo()  # what the install gives: peft importable
    pytest.importorskip("peft", reason="peft is not installed (pip install 'sftprep[train]')")
    assert hasattr(apply_lora(base, LoraConfig(), seed=0), "merge_and_unload")


def test_diverging_run_hint_lower_lr(data: Path, tmp_path: Path) -> None:
    wild = tiny_config(data, tmp_path / "nan", lr=1e5, max_grad_norm=None, max_steps=8, warmup_steps=0)
    with pytest.raises(NonFiniteLossError, match="Lower --lr"):
        train(wild)
    tame = tiny_config(data, tmp_path / "nan", lr=1e-3, max_grad_norm=None, max_steps=8, warmup_steps=0)
    assert len(train(tame).losses) == 8


def test_wandb_start_failure_hint_offline_mode(data: Path, tmp_path: Path, monkeypatch, capfd) -> None:
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb)")
    real_init = wandb.init

    def init(**kwargs):  # what an online run without an API key or network does
        if kwargs.get("mode") != "offline":
            raise wandb.errors.UsageError("api_key not configured (no-tty)")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(tiny_config(data, tmp_path / "w1", max_steps=1, wandb=True))
    assert "use --wandb-mode offline" in capfd.readouterr().err
    train(tiny_config(data, tmp_path / "w2", max_steps=1, wandb=True, wandb_mode="offline"))
    assert "cannot start a run" not in capfd.readouterr().err
    assert list((tmp_path / "w2" / "wandb").glob("offline-run-*"))


def test_demo_overwrite_replaces_its_own_directory(tmp_path: Path, capsys, monkeypatch) -> None:
    from sftprep.train.demo import DEMO_MARKER, open_work_dir

    work = tmp_path / "demo"
    import contextlib

    with contextlib.ExitStack() as stack:
        open_work_dir(work, False, stack)
    (work / "results.json").write_text("[]")
    with pytest.raises(ConfigError, match="pass --overwrite"), contextlib.ExitStack() as stack:
        open_work_dir(work, False, stack)
    with contextlib.ExitStack() as stack:
        open_work_dir(work, True, stack)  # the hint applied
    assert sorted(p.name for p in work.iterdir()) == [DEMO_MARKER]


@pytest.mark.parametrize("module", ["torch", "transformers"])
def test_missing_train_extra_is_a_plain_error(module: str, data: Path, tmp_path: Path, monkeypatch) -> None:
    from sftprep.train.commands import TRAIN_EXTRA_HINT, run_train

    cfg = tiny_config(data, tmp_path / "x", max_steps=1)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=rf"`sftprep train` needs {module} .*: pip install 'sftprep\[train\]'"):
        run_train(cfg)
    monkeypatch.undo()  # the extra installed
    assert TRAIN_EXTRA_HINT == "pip install 'sftprep[train]'" and run_train(cfg).steps == 1
