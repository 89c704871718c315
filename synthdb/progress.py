"""Progress of long work: a bar on an interactive terminal, a periodic one-line report everywhere else.

A bar needs a terminal. When stderr is a pipe or a file (a cluster job's log, ``2> log``), or with
``--quiet``, no bar is drawn, but a line like ``embed faces: 120/3000 images, 4.1/s, eta 11m`` goes to
stderr every :data:`INTERVAL_S` seconds (``$SYNTHDB_PROGRESS_INTERVAL`` changes it), from a timer, so a
job that is stuck in one long step still says so; work that ends within the interval prints nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

INTERVAL_S = 10.0
ENV_INTERVAL = "SYNTHDB_PROGRESS_INTERVAL"


def interval_s() -> float:
    """Seconds between progress lines: ``$SYNTHDB_PROGRESS_INTERVAL`` when it is a positive number."""
    try:
        value = float(os.environ.get(ENV_INTERVAL, ""))
    except ValueError:
        return INTERVAL_S
    return value if value > 0 else INTERVAL_S


def duration(seconds: float) -> str:
    """``45s``, ``11m``, ``2h05m``: short enough for a progress line."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours}h{minutes:02d}m"


class ProgressLines:
    """Counts work done and writes one line about it to ``stream`` every ``interval`` seconds."""

    def __init__(
        self, total: int | None, description: str, unit: str, interval: float, stream: TextIO
    ) -> None:
        self.total, self.description, self.unit = total, description, unit
        self.interval, self.stream = interval, stream
        self.done = 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._timer = threading.Thread(target=self._tick, name="synthdb-progress", daemon=True)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n

    def line(self, now: float) -> str:
        """``description: done/total unit, rate/s, eta``; the eta only when there is a total and a rate."""
        with self._lock:
            done = self.done
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        count = f"{done}/{self.total}" if self.total is not None else f"{done}"
        text = f"{self.description}: {count} {self.unit}, {rate:.1f}/s"
        if self.total is not None and rate > 0 and done < self.total:
            text += f", eta {duration((self.total - done) / rate)}"
        return text

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.stream.write(self.line(time.monotonic()) + "\n")
            self.stream.flush()

    def __enter__(self) -> ProgressLines:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._timer.join()


@contextmanager
def progress_bar(
    total: int | None, description: str, quiet: bool = False, unit: str = "items"
) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callable: a bar on stderr when it is an interactive terminal and not
    ``quiet``, periodic one-line reports otherwise (see the module docstring)."""
    if quiet or not sys.stderr.isatty():
        with ProgressLines(total, description, unit, interval_s(), sys.stderr) as lines:
            yield lines.advance
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
