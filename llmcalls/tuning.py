"""Choosing a semantic cache's threshold from labelled paraphrase pairs, with an error bound.

At each threshold, a pair whose similarity reaches it is a hit: a right hit if the pair has the
same answer, a wrong one if not. The one-sided 95% Clopper-Pearson upper bound on the wrong-hit
rate (wrong hits / hits) must be below the target; the lowest such threshold serves the most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n of a few thousand is fine)."""
    if p <= 0:
        return 1.0
    if p >= 1:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        log_term = (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * log_p
            + (n - i) * log_q
        )
        total += math.exp(log_term)
    return min(total, 1.0)


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """The exact one-sided upper bound on a rate after k events in n trials (1.0 when n = 0)."""
    if n == 0 or k >= n:
        return 1.0
    alpha = 1 - confidence
    low, high = k / n, 1.0
    for _ in range(60):  # bisection: P(X <= k; n, p) falls as p grows
        middle = (low + high) / 2
        if _binom_cdf(k, n, middle) > alpha:
            low = middle
        else:
            high = middle
    return high


@dataclass(frozen=True)
class Row:
    threshold: float
    hits: int
    wrong: int
    precision: float | None  # right hits / hits
    hit_rate: float  # same-answer pairs that hit / same-answer pairs
    wrong_upper: float  # 95% upper bound on wrong hits / hits

    def meets(self, target: float) -> bool:
        return self.hits > 0 and self.wrong_upper < target


def table(
    scored: list[tuple[float, bool]], thresholds: list[float], confidence: float = 0.95
) -> list[Row]:
    """One row per threshold; `scored` holds (similarity, same answer) per pair."""
    same_total = sum(1 for _, same in scored if same)
    rows = []
    for threshold in thresholds:
        hits = [same for similarity, same in scored if similarity >= threshold]
        wrong = sum(1 for same in hits if not same)
        rows.append(
            Row(
                threshold,
                len(hits),
                wrong,
                (len(hits) - wrong) / len(hits) if hits else None,
                (len(hits) - wrong) / same_total if same_total else 0.0,
                clopper_pearson_upper(wrong, len(hits), confidence),
            )
        )
    return rows


def pick(rows: list[Row], target: float) -> Row | None:
    """The lowest threshold whose bound is below the target (and every higher one's too)."""
    chosen = None
    for row in sorted(rows, key=lambda r: r.threshold, reverse=True):
        if not row.meets(target) and row.hits:
            break
        if row.hits:
            chosen = row
    return chosen
