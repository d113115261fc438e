"""Reads: reviewer verdicts as labels on the model's proposals, and what they say.

A proposal a reviewer decided is a verdict on the model: `agreed` (approved as proposed),
`edited` (approved after an edit) or `rejected`. Agreement is the share of `agreed`; anything
else is an error of the model. Proposals decided by rules carry no verdict and are left out,
except the audit samples, which rules would have approved and a reviewer judged instead.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, Min, QuerySet, Value
from django.utils import timezone

from approvals.models import ActionType, Proposal
from insights import stats
from insights.models import Alert, AuditSample, Brake, RuleDraft, TypeSettings

# Confidence bands of the reliability chart: [0, 0.1), [0.1, 0.2), … [0.9, 1.0].
BANDS: list[tuple[float, float]] = [(i / 10, (i + 1) / 10) for i in range(10)]
CHART_WINDOWS = 4  # the chart spans this many windows …
POINTS_PER_WINDOW = 6  # … with this many points in each


@dataclass(frozen=True)
class Verdict:
    proposal_id: uuid.UUID
    created_at: datetime
    model: str
    prompt_version: str
    confidence: float
    kind: str  # agreed | edited | rejected

    @property
    def agreed(self) -> bool:
        return self.kind == "agreed"


def verdicts(
    *,
    action_type: ActionType,
    since: datetime | None = None,
    until: datetime | None = None,
    proposal_ids: Iterable[uuid.UUID] | None = None,
) -> list[Verdict]:
    """Reviewer-decided proposals of a type created in [since, until), oldest first.

    Read as two halves, the proposals reviewers left as proposed and those they edited: each
    half is an index-only scan of its own partial index (proposal_verdicts_unedited and
    proposal_verdicts_edited), whatever the planner guesses of how many rows the period holds."""
    rows = Proposal.objects.filter(action_type=action_type, decided_by=Proposal.DecidedBy.REVIEWER)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    if proposal_ids is not None:
        rows = rows.filter(pk__in=list(proposal_ids))
    columns = ("pk", "created_at", "model", "prompt_version", "confidence", "decision_outcome")
    unedited = (
        rows.filter(final_payload__isnull=True)
        .annotate(edited=Value(False, output_field=BooleanField()))
        .values_list(*columns, "edited")
    )
    edited = (
        rows.filter(final_payload__isnull=False)
        .annotate(edited=Value(True, output_field=BooleanField()))
        .values_list(*columns, "edited")
    )
    result = []
    for pk, created, model, prompt, confidence, outcome, was_edited in unedited.union(
        edited, all=True
    ).order_by("created_at"):
        kind = "rejected" if outcome != "approve" else ("edited" if was_edited else "agreed")
        result.append(Verdict(pk, created, model, prompt, float(confidence), kind))
    return result


def agreement(rows: Sequence[Verdict]) -> stats.Rate:
    return stats.rate(sum(v.agreed for v in rows), len(rows))


def breakdown(rows: Sequence[Verdict]) -> dict[str, int]:
    counts = {"agreed": 0, "edited": 0, "rejected": 0}
    for v in rows:
        counts[v.kind] += 1
    return counts


def band_of(confidence: float) -> int:
    return min(int(confidence * 10), len(BANDS) - 1)


def band_label(index: int) -> str:
    low, high = BANDS[index]
    return f"{low:.1f}-{high:.1f}"


def agreement_by(
    rows: Sequence[Verdict], key: Callable[[Verdict], str]
) -> list[tuple[str, stats.Rate]]:
    groups: dict[str, list[Verdict]] = defaultdict(list)
    for v in rows:
        groups[key(v)].append(v)
    return [(name, agreement(group)) for name, group in sorted(groups.items())]


@dataclass(frozen=True)
class Band:
    label: str
    low: float
    high: float
    mean_confidence: float | None
    agreement: stats.Rate


def calibration(rows: Sequence[Verdict]) -> list[Band]:
    """Stated confidence per band against the share reviewers agreed with (reliability)."""
    groups: list[list[Verdict]] = [[] for _ in BANDS]
    for v in rows:
        groups[band_of(v.confidence)].append(v)
    return [
        Band(
            label=band_label(i),
            low=BANDS[i][0],
            high=BANDS[i][1],
            mean_confidence=(sum(v.confidence for v in g) / len(g)) if g else None,
            agreement=agreement(g),
        )
        for i, g in enumerate(groups)
    ]


@dataclass(frozen=True)
class Suggestion:
    threshold: float
    n: int
    errors: int
    upper: float  # one-sided 95% upper bound of the error rate at and above the threshold
    target: float


def threshold_suggestion(rows: Sequence[Verdict], *, target: float) -> Suggestion | None:
    """The lowest confidence t such that, among verdicts with confidence >= t, the error rate's
    one-sided 95% upper bound is below `target`; None when no threshold qualifies."""
    ordered = sorted(rows, key=lambda v: v.confidence, reverse=True)
    best: Suggestion | None = None
    n = errors = 0
    i = 0
    while i < len(ordered):
        t = ordered[i].confidence
        while i < len(ordered) and ordered[i].confidence == t:
            n += 1
            errors += not ordered[i].agreed
            i += 1
        upper = stats.upper_bound(errors, n)
        if upper < target:
            best = Suggestion(threshold=t, n=n, errors=errors, upper=upper, target=target)
    return best


def settings_for(action_type: ActionType) -> TypeSettings:
    found = TypeSettings.objects.filter(action_type=action_type).first()
    return found or TypeSettings(action_type=action_type)


@dataclass(frozen=True)
class AuditEstimate:
    sampled: int  # samples taken
    pending: int  # not decided by a reviewer yet
    errors: stats.Rate  # error rate of automatic approvals, from the decided samples


def audit_estimate(*, action_type: ActionType, since: datetime | None = None) -> AuditEstimate:
    """Error rate of automatic approvals, from the audit samples' verdicts.

    Samples are a uniform random share of the proposals rules approved, so the share of them
    reviewers did not accept as proposed estimates, without bias, that share among all
    automatic approvals (for the period's sampling fraction; see docs/insights.md).
    """
    samples = AuditSample.objects.filter(action_type=action_type)
    if since is not None:
        samples = samples.filter(created_at__gte=since)
    ids = list(samples.values_list("proposal_id", flat=True))
    judged = verdicts(action_type=action_type, proposal_ids=ids) if ids else []
    errors = sum(not v.agreed for v in judged)
    return AuditEstimate(
        sampled=len(ids), pending=len(ids) - len(judged), errors=stats.rate(errors, len(judged))
    )


def engaged_brake(action_type_id: int) -> Brake | None:
    return Brake.objects.filter(action_type_id=action_type_id, lifted_at__isnull=True).first()


def last_lift(action_type: ActionType) -> datetime | None:
    brake = (
        Brake.objects.filter(action_type=action_type, lifted_at__isnull=False)
        .order_by("-lifted_at")
        .first()
    )
    return brake.lifted_at if brake else None


def version_changes(*, action_type: ActionType, since: datetime) -> list[dict[str, Any]]:
    """Model or prompt versions first seen in proposals since `since` (not the very first one)."""
    return [
        {"at": first.isoformat(), "model": model, "prompt": prompt}
        for model, prompt, first in _first_seen(action_type)[1:]
        if first >= since
    ]


def _first_seen(action_type: ActionType) -> list[tuple[str, str, datetime]]:
    """Each (model, prompt version) of the type's proposals with its first time, oldest first.

    On PostgreSQL a loose index scan of proposal_type_versions (action type, model, prompt
    version, created_at): one index probe per version, however many proposals there are (on a
    million proposals: 1 ms, where grouping every row of the type took hundreds)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                """
                WITH RECURSIVE seen AS (
                    (SELECT model, prompt_version, created_at FROM approvals_proposal
                     WHERE action_type_id = %s
                     ORDER BY model, prompt_version, created_at LIMIT 1)
                    UNION ALL
                    SELECT later.* FROM seen, LATERAL (
                        SELECT model, prompt_version, created_at FROM approvals_proposal
                        WHERE action_type_id = %s
                          AND (model, prompt_version) > (seen.model, seen.prompt_version)
                        ORDER BY model, prompt_version, created_at LIMIT 1
                    ) AS later
                )
                SELECT model, prompt_version, created_at FROM seen ORDER BY created_at
                """,
                [action_type.pk, action_type.pk],
            )
            return [(model, prompt, first) for model, prompt, first in cursor.fetchall()]
    firsts = (
        Proposal.objects.filter(action_type=action_type)
        .values("model", "prompt_version")
        .annotate(first=Min("created_at"))
        .order_by("first")
    )
    return [(row["model"], row["prompt_version"], row["first"]) for row in firsts]


