"""Timing that survives a noisy shared machine: interleaved repeats, medians, spreads, and a loud refusal.

Benchmarks compare a baseline and ours measured in one process. Timing them one after the other lets a
neighbour's burst land on one side only; so every round here runs each candidate once, in turn (ABAB...),
each figure is the median of its rounds, and the spread ((max - min) / median, the extremes dropped from
five rounds on) says how much the rounds disagreed. :func:`check_spread` stops the benchmark when the
spread is too large for its ratio to mean anything, rather than printing a number that is noise.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds of each round of one candidate."""

    name: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median of the rounds, without the fastest and the slowest when there are five or
        more (one burst of a neighbour should not void a run): 0.1 means the rounds disagreed by 10 %."""
        kept = sorted(self.seconds)
        if len(kept) >= 5:
            kept = kept[1:-1]
        return (kept[-1] - kept[0]) / self.median

    def line(self, work: float = 0.0, unit: str = "") -> str:
        """One line: median seconds, spread, and ``work / median`` in ``unit`` when given."""
        rate = f"  {work / self.median:10.2f} {unit}" if work else ""
        rounds = len(self.seconds)
        return f"{self.name:<34} {self.median:9.4f} s  (spread {self.spread:6.1%}, {rounds} rounds){rate}"


def interleaved(
    candidates: dict[str, Callable[[], object]],
    rounds: int = 5,
    sync: Callable[[], None] = lambda: None,
    warmup: bool = True,
) -> dict[str, Timing]:
    """Time every candidate ``rounds`` times, one round of each in turn (after one untimed warm-up call
    each, which builds kernels and caches); ``sync`` waits for an accelerator before a clock is read."""
    if warmup:
        for fn in candidates.values():
            fn()
            sync()
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(name, values) for name, values in seconds.items()}


def environment() -> str:
    """What the figures depend on: load average, cores and the thread counts in use."""
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"load average {load}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )


def check_spread(timings: dict[str, Timing], limit: float = 0.3) -> None:
    """Stop (exit status 2) when any candidate's rounds disagree by more than ``limit``: the machine was
    too busy for a ratio between them to be meaningful; run the benchmark again on a quieter machine."""
    noisy = [t for t in timings.values() if t.spread > limit]
    if noisy:
        names = ", ".join(f"{t.name} {t.spread:.0%}" for t in noisy)
        raise SystemExit(
            f"spread above {limit:.0%} ({names}): the machine is too noisy for this ratio; "
            f"{environment()}; run again when it is quieter"
        )
