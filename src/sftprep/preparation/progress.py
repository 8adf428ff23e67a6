"""Progress for long runs: a rich bar on a terminal, a plain line every few seconds otherwise,
nothing with --quiet. Rates: records/s and tokens/s."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

PLAIN_EVERY_S = 10.0


class RunProgress:
    """Call `update(records, tokens)` after each batch (increments)."""

    def __init__(
        self, label: str, total_bytes: int | None = None, quiet: bool = False, console: Console | None = None
    ) -> None:
        self.label = label
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.records = 0
        self.tokens = 0
        self._start = time.perf_counter()
        self._last_plain = self._start
        self._bar: Progress | None = None
        self._task = None
        self._live = not quiet and self.console.is_terminal and sys.stderr.isatty()

    def __enter__(self) -> RunProgress:
        if self._live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # a terminal's bar only

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[rates]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=None, rates="")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
        if not self.quiet and exc is None and not self._live and self.records:
            self._plain()

    def rates(self) -> str:
        dt = max(time.perf_counter() - self._start, 1e-9)
        return (
            f"{self.records:,} records, {self.tokens:,} tokens · "
            f"{self.records / dt:,.0f} records/s · {self.tokens / dt:,.0f} tokens/s"
        )

    def update(self, records: int, tokens: int) -> None:
        self.records += records
        self.tokens += tokens
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, rates=self.rates())
        elif not self.quiet and time.perf_counter() - self._last_plain >= PLAIN_EVERY_S:
            self._plain()

    def _plain(self) -> None:
        self._last_plain = time.perf_counter()
        print(f"{self.label}: {self.rates()}", file=sys.stderr, flush=True)
