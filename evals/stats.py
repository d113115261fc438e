"""The statistics evals need, in plain Python.

- `wilson`: the Wilson score interval for a proportion (Wilson 1927; Newcombe 1998, method 3).
  Unlike the normal approximation it stays inside [0, 1] and behaves at 0/n and n/n.
- `mcnemar_exact`: the exact (binomial) McNemar test for paired right/wrong outcomes. Only the
  discordant pairs carry information: b cases went right→wrong, c went wrong→right; under "no
  change" each discordant pair is a fair coin, so p = P(|X - n/2| >= |b - n/2|), X ~ Bin(b+c, ½).
- `percentile`: linear interpolation between closest ranks (NumPy's default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def wilson(successes: int, n: int, *, z: float = Z95) -> Interval:
    """The Wilson score interval for `successes` out of `n` (no continuity correction)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return Interval(0.0, 1.0)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0/n and n/n one bound is exactly 0 or 1; rounding must not put it a hair outside.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b right→wrong and c wrong→right pairs."""
    if b < 0 or c < 0:
        raise ValueError("counts must not be negative")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # Exact integer arithmetic, then one division: no underflow for large n.
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = math.ceil(position)
    if below == above:
        return float(ordered[below])
    return float(ordered[below] + (ordered[above] - ordered[below]) * (position - below))
