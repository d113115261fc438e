"""Statistics insights adds to evals.stats (whose Wilson interval it reuses).

- `rate`: a proportion with its two-sided 95% Wilson interval.
- `upper_bound` / `lower_bound`: one-sided 95% Wilson bounds (z = 1.645), for "below the target
  with 95% confidence" (threshold suggestions) and "significantly above it" (the brake).
- `drop_p_value`: one-sided two-proportion z-test (pooled) that the recent rate is lower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evals.stats import Z95, wilson

Z95_ONE_SIDED = 1.6448536269514722  # the 95th percentile of the standard normal


@dataclass(frozen=True)
class Rate:
    hits: int
    n: int
    rate: float | None
    low: float
    high: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "hits": self.hits,
            "n": self.n,
            "rate": self.rate,
            "low": self.low,
            "high": self.high,
        }


def rate(hits: int, n: int) -> Rate:
    interval = wilson(hits, n, z=Z95)
    return Rate(hits, n, hits / n if n else None, interval.low, interval.high)


def upper_bound(hits: int, n: int) -> float:
    return wilson(hits, n, z=Z95_ONE_SIDED).high


def lower_bound(hits: int, n: int) -> float:
    return wilson(hits, n, z=Z95_ONE_SIDED).low


def drop_p_value(before_hits: int, before_n: int, after_hits: int, after_n: int) -> float:
    """P(a drop at least this large | both windows share one rate); 1.0 when not computable."""
    if before_n == 0 or after_n == 0:
        return 1.0
    pooled = (before_hits + after_hits) / (before_n + after_n)
    variance = pooled * (1 - pooled) * (1 / before_n + 1 / after_n)
    if variance <= 0:
        return 1.0
    z = (before_hits / before_n - after_hits / after_n) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))