def agreement_series(
    rows: Sequence[Verdict], *, start: datetime, end: datetime, points: int
) -> list[dict[str, Any]]:
    """Agreement over rolling windows (one window wide) ending at `points` evenly spaced times."""
    width = (end - start) / points
    window = settings.INSIGHTS_WINDOW
    series = []
    for i in range(1, points + 1):
        at = start + width * i
        inside = [v for v in rows if at - window <= v.created_at < at]
        series.append({"at": at.isoformat(), **agreement(inside).as_dict()})
    return series


def _open_alerts_on(action_types: Iterable[ActionType] | None) -> QuerySet[Alert]:
    """Alerts nobody acknowledged, on these types (a queryset of them is a subquery) or on all."""
    alerts = Alert.objects.filter(acknowledged_at__isnull=True)
    if isinstance(action_types, QuerySet):
        return alerts.filter(action_type__in=action_types.values("pk"))
    if action_types is not None:
        return alerts.filter(action_type__in=list(action_types))
    return alerts


def open_alerts(*, action_types: Iterable[ActionType] | None = None) -> list[Alert]:
    return list(_open_alerts_on(action_types).select_related("action_type", "webhook"))


def banner_alerts(*, action_types: QuerySet[ActionType]) -> list[Alert]:
    """The open alerts on these types with what the banner on every reviewer page shows of
    them (kind, title, the type's key), in one statement: the types are its subquery."""
    return list(
        _open_alerts_on(action_types)
        .select_related("action_type")
        .only("kind", "title", "action_type__key")
    )


