"""Progress off a terminal: periodic one-line reports (:mod:`synthdb.progress`)."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest

from synthdb.progress import ProgressLines, duration, interval_s, progress_bar


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (45, "45s"), (660, "11m"), (3599, "60m"), (7500, "2h05m")]
)
def test_durations_are_short(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_line_says_count_rate_and_eta() -> None:
    lines = ProgressLines(3000, "embed faces", "images", 10.0, io.StringIO())
    lines.advance(41)
    assert lines.line(lines.started + 10) == "embed faces: 41/3000 images, 4.1/s, eta 12m"
    unknown = ProgressLines(None, "import x", "files", 10.0, io.StringIO())
    unknown.advance(5000)
    assert unknown.line(unknown.started + 2) == "import x: 5000 files, 2500.0/s"
    stuck = ProgressLines(30, "embed faces", "images", 10.0, io.StringIO())
    assert stuck.line(stuck.started + 34) == "embed faces: 0/30 images, 0.0/s"  # no eta without a rate


def test_lines_come_from_a_timer_even_when_nothing_advances() -> None:
    """A job stuck in one long step still reports, every interval, without any call from it."""
    stream = io.StringIO()
    with ProgressLines(30, "embed faces", "images", 0.01, stream) as lines:
        lines.advance(3)
        deadline = time.monotonic() + 30
        while stream.getvalue().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    written = stream.getvalue().splitlines()
    assert len(written) >= 2 and all(line.startswith("embed faces: 3/30 images, ") for line in written)


@pytest.mark.parametrize(("value", "seconds"), [("0.5", 0.5), ("", 10.0), ("soon", 10.0), ("-1", 10.0)])
def test_the_interval_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, seconds: float
) -> None:
    monkeypatch.setenv("SYNTHDB_PROGRESS_INTERVAL", value)
    assert interval_s() == seconds


CHILD = """
import time
from synthdb.progress import progress_bar
with progress_bar(4, "work", quiet={quiet}, unit="steps") as advance:
    for _ in range(4):
        time.sleep(0.2)
        advance(1)
"""


@pytest.mark.parametrize("quiet", [False, True])
def test_a_piped_stderr_gets_lines_not_a_bar(quiet: bool) -> None:
    """Through a real pipe, quiet or not: plain lines (no terminal escape codes), each a whole line."""
    env = {"SYNTHDB_PROGRESS_INTERVAL": "0.05", "PATH": "/usr/bin:/bin"}
    child = [sys.executable, "-c", CHILD.format(quiet=quiet)]
    proc = subprocess.run(child, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and "\x1b" not in proc.stderr
    assert all(line.startswith("work: ") and " steps, " in line for line in lines)
    assert any(line.startswith("work: 1/4 steps") for line in lines)


def test_work_shorter_than_the_interval_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(3, "quick", quiet=True) as advance:
        advance(3)
    assert capsys.readouterr().err == ""
