"""Progress display for the self-reward experiment: a rich bar, or plain timestamped lines (``--plain`` / not a tty)."""

from __future__ import annotations

import time
from typing import Any


class _PlainProgress:
    """Enough of rich.progress.Progress for the harness, printing one line per phase."""

    class _Console:
        @staticmethod
        def print(text: str) -> None:
            print(text, flush=True)

    console = _Console()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *_: Any, **__: Any) -> int:
        return 0

    def update(self, _: int, description: str | None = None, **__: Any) -> None:
        if description:
            print(f"[{time.strftime('%H:%M:%S')}] {description}", flush=True)

    def advance(self, _: int) -> None:
        return None


def make_progress(plain: bool):
    """A ``rich.progress.Progress`` bar, or ``_PlainProgress`` (one line per phase) when ``plain``."""
    if plain:
        return _PlainProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn())
