"""Sampled pair histograms: uniform random inter-class pairs and a stated error bound per bin.

An exact histogram counts every pair: N(N-1)/2 of them, 5e9 at 10^5 samples and 5e11 at 10^6. When that
costs too much, ``synthdb stats histogram --sample PAIRS`` draws PAIRS inter-class pairs uniformly at
random, independently (with replacement), and scales each bin's share of them to the class's pairs. The
draws of one bin are then binomial, so its bounds are Wilson score intervals; each of the B + 2 outcomes
(the bins, below and above the range) gets an equal part of the risk (Bonferroni), so with probability
about ``confidence`` every bin's exact count lies within its bounds at once (Wilson intervals are an
approximation: close to their nominal coverage, a little below it for bins of very few draws; the
Bonferroni split is conservative, which more than makes up for it in practice). Intra-class pairs are few
(the sum of s(s-1)/2 over identity sizes s) and are always counted exactly.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from synthdb.errors import SynthdbError

CONFIDENCE = 0.99


def inter_pairs(starts: np.ndarray) -> int:
    """Pairs of samples of different identities, given the identity block starts of the sorted samples."""
    n = int(starts[-1])
    sizes = np.diff(starts).astype(np.int64)
    return n * (n - 1) // 2 - int((sizes * (sizes - 1) // 2).sum())


class InterPairSampler:
    """Draws pairs of samples of different identities uniformly, from samples sorted by identity.

    No rejection (one identity may hold nearly every sample): identity k is drawn with weight
    s_k (N - s_k), one sample uniformly among its s_k and the other uniformly among the N - s_k samples
    outside it, so every ordered inter-class pair has the same probability, and so has every unordered one.
    """

    def __init__(self, starts: np.ndarray) -> None:
        self.starts = np.asarray(starts, np.int64)
        self.sizes = np.diff(self.starts)
        self.n = int(self.starts[-1])
        weights = self.sizes.astype(np.float64) * (self.n - self.sizes)
        if weights.sum() == 0:
            raise SynthdbError("every sample belongs to one identity: there is no inter-class pair to sample")
        self.cdf = np.cumsum(weights) / weights.sum()

    def draw(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``count`` pairs as two arrays of positions in the sorted order."""
        block = np.minimum(np.searchsorted(self.cdf, rng.random(count), side="right"), len(self.cdf) - 1)
        first, size = self.starts[block], self.sizes[block]
        a = first + rng.integers(0, size)
        u = rng.integers(0, self.n - size)
        return a, np.where(u < first, u, u + size)  # u skips the block of a's identity


def simultaneous_bounds(
    counts: np.ndarray, draws: int, confidence: float, outcomes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the probabilities of outcomes that fell ``counts`` times in ``draws``:
    Wilson score intervals, Bonferroni-corrected for ``outcomes`` outcomes so that they hold at once."""
    if not 0 < confidence < 1:
        raise SynthdbError(f"confidence {confidence} is not a probability: use e.g. 0.99")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / (2 * outcomes))
    p = counts / draws
    z2n = z * z / draws
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * np.sqrt(p * (1 - p) / draws + z2n / (4 * draws))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
