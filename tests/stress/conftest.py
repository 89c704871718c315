"""The stress suite's numbers: printed at the end of the run, and written as JSON when
``SYNTHDB_STRESS_REPORT`` names a file (for the release notes).

The counters live in :data:`tests.stress.harness.STATS`; the fuzz and hostile-input tests outside this
folder add to them too when they run in the same session (``make stress`` runs them all).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.stress.harness import FULL, STATS, TRIALS, WRITERS

KEYS = (
    "trials",
    "faults_injected",
    "rows_written_concurrently",
    "inputs_fuzzed",
    "hostile_inputs",
    "losses",
    "corruptions",
)


def _report() -> dict[str, object]:
    return {
        "size": "full" if FULL else "bounded",
        "trials_per_command": TRIALS,
        "concurrent_writers": WRITERS,
        **{key: STATS.get(key, 0) for key in KEYS},
        **{key: value for key, value in sorted(STATS.items()) if key not in KEYS},
    }


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STATS:
        terminalreporter.write_line(f"stress numbers: {json.dumps(_report())}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("SYNTHDB_STRESS_REPORT")
    if target and STATS:
        Path(target).write_text(json.dumps(_report(), indent=2) + "\n")
