"""Progress bars for long work: rich on a terminal, silent when not a terminal or when quiet."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(total: int | None, description: str, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callable; draws a bar on stderr only when it is an interactive terminal."""
    if quiet or not sys.stderr.isatty():
        yield lambda _n=1: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
