"""Agreement maths, intervals, breakdowns, calibration bands and the threshold suggestion."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from approvals.models import ActionType
from insights import selectors, stats


def test_agreement_counts_only_unchanged_approvals_with_a_wilson_interval(
    plant: Callable[..., Any], refund_type: ActionType
) -> None:
    at = timezone.now() - timedelta(hours=1)
    plant(8, "agreed", at=at)
    plant(1, "edited", at=at)
    plant(1, "rejected", at=at)
    rows = selectors.verdicts(action_type=refund_type)
    rate = selectors.agreement(rows)
    assert (rate.hits, rate.n, rate.rate) == (8, 10, 0.8)
    # Wilson 95% for 8/10, by hand: centre (0.8 + 1.96²/20) / (1 + 1.96²/10) = 0.71674,
    # half-width 1.96 / 1.38415 * sqrt(0.016 + 1.96²/400) = 0.22658.
    assert rate.low == pytest.approx(0.49016, abs=1e-4)
    assert rate.high == pytest.approx(0.94332, abs=1e-4)
    assert selectors.breakdown(rows) == {"agreed": 8, "edited": 1, "rejected": 1}


def test_agreement_by_model_prompt_and_band(
    plant: Callable[..., Any], refund_type: ActionType
) -> None:
    at = timezone.now() - timedelta(hours=1)
    plant(3, "agreed", at=at, model="a", prompt_version="p1", confidence=0.95)
    plant(1, "rejected", at=at, model="a", prompt_version="p2", confidence=0.55)
    plant(2, "edited", at=at, model="b", prompt_version="p2", confidence=0.55)
    rows = selectors.verdicts(action_type=refund_type)
    by_model = dict(selectors.agreement_by(rows, lambda v: v.model))
    assert (by_model["a"].hits, by_model["a"].n) == (3, 4)
    assert (by_model["b"].hits, by_model["b"].n) == (0, 2)
    by_prompt = dict(selectors.agreement_by(rows, lambda v: v.prompt_version))
    assert (by_prompt["p1"].rate, by_prompt["p2"].rate) == (1.0, 0.0)
    by_band = dict(
        selectors.agreement_by(
            rows, lambda v: selectors.band_label(selectors.band_of(v.confidence))
        )
    )
    assert set(by_band) == {"0.9-1.0", "0.5-0.6"}
    assert by_band["0.5-0.6"].n == 3


def test_rolling_windows_only_count_verdicts_inside_them(
    plant: Callable[..., Any], refund_type: ActionType, settings: Any
) -> None:
    settings.INSIGHTS_WINDOW = timedelta(days=1)
    now = timezone.now()
    plant(10, "agreed", at=now - timedelta(days=1, hours=12))
    plant(10, "rejected", at=now - timedelta(hours=2))
    rows = selectors.verdicts(action_type=refund_type)
    series = selectors.agreement_series(rows, start=now - timedelta(days=2), end=now, points=2)
    assert [(p["hits"], p["n"]) for p in series] == [(10, 10), (0, 10)]


def test_calibration_bands_and_threshold_suggestion_match_hand_computed_values(
    plant: Callable[..., Any], refund_type: ActionType
) -> None:
    at = timezone.now() - timedelta(hours=1)
    plant(100, "agreed", at=at, confidence=0.95)
    plant(98, "agreed", at=at, confidence=0.85)
    plant(2, "rejected", at=at, confidence=0.85)
    plant(40, "agreed", at=at, confidence=0.75)
    plant(10, "edited", at=at, confidence=0.75)
    rows = selectors.verdicts(action_type=refund_type)

    bands = {b.label: b for b in selectors.calibration(rows)}
    assert (bands["0.9-1.0"].agreement.n, bands["0.9-1.0"].agreement.rate) == (100, 1.0)
    assert (bands["0.8-0.9"].agreement.n, bands["0.8-0.9"].agreement.rate) == (100, 0.98)
    assert (bands["0.7-0.8"].agreement.n, bands["0.7-0.8"].agreement.rate) == (50, 0.8)
    assert bands["0.8-0.9"].mean_confidence == pytest.approx(0.85)
    assert bands["0.1-0.2"].agreement.n == 0

    # Target 5%: at >= 0.95, 0 errors in 100: one-sided upper bound z²/(n+z²) = 0.02634.
    # At >= 0.85, 2 in 200: upper bound 0.02977 (Wilson, z = 1.645), still below 5%.
    # At >= 0.75, 12 in 250 (4.8%): the upper bound is above 5%. So: 0.85.
    suggestion = selectors.threshold_suggestion(rows, target=0.05)
    assert suggestion is not None
    assert (suggestion.threshold, suggestion.n, suggestion.errors) == (0.85, 200, 2)
    assert suggestion.upper == pytest.approx(0.02977, abs=1e-4)
    assert stats.upper_bound(0, 100) == pytest.approx(0.02634, abs=1e-4)
    assert stats.upper_bound(12, 250) > 0.05
    # A stricter target than the data can support: no suggestion.
    assert selectors.threshold_suggestion(rows, target=0.02) is None


def test_version_markers_are_each_versions_first_time_after_the_first_version(
    plant: Callable[..., Any], refund_type: ActionType
) -> None:
    """The loose index scan (PostgreSQL) finds what grouping every proposal finds."""
    now = timezone.now()
    plant(2, "agreed", at=now - timedelta(days=9), model="a", prompt_version="p1")
    plant(1, "agreed", at=now - timedelta(days=8), model="a", prompt_version="p2")
    plant(1, "rejected", at=now - timedelta(hours=30), model="b", prompt_version="p2")
    plant(1, "agreed", at=now - timedelta(hours=20), model="b", prompt_version="p2")
    plant(1, "agreed", at=now - timedelta(hours=5), model="", prompt_version="")
    plant(1, "agreed", at=now - timedelta(hours=2), model="a", prompt_version="p1")  # not new
    changes = selectors.version_changes(action_type=refund_type, since=now - timedelta(days=2))
    assert [(c["model"], c["prompt"]) for c in changes] == [("b", "p2"), ("", "")]
    assert changes[0]["at"] == (now - timedelta(hours=30)).isoformat()
    everything = selectors.version_changes(action_type=refund_type, since=now - timedelta(days=99))
    assert [(c["model"], c["prompt"]) for c in everything] == [("a", "p2"), ("b", "p2"), ("", "")]


def test_verdicts_are_the_periods_reviewer_decisions_of_the_type_oldest_first(
    plant: Callable[..., Any], refund_type: ActionType, email_type: ActionType
) -> None:
    """Edited and unedited verdicts are read apart (one index each) and come back as one list in
    time order, [since, until) only, without rule decisions or another type's verdicts."""
    from approvals.models import Proposal

    now = timezone.now()
    kinds = ["edited", "agreed", "rejected", "edited", "agreed", "rejected", "agreed"]
    planted = {}
    for hours, kind in enumerate(kinds):
        at = now - timedelta(hours=hours + 1)
        planted[plant(1, kind, at=at)[0].pk] = (at, kind)
        plant(1, kind, at=at, action_type=email_type)
    ruled = plant(1, "agreed", at=now - timedelta(hours=2, minutes=30))[0]
    Proposal.objects.filter(pk=ruled.pk).update(decided_by=Proposal.DecidedBy.RULE)
    plant(1, "edited", at=now - timedelta(days=2))  # before the period
    plant(1, "agreed", at=now)  # at `until`: outside

    rows = selectors.verdicts(action_type=refund_type, since=now - timedelta(days=1), until=now)

    assert [(v.proposal_id, v.created_at, v.kind) for v in rows] == [
        (pk, at, kind) for pk, (at, kind) in sorted(planted.items(), key=lambda item: item[1][0])
    ]
