"""Velocity figures for rules (`stats.count`, `stats.approved_sum`): one service, one action type.

Callers that enforce a cap hold the per-service-and-type advisory lock (taken by
approvals/decisions.py, inside the submit's transaction), so the figures they read cannot move
under them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q

from approvals.models import Proposal
from config.env import parse_duration

OUTCOMES = ("approve", "reject", "review", "any")
# The states an approved proposal can be in; with decided_at they use the proposal_velocity
# index (service, action_type, state, decided_at) instead of every row of the service and type.
_STATES = {
    "approve": [
        Proposal.State.APPROVED,
        Proposal.State.EXECUTING,
        Proposal.State.EXECUTED,
        Proposal.State.FAILED,
    ],
    "reject": [Proposal.State.REJECTED],
}


def count(
    *, service_id: int, action_type_id: int, outcome: str, window: str, as_of: datetime
) -> int:
    """Proposals in `window` before `as_of`: decided `approve`/`reject`, routed to `review`, or `any`."""
    since = as_of - parse_duration(window)
    rows = Proposal.objects.filter(service_id=service_id, action_type_id=action_type_id)
    if outcome in ("approve", "reject"):
        rows = rows.filter(
            state__in=_STATES[outcome],
            decision_outcome=outcome,
            decided_at__gte=since,
            decided_at__lte=as_of,
        )
    elif outcome == "review":
        rows = rows.filter(created_at__gte=since, created_at__lte=as_of).exclude(
            Q(decided_by=Proposal.DecidedBy.RULE) | Q(decided_by=Proposal.DecidedBy.POLICY)
        )
    elif outcome == "any":
        rows = rows.filter(created_at__gte=since, created_at__lte=as_of)
    else:
        raise ValueError(f"stats.count: unknown outcome {outcome!r} ({', '.join(OUTCOMES)})")
    return rows.count()


def _path(field_path: str) -> list[str]:
    parts = field_path.split(".")
    if len(parts) < 2 or parts[0] != "payload" or not all(parts[1:]):
        raise ValueError(f"stats.approved_sum: {field_path!r} is not a path such as payload.amount")
    return parts[1:]


# The sum over proposals themselves, decided in [since, until) or [since, until]: for the
# edges of a window and where the per-minute sums cannot answer. Numeric, as those sums are.
def _raw_sum_sql(since: str, until: str, upper: str) -> str:
    return f"""
    SELECT COALESCE(SUM(CASE
        WHEN jsonb_typeof(COALESCE(final_payload, payload) #> %(path)s) = 'number'
        THEN (COALESCE(final_payload, payload) #>> %(path)s)::numeric ELSE 0 END), 0)
    FROM approvals_proposal
    WHERE service_id = %(service)s AND action_type_id = %(type)s AND state = ANY(%(states)s)
      AND decision_outcome = 'approve' AND decided_at >= %({since})s
      AND decided_at {upper} %({until})s
    """  # noqa: S608 - only names of parameters are formatted in


_RAW_SUM = _raw_sum_sql("since", "until", "<=")

# Whole minutes [first, last) from approvals_approvedsum (migration 0010), the partial ones at
# the edges from the proposals; and whether a minute in between holds an approval whose payload
# had too many fields to be summed there (then the caller sums the whole window raw).
_BUCKETED_SUM = f"""
    SELECT
        (SELECT COALESCE(SUM(total), 0) FROM approvals_approvedsum
         WHERE service_id = %(service)s AND action_type_id = %(type)s AND path = %(dotted)s
           AND minute >= %(first)s AND minute < %(last)s)
        + ({_raw_sum_sql("since", "first", "<")})
        + ({_raw_sum_sql("last", "until", "<=")}),
        EXISTS (SELECT FROM approvals_approvedsum
         WHERE service_id = %(service)s AND action_type_id = %(type)s AND path = ''
           AND minute >= %(first)s AND minute < %(last)s AND total > 0)
"""  # noqa: S608 - only constant SQL is formatted in


def _minute_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _may_index_an_array(part: str) -> bool:
    """PostgreSQL's #> reads `0` or `-1` as an array index where the value is an array."""
    return part.lstrip("-").isdigit()


def approved_sum(
    *, service_id: int, action_type_id: int, field_path: str, window: str, as_of: datetime
) -> float:
    """The sum of a numeric payload field over approved proposals decided in `window`.

    A reviewer's edit counts (the executed payload); a missing or non-numeric value counts 0.
    On PostgreSQL whole minutes come from the per-minute sums the triggers of migration 0010
    keep (a 24-hour window reads at most 1,440 rows however many approvals it holds), the
    partial minutes at its edges from the proposals. A path through an array index
    (`payload.items.0.amount`) is not kept per minute and is summed from the proposals.
    """
    path = _path(field_path)
    since = as_of - parse_duration(window)
    if connection.vendor == "postgresql":
        params: dict[str, Any] = {
            "path": path,
            "service": service_id,
            "type": action_type_id,
            "states": list(_STATES["approve"]),
            "since": since,
            "until": as_of,
        }
        first, last = _minute_floor(since), _minute_floor(as_of)
        if first < since:
            first += timedelta(minutes=1)
        with connection.cursor() as cursor:
            if first < last and not any(_may_index_an_array(part) for part in path):
                params.update(dotted=".".join(path), first=first, last=last)
                cursor.execute(_BUCKETED_SUM, params)
                total, overflowed = cursor.fetchone()
                if not overflowed:
                    return float(total)
            cursor.execute(_RAW_SUM, params)
            return float(cursor.fetchone()[0])
    total = 0.0
    rows = Proposal.objects.filter(
        service_id=service_id,
        action_type_id=action_type_id,
        decision_outcome="approve",
        decided_at__gte=since,
        decided_at__lte=as_of,
    ).values_list("payload", "final_payload")
    for payload, final in rows:
        value = final if final is not None else payload
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            total += float(value)
    return total
