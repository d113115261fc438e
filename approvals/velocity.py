"""Velocity figures for rules (`stats.count`, `stats.approved_sum`): one service, one action type.

Callers that enforce a cap hold the per-service-and-type advisory lock (taken by
approvals/decisions.py, inside the submit's transaction), so the figures they read cannot move
under them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q

from approvals import locks
from approvals.models import Proposal
from config.env import parse_duration

OUTCOMES = ("approve", "reject", "review", "any")
# The states a decided proposal can be in, by outcome; with the outcome and decided_at they read
# the index proposal_outcome_decided (service, action_type, decision_outcome, decided_at) rather
# than every row of the service and type.
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


def approved_sum(
    *, service_id: int, action_type_id: int, field_path: str, window: str, as_of: datetime
) -> float:
    """The sum of a numeric payload field over approved proposals decided in `window`.

    A reviewer's edit counts (the executed payload); a missing or non-numeric value counts 0.
    On PostgreSQL, for a top-level field, whole hours and minutes of the window come from the
    sums a trigger keeps (ApprovedHourSum and ApprovedSum, migrations 0013 and 0017) and the
    partial minutes at both ends from the proposals, in one statement: the same figure, read
    from at most ~140 rows for a day rather than from every approval in it (float8 additions in
    another order: the last bits may differ).
    """
    path = _path(field_path)
    since = as_of - parse_duration(window)
    if connection.vendor == "postgresql":
        if len(path) == 1 and len(path[0]) <= MAX_SUMMED_FIELD:
            total = _approved_sum_by_minute(
                service_id=service_id,
                action_type_id=action_type_id,
                field=path[0],
                since=since,
                as_of=as_of,
            )
            if total is not None:
                return total
        return _approved_sum_rows(
            service_id=service_id,
            action_type_id=action_type_id,
            path=path,
            since=since,
            as_of=as_of,
        )
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


MAX_SUMMED_FIELD = 200  # longer keys are not summed by minute (the trigger skips them)

# The sum of a payload path over the approved proposals of one service and type decided in
# [since, until): a plpgsql function whose plan PostgreSQL makes once per connection (approvals
# 0019), where the statement itself would be planned anew each time against the proposals'
# 18 indexes; its parameters are service, type, path, since, until.
_ROWS_SUM = "gatehouse_approved_rows_sum(%s, %s, %s, %s, %s)"
# decided_at <= as_of, as a bound the range excludes: PostgreSQL and Python keep microseconds.
_INCLUSIVE = timedelta(microseconds=1)


def _approved_sum_rows(
    *, service_id: int, action_type_id: int, path: list[str], since: datetime, as_of: datetime
) -> float:
    """The plain sum over every approval in the window (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_ROWS_SUM}",
            [service_id, action_type_id, path, since, as_of + _INCLUSIVE],
        )
        return float(cursor.fetchone()[0])


# The whole hours [hour, last_hour) from ApprovedHourSum and the whole minutes [first, hour) and
# [last_hour, last) from ApprovedSum: a plpgsql function whose plan PostgreSQL makes once per
# connection (approvals 0021), each table read through its unique index bound on every column
# (the minutes' from the index alone: it carries `total`, 0016); its parameters are service,
# type, field, first, hour, last_hour, last.
_WHOLE_SUMS = "gatehouse_whole_sums(%s, %s, %s, %s, %s, %s, %s)"
# `last` of a window that is open (the spend cap's, read under its lock: lock_and_sum): no
# minute reaches it.
_OPEN = datetime.max.replace(tzinfo=UTC)


