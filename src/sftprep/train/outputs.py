"""OUT_DIR of `sftprep train`: one writer at a time, replaced with --overwrite only when an earlier
`sftprep train` wrote it (and holds nothing else), continued with --resume / --resume-from.

Uses sftprep.outdir (the lock, the replaceable check and the atomic replacement shared by every command).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from sftprep.errors import ConfigError
from sftprep.outdir import check_replaceable, make_staging, out_dir_lock, replace_dir
from sftprep.train.bundle import BUNDLE_FILE, TOKENIZER_FILES
from sftprep.train.checkpoint import CHECKPOINTS, STATE_FILE, latest_checkpoint, read_state
from sftprep.train.config import TrainConfig
from sftprep.train.monitor import LOG_FILE

RUN_FILE = "sftprep_run.json"  # written first: marks OUT_DIR as a `sftprep train` directory
MARKERS = (RUN_FILE, BUNDLE_FILE, LOG_FILE)
# every name `sftprep train` writes in OUT_DIR (a directory holding anything else is never replaced)
EXPECTED = (
    *MARKERS,
    *TOKENIZER_FILES,
    CHECKPOINTS,
    "adapter",
    "runs",
    "wandb",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "*.tiktoken",
)


def _inside(inner: Path, outer: Path) -> bool:
    a, b = inner.resolve(), outer.resolve()
    return a == b or b in a.parents


def _check_inputs(cfg: TrainConfig, out: Path) -> None:
    """OUT_DIR must not be (or hold) what the run reads: replacing it would delete its own input."""
    inputs = [("DATA_DIR", cfg.data_dir), ("--model", None if cfg.model == "tiny" else cfg.model)]
    inputs.append(("--eval", cfg.eval_dir))
    for what, path in inputs:
        if path and Path(path).exists() and _inside(Path(path), out):
            raise ConfigError(
                f"-o {out} is, or holds, the {what} directory {path}; training writes and replaces OUT_DIR: "
                "choose another -o"
            )


def _listing(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")


def _is_ours(path: Path) -> bool:
    return any((path / m).is_file() for m in MARKERS)


def open_out_dir(cfg: TrainConfig, stack: contextlib.ExitStack) -> Path | None:
    """Lock OUT_DIR for this run (released when `stack` closes), check or replace it; the checkpoint to
    resume from, or None for a fresh run. Called on rank 0 only."""
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out} is a file, not a directory; choose another -o")
    _check_inputs(cfg, out)
    stack.enter_context(out_dir_lock(out, "train"))
    checkpoint = _resume_point(cfg, out)
    if checkpoint is None and out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            if _is_ours(out):
                raise ConfigError(
                    f"{out} holds an earlier `sftprep train` run ({_listing(out)}); pass --resume to continue "
                    "it or --overwrite to replace it"
                )
            raise ConfigError(
                f"{out} exists and was not written by `sftprep train` (it holds {_listing(out)}); choose another -o"
            )
        check_replaceable(out, MARKERS, EXPECTED)
        replace_dir(make_staging(out, MARKERS), out, MARKERS, EXPECTED)
    elif checkpoint is not None and out.exists() and any(out.iterdir()) and not _is_ours(out):
        raise ConfigError(
            f"{out} exists and was not written by `sftprep train` (it holds {_listing(out)}); resume into a new "
            "or empty -o"
        )
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join(["sftprep", *sys.argv[1:]]), "started": time.time(), "config": cfg.to_dict()}
    (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    return checkpoint


def _resume_point(cfg: TrainConfig, out: Path) -> Path | None:
    if cfg.resume_from:
        path = Path(cfg.resume_from)
        if not (path / STATE_FILE).is_file():
            raise ConfigError(
                f"--resume-from {path}: not a checkpoint directory (no {STATE_FILE}); give "
                f"OUT_DIR/{CHECKPOINTS}/step-NNNNNNNN of an earlier run"
            )
        read_state(path)
        return path
    if cfg.resume:
        if out.is_dir() and not _is_ours(out) and any(out.iterdir()):
            raise ConfigError(f"--resume: {out} was not written by `sftprep train` (it holds {_listing(out)})")
        found = latest_checkpoint(out)
        if found is None:
            raise ConfigError(f"--resume: no checkpoint under {out}/{CHECKPOINTS}; run without --resume to start")
        return found
    return None
