"""Exceptions that stop a run. Bad *records* never raise: they become `Reject`s."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sftprep.types import Reject


class SftprepError(Exception):
    """Base class; `exit_code` is the process exit status the CLI uses."""

    exit_code: int = 1


class InputError(SftprepError):
    """An input path is missing, a directory, or unreadable."""

    exit_code = 2


class StrictModeError(SftprepError):
    """--strict was given and a record was rejected."""

    exit_code = 2

    def __init__(self, reject: Reject) -> None:
        super().__init__(f"strict mode: record rejected ({reject.reason}): {reject.message}")
        self.reject = reject


class TemplateError(SftprepError):
    """A chat template is unknown or cannot render a conversation."""

    exit_code = 2


class ConfigError(SftprepError):
    """A command-line option or configuration value is invalid."""

    exit_code = 2


class NoExamplesError(SftprepError):
    """The run finished but wrote no example (every record was rejected): OUT_DIR holds the manifest and
    rejects.jsonl to say why; or `stats`/`inspect` were given such an OUT_DIR."""

    exit_code = 3