def _minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _by_minute(
    *,
    service_id: int,
    action_type_id: int,
    field: str,
    since: datetime,
    as_of: datetime,
    bounded: bool = True,
) -> tuple[str, list[Any]] | None:
    """The two columns of the by-minute sum (whole hours and minutes; the rows at both ends) and
    their parameters; None when the window has no whole minute.

    Not `bounded`, the window has no upper bound: from `as_of`'s minute on every minute row
    counts whole, so the end of the window is read from ApprovedSum rather than from the
    proposals (the same approvals: a minute row is the sum of those decided in it, kept in the
    same transaction), and the proposals are read at the start only: under the spend cap's
    lock, on every submit."""
    first = _minute(since)
    last = _minute(as_of)
    if first != since:
        first += timedelta(minutes=1)
    if first >= last:
        return None
    hour = first.replace(minute=0)
    if hour != first:
        hour += timedelta(hours=1)
    last_hour = last.replace(minute=0)
    if hour >= last_hour:  # no whole hour: every whole minute from ApprovedSum
        hour = last_hour = last
    wholes = [service_id, action_type_id, field, first, hour, last_hour]
    rows_key: list[Any] = [service_id, action_type_id, [field]]
    if not bounded:
        return f"{_WHOLE_SUMS}, {_ROWS_SUM}", [*wholes, _OPEN, *rows_key, since, first]
    # Two ranges rather than one OR: each is an index range of proposal_outcome_decided.
    sql = f"{_WHOLE_SUMS}, {_ROWS_SUM} + {_ROWS_SUM}"
    return sql, [*wholes, last, *rows_key, since, first, *rows_key, last, as_of + _INCLUSIVE]


def _approved_sum_by_minute(
    *, service_id: int, action_type_id: int, field: str, since: datetime, as_of: datetime
) -> float | None:
    """Whole hours [hour, last_hour) from ApprovedHourSum, the whole minutes around them
    [first, hour) and [last_hour, last) from ApprovedSum, [since, first) and [last, as_of] from
    the proposals; None when there is no whole minute, or a minute or hour holds a value it
    cannot sum (NaN): then the caller sums the rows."""
    statement = _by_minute(
        service_id=service_id,
        action_type_id=action_type_id,
        field=field,
        since=since,
        as_of=as_of,
    )
    if statement is None:
        return None
    sql, params = statement
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)
        return _total(cursor.fetchone())


def _total(row: tuple[float, float]) -> float | None:
    sums, rows = row
    if math.isnan(sums):
        return None
    return float(sums) + float(rows)


def lock_and_sum(
    *,
    lock: tuple[Any, ...],
    service_id: int,
    action_type_id: int,
    sums: Iterable[tuple[str, str]],
    now: datetime,
) -> dict[tuple[str, str], float]:
    """Take the transaction-scoped advisory lock of `lock` (its parts) and read the
    `approved_sum` of each (field_path, window) in one round trip: the figures a decision under
    the lock would read, by (field_path, window). Only sums the trigger's tables answer are read
    ahead (a top-level field, a window of whole minutes); the others, and a sum a minute or hour
    cannot hold (NaN), are read as the rules run, after the lock. Elsewhere than PostgreSQL the
    lock is the write transaction's and nothing is read ahead.

    The lock and the sums are two statements sent together: in READ COMMITTED each takes its
    snapshot when it starts, so the sums see every approval committed before the lock was
    granted. Their window runs from `now` (taken before the lock) less the window, with no
    upper bound: an approval committed while this waited for the lock counts even when its
    decision time is later than `now`. The proposals are read for the window's first partial
    minute only; from `now`'s minute on, the minute rows answer (`_by_minute`).
    """
    if connection.vendor != "postgresql":
        locks.advisory_xact_lock(*lock)
        return {}
    columns: list[str] = []
    params: list[Any] = [locks.advisory_lock_key(*lock)]
    keys: list[tuple[str, str]] = []
    for field_path, window in sorted(set(sums)):
        try:  # a call that cannot be read fails when the rule runs it (closed, with its error)
            path, since = _path(field_path), now - parse_duration(window)
        except (ValueError, OverflowError):
            continue
        if len(path) != 1 or len(path[0]) > MAX_SUMMED_FIELD:
            continue
        statement = _by_minute(
            service_id=service_id,
            action_type_id=action_type_id,
            field=path[0],
            since=since,
            as_of=now,
            bounded=False,
        )
        if statement is None:
            continue
        columns.append(statement[0])
        params.extend(statement[1])
        keys.append((field_path, window))
    with connection.cursor() as cursor:
        if not columns:
            cursor.execute(locks.XACT_LOCK, params)
            return {}
        cursor.execute(f"{locks.XACT_LOCK}; SELECT {', '.join(columns)}", params)
        cursor.nextset()
        row = cursor.fetchone()
    figures = {}
    for index, key in enumerate(keys):
        total = _total(row[2 * index : 2 * index + 2])
        if total is not None:
            figures[key] = total
    return figures
