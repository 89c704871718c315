"""Reproducible random draws: every draw of a run from its own seed, derived from the run's root seed.

Every random draw of a generation or projection run comes from a private ``torch.Generator`` seeded by
:func:`unit_seed` from the run's root seed and the draw's name (identity, iteration), never from global RNG
state, so a unit's randomness does not depend on what ran before it in the process, and a resumed run draws
exactly what the first attempt drew.
"""

from __future__ import annotations

import numpy as np
import torch


def unit_seed(root: int, *names: int | str) -> int:
    """A 63-bit seed for the draw called ``names`` of a run with root seed ``root``; stable across
    processes and Python versions (no ``hash()``), independent of execution order."""
    words = [int(root) & 0xFFFFFFFF, int(root) >> 32]
    for name in names:
        words += list(str(name).encode()) if isinstance(name, str) else [int(name) & 0xFFFFFFFF]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


def rng(root: int, *names: int | str) -> torch.Generator:
    """A CPU generator for the draw ``names`` (draw on CPU, then move: every device gets the same)."""
    return torch.Generator().manual_seed(unit_seed(root, *names))
