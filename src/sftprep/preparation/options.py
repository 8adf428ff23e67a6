"""Options of `prepare`, shared by the CLI and the Python API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sftprep.errors import ConfigError
from sftprep.types import (
    FORMATS,
    MASKS,
    REASONING_MODES,
    SYSTEM_POLICIES,
    TRUNCATIONS,
    FormatName,
    MaskMode,
    ReasoningMode,
    SystemPolicy,
    TruncationMode,
)

# --reasoning-mode (templates/modes.py): auto: the default variables, else the template's own switch variable
# that makes the turn consistent; thinking / non-thinking: only settings in which the template renders / does
# not render reasoning; reject: the default variables only.


@dataclass
class PrepareOptions:
    inputs: list[str]
    out_dir: str = "out"
    tokenizer: str | None = None
    template: str | None = None
    template_name: str | None = None
    template_vars: dict[str, Any] = field(default_factory=dict)
    format: FormatName = "auto"
    role_map: dict[str, str] = field(default_factory=dict)
    merge_consecutive: bool = False
    system_prompt: str | None = None
    system_policy: SystemPolicy = "if-missing"
    mask: MaskMode = "assistant"
    train_on_eos: bool = True
    train_reasoning: bool = True
    train_tool_calls: bool = True
    max_length: int | None = None
    truncation: TruncationMode = "drop"
    strict: bool = False
    shard_size: int = 50_000
    batch_size: int = 1_000
    overwrite: bool = False
    workers: int = 1
    max_chars: int = 8_000_000  # a rendered conversation longer than this is rejected (memory guard)
    resume: bool = False
    reasoning_mode: ReasoningMode = "auto"
    require_user_turn: bool = False  # reject [system, assistant] conversations (trained by default)
    train_marker_only: bool = False  # emit turns whose trained text is only the end-of-turn marker
    render_timeout: float = 10.0  # seconds one record's renders may take before it is rejected

    def validate(self) -> None:
        choices = {
            "format": FORMATS,
            "system_policy": SYSTEM_POLICIES,
            "mask": MASKS,
            "truncation": TRUNCATIONS,
            "reasoning_mode": REASONING_MODES,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {value!r}: expected one of {', '.join(allowed)}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"--max-length {self.max_length}: expected a positive number of tokens")
        if self.shard_size < 1 or self.batch_size < 1:
            raise ConfigError(f"--shard-size {self.shard_size}: expected a positive number of examples")
        if not self.render_timeout > 0:
            raise ConfigError(f"--render-timeout {self.render_timeout}: expected a positive number of seconds")
        if not self.inputs:
            raise ConfigError("no input files given: sftprep prepare INPUT... (JSONL or JSON, optionally .gz)")

    def recorded(self) -> dict[str, Any]:
        """The options as recorded in the manifest (output location excluded: it does not change data)."""
        d = asdict(self)
        for k in ("out_dir", "overwrite", "workers", "resume"):
            d.pop(k)
        return d
