"""Timing that survives a noisy shared machine: interleaved repeats, medians, spreads, and a loud refusal.

Benchmarks compare a baseline and ours measured in one process. Timing them one after the other lets a
neighbour's burst land on one side only; so every round here runs each candidate once, in turn (ABAB...),
each figure is the median of its rounds, and the spread ((max - min) / median, the extremes dropped from
five rounds on) says how much the rounds disagreed. :func:`check_spread` stops the benchmark when the
spread is too large for its ratio to mean anything, rather than printing a number that is noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
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
    before: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, Timing]:
    """Time every candidate ``rounds`` times, one round of each in turn (after one untimed warm-up call
    each, which builds kernels and caches); ``sync`` waits for an accelerator before a clock is read.
    ``before[name]``, when given, runs untimed before every call of that candidate (warm-up included), to
    undo what the previous call left behind (e.g. drop a cached index so that every round builds it)."""
    setup = before or {}
    if warmup:
        for name, fn in candidates.items():
            setup.get(name, _nothing)()
            fn()
            sync()
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            setup.get(name, _nothing)()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(name, values) for name, values in seconds.items()}


def _nothing() -> None:
    return None


def environment() -> str:
    """What the figures depend on: load average, cores and the thread counts in use (FAISS's too when the
    benchmark imported it: its searches run on their own OpenMP threads)."""
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    faiss = sys.modules.get("faiss")
    faiss_threads = f", faiss {faiss.omp_get_max_threads()} threads" if faiss is not None else ""
    return (
        f"load average {load}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads{faiss_threads}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}"
    )


def check_spread(timings: dict[str, Timing], limit: float = 0.3) -> None:
    """Stop (exit status 2) when any candidate's rounds disagree by more than ``limit``: the machine was
    too busy for a ratio between them to be meaningful; run the benchmark again on a quieter machine."""
    noisy = [t for t in timings.values() if t.spread > limit]
    if noisy:
        names = ", ".join(f"{t.name} {t.spread:.0%}" for t in noisy)
        print(
            f"spread above {limit:.0%} ({names}): the machine is too noisy for this ratio; "
            f"{environment()}; run again when it is quieter",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)  # SystemExit("message") would exit 1, like any error


# --- what the ratio benchmarks share: options, one measured comparison, a verdict per goal ---------------


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """``--quick`` (a smoke run of seconds), ``--rounds`` and ``--max-spread``: the same knobs in every
    benchmark that compares candidates, so a noisy run is rerun the same way everywhere."""
    ap.add_argument("--quick", action="store_true", help="Tiny sizes: a smoke run of seconds, not a figure.")
    ap.add_argument("--rounds", type=int, default=5, help="Interleaved rounds per candidate [5].")
    ap.add_argument(
        "--max-spread",
        type=float,
        default=0.3,
        help="Exit 2 when a candidate's trimmed spread exceeds this [0.3].",
    )


def measure(
    candidates: dict[str, Callable[[], object]],
    args: argparse.Namespace,
    work: float = 0.0,
    unit: str = "",
    sync: Callable[[], None] = lambda: None,
    before: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, Timing]:
    """:func:`interleaved` rounds, one line per candidate (median, spread), then :func:`check_spread`:
    the noisy figures are still shown, but no ratio is judged on them."""
    timings = interleaved(candidates, args.rounds, sync, before=before)
    for t in timings.values():
        print(t.line(work, unit), flush=True)
    check_spread(timings, args.max_spread)
    return timings


def judge(ours: Timing, baseline: Timing, goal: float, faster: bool) -> bool:
    """Print ours against the named baseline with the goal and PASS/FAIL; True when the goal is met.

    ``faster``: the goal is a speed-up over the baseline (baseline / ours >= goal); otherwise a cost over a
    floor (ours / baseline <= goal), e.g. at most 2x the bare matrix products."""
    if faster:
        ratio = baseline.median / ours.median
        claim = f"{ours.name}: {ratio:.2f}x faster than {baseline.name} (goal >= {goal:g}x)"
        return check(ratio >= goal, claim)
    ratio = ours.median / baseline.median
    return check(ratio <= goal, f"{ours.name}: {ratio:.2f}x of {baseline.name} (goal <= {goal:g}x)")


def check(met: bool, claim: str) -> bool:
    """Print one goal's line, PASS or FAIL first so that a reader (or grep) finds verdicts at once."""
    print(f"{'PASS' if met else 'FAIL'}  {claim}", flush=True)
    return met


def info(claim: str) -> None:
    """Print a figure that has no goal, aligned with the verdict lines."""
    print(f"info  {claim}", flush=True)


def verdict(results: list[bool]) -> None:
    """The last line: how many goals were met (the exit status stays 0; only noise exits 2)."""
    met = sum(results)
    print(f"goals met: {met} of {len(results)}{'' if met == len(results) else ' - FAIL'}; {environment()}")