def type_overview(*, action_type: ActionType, now: datetime | None = None) -> dict[str, Any]:
    """Everything the page of one action type shows."""
    now = now or timezone.now()
    window: timedelta = settings.INSIGHTS_WINDOW
    start = now - window * CHART_WINDOWS
    rows = verdicts(action_type=action_type, since=start - window, until=now)
    in_span = [v for v in rows if v.created_at >= start]
    recent = [v for v in rows if v.created_at >= now - window]
    previous = [v for v in rows if now - 2 * window <= v.created_at < now - window]
    config = settings_for(action_type)
    return {
        "action_type": action_type,
        "settings": config,
        "window": window,
        "recent": agreement(recent),
        "recent_breakdown": breakdown(recent),
        "previous": agreement(previous),
        "span": agreement(in_span),
        "by_model": agreement_by(in_span, lambda v: v.model or "—"),
        "by_prompt": agreement_by(in_span, lambda v: v.prompt_version or "—"),
        "by_band": agreement_by(in_span, lambda v: band_label(band_of(v.confidence))),
        "calibration": calibration(in_span),
        "suggestion": threshold_suggestion(in_span, target=config.error_target),
        "audit": audit_estimate(action_type=action_type, since=start),
        "brake": engaged_brake(action_type.pk),
        "alerts": list(
            Alert.objects.filter(action_type=action_type).select_related("action_type", "webhook")[
                :20
            ]
        ),
        "drafts": list(
            RuleDraft.objects.filter(action_type=action_type).select_related("rule")[:5]
        ),
        "chart": {
            "series": agreement_series(
                rows, start=start, end=now, points=CHART_WINDOWS * POINTS_PER_WINDOW
            ),
            "changes": version_changes(action_type=action_type, since=start),
            "calibration": [
                {
                    "label": b.label,
                    "confidence": b.mean_confidence,
                    "agreement": b.agreement.rate,
                    "n": b.agreement.n,
                }
                for b in calibration(in_span)
            ],
        },
    }


def type_card(*, action_type: ActionType, now: datetime | None = None) -> dict[str, Any]:
    """The summary of one type on /insights/."""
    now = now or timezone.now()
    window: timedelta = settings.INSIGHTS_WINDOW
    rows = verdicts(action_type=action_type, since=now - 2 * window, until=now)
    return {
        "action_type": action_type,
        "recent": agreement([v for v in rows if v.created_at >= now - window]),
        "previous": agreement([v for v in rows if v.created_at < now - window]),
        "audit": audit_estimate(action_type=action_type, since=now - window),
        "settings": settings_for(action_type),
        "brake": engaged_brake(action_type.pk),
    }


# --- metrics (read when Prometheus scrapes; see telemetry/metrics.py) ---------------------------


def metrics_brakes_and_alerts() -> list[tuple[str, tuple[str, ...], float]]:
    """Engaged brakes (the partial unique index one_engaged_brake_per_type) and unacknowledged
    alerts per kind (the partial index alert_open): one query each."""
    from django.db.models import Count

    samples: list[tuple[str, tuple[str, ...], float]] = [
        ("gatehouse_brakes_engaged", (key,), 1.0)
        for key in Brake.objects.filter(lifted_at__isnull=True).values_list(
            "action_type__key", flat=True
        )
    ]
    for row in (
        Alert.objects.filter(acknowledged_at__isnull=True)
        .values("kind")
        .annotate(count=Count("id"))
        .order_by()
    ):
        samples.append(("gatehouse_open_alerts", (row["kind"],), row["count"]))
    return samples
