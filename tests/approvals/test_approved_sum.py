"""stats.approved_sum read from per-hour and per-minute sums (ApprovedHourSum and ApprovedSum, kept
by a trigger on PostgreSQL) gives what summing every approval gives: on random data, after edits,
moves, state changes and deletes, at windows that start and end inside a minute or an hour or on
one, and under concurrent writers."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction

from approvals import velocity
from approvals.models import ActionType, ApprovedHourSum, ApprovedSum, Proposal, Service
from tests.conftest import ServiceClient
from tests.plans import copy_proposal, nested_plans, nodes, scans

APPROVED = ["approved", "executing", "executed", "failed"]
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the per-minute sums are kept by a PostgreSQL trigger",
)


def expected(
    service: Service, action_type: ActionType, field_path: str, since: datetime, as_of: datetime
) -> float:
    """The oracle: every approval in the window, summed in Python."""
    path = field_path.split(".")[1:]
    total = 0.0
    for row in Proposal.objects.filter(
        service=service,
        action_type=action_type,
        state__in=APPROVED,
        decision_outcome="approve",
        decided_at__gte=since,
        decided_at__lte=as_of,
    ):
        value: Any = row.effective_payload
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            total += float(value)
    return total


def random_amount(rng: random.Random) -> Any:
    return rng.choice(
        [
            round(rng.uniform(0, 500), 2),
            rng.randint(1, 1000),
            "12.5",  # a string counts 0
            True,  # so does a boolean
            None,
            -3.25,
            0,
        ]
    )


def random_payload(rng: random.Random) -> Any:
    payload: dict[str, Any] = {"order_id": f"ORD-{rng.randint(1, 9999)}"}
    if rng.random() < 0.9:
        payload["amount"] = random_amount(rng)
    if rng.random() < 0.3:
        payload["fee"] = {"amount": round(rng.uniform(0, 20), 2)}
    return payload


def random_moment(rng: random.Random) -> datetime:
    minutes = rng.randint(0, 420)
    if rng.random() < 0.05:  # exactly on an hour boundary
        return NOW - timedelta(hours=minutes // 60)
    if rng.random() < 0.2:  # exactly on a minute boundary
        return NOW - timedelta(minutes=minutes)
    return NOW - timedelta(minutes=minutes, seconds=rng.uniform(0, 60))


def make(service: Service, action_type: ActionType, rng: random.Random, **fields: Any) -> Proposal:
    state = rng.choice([*APPROVED, "approved", "rejected", "pending_review", "cancelled"])
    outcome = {"rejected": "reject", "pending_review": "", "cancelled": ""}.get(state, "approve")
    decided = random_moment(rng)
    values: dict[str, Any] = {
        "service": service,
        "action_type": action_type,
        "payload": random_payload(rng),
        "payload_hash": "x",
        "confidence": 0.9,
        "summary": "random",
        "state": state,
        "decision_outcome": outcome,
        "decided_by": "rule" if outcome else "",
        "decided_at": decided if outcome else None,
        "created_at": decided,
    }
    if outcome == "approve" and "payload" not in fields and rng.random() < 0.2:
        values["final_payload"] = random_payload(rng)
    values.update(fields)
    return Proposal.objects.create(**values)


def mutate(rows: list[Proposal], rng: random.Random) -> None:
    """Every kind of write the trigger must follow."""
    for row in rng.sample(rows, len(rows) // 2):
        change = rng.choice(["state", "edit", "move", "delete", "save", "unapprove"])
        if change == "state":
            Proposal.objects.filter(pk=row.pk).update(state=rng.choice(APPROVED))
        elif change == "edit":
            Proposal.objects.filter(pk=row.pk).update(final_payload=random_payload(rng))
        elif change == "move":
            Proposal.objects.filter(pk=row.pk).update(decided_at=random_moment(rng))
        elif change == "delete":
            Proposal.objects.filter(pk=row.pk).delete()
            rows.remove(row)
        elif change == "save":  # Django's save() writes every column, changed or not
            Proposal.objects.get(pk=row.pk).save()
        else:
            Proposal.objects.filter(pk=row.pk).update(state="rejected", decision_outcome="reject")


def assert_same_at_random_windows(
    services: list[Service], types: list[ActionType], rng: random.Random, checks: int = 60
) -> None:
    for _ in range(checks):
        service, action_type = rng.choice(services), rng.choice(types)
        window = rng.choice(["1h", "90m", "2h", "150s", "3h", "5h", "1d", "45s", "61m"])
        as_of = random_moment(rng) if rng.random() < 0.7 else NOW
        field = rng.choice(["payload.amount", "payload.amount", "payload.fee.amount"])
        since = as_of - velocity.parse_duration(window)
        got = velocity.approved_sum(
            service_id=service.pk,
            action_type_id=action_type.pk,
            field_path=field,
            window=window,
            as_of=as_of,
        )
        assert got == pytest.approx(expected(service, action_type, field, since, as_of), abs=1e-6)


def assert_minutes_match_a_recount() -> None:
    """The trigger-kept tables equal summing every approved proposal by minute and by hour now."""
    if connection.vendor != "postgresql":
        return
    for table, grain in ((ApprovedSum, "minute"), (ApprovedHourSum, "hour")):
        assert_table_matches_a_recount(table, grain)


def assert_table_matches_a_recount(table: type[ApprovedSum | ApprovedHourSum], grain: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT d.service_id, d.action_type_id, d.field,
                date_trunc(%s, d.minute, 'UTC'), sum(d.delta)
            FROM approvals_proposal AS p, gatehouse_approved_sum_deltas(p.service_id,
                p.action_type_id, p.decided_at, COALESCE(p.final_payload, p.payload), 1) AS d
            WHERE p.decision_outcome = 'approve' AND p.decided_at IS NOT NULL
              AND p.state IN ('approved', 'executing', 'executed', 'failed')
            GROUP BY 1, 2, 3, 4
            """,
            [grain],
        )
        recount = {tuple(row[:4]): row[4] for row in cursor.fetchall() if abs(row[4]) > 1e-9}
    kept = {
        (s.service_id, s.action_type_id, s.field, getattr(s, grain)): s.total
        for s in table.objects.all()
        if abs(s.total) > 1e-9  # a minute or hour whose rows all left stays, at (about) zero
    }
    assert set(kept) == set(recount)
    for key, total in recount.items():
        assert kept[key] == pytest.approx(total, abs=1e-6), key


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_by_minute_equals_every_row_on_random_data(
    shop: ServiceClient, other_shop: ServiceClient, refund_type: ActionType, seed: int
) -> None:
    rng = random.Random(seed)
    other_type = ActionType.objects.create(key="credit.grant", title="Credit")
    services, types = [shop.service, other_shop.service], [refund_type, other_type]
    rows = [make(rng.choice(services), rng.choice(types), rng) for _ in range(250)]
    assert_same_at_random_windows(services, types, rng)
    assert_minutes_match_a_recount()
    mutate(rows, rng)
    assert_same_at_random_windows(services, types, rng)
    assert_minutes_match_a_recount()


@postgresql_only
def test_the_sum_is_read_from_whole_hours_and_the_minutes_around_them(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    """The hour table answers for whole hours, the minute table for the minutes of the two
    partial hours: a figure that is off shows in the result exactly where it is read."""
    rng = random.Random(7)
    for _ in range(20):
        make(shop.service, refund_type, rng, state="approved", decision_outcome="approve")
    as_of = NOW - timedelta(minutes=30, seconds=15)  # 4 h back: 07:29:45 to 11:29:45
    args: dict[str, Any] = {
        "service_id": shop.service.pk,
        "action_type_id": refund_type.pk,
        "field_path": "payload.amount",
        "window": "4h",
        "as_of": as_of,
    }
    before = velocity.approved_sum(**args)

    def add(table: str, column: str, moment: datetime, total: float) -> None:
        with connection.cursor() as cursor:  # only to prove which source is read
            cursor.execute(
                f"INSERT INTO {table} (service_id, action_type_id, field, {column}, total) "  # noqa: S608
                f"VALUES (%s, %s, 'amount', %s, %s) ON CONFLICT (service_id, action_type_id, "
                f"field, {column}) DO UPDATE SET total = {table}.total + EXCLUDED.total",
                [shop.service.pk, refund_type.pk, moment, total],
            )

    at = NOW.replace(hour=0)
    add(
        "approvals_approvedsum", "minute", at.replace(hour=7, minute=40), 1
    )  # the first hour's part
    add("approvals_approvedsum", "minute", at.replace(hour=11, minute=10), 10)  # the last hour's
    add("approvals_approvedhoursum", "hour", at.replace(hour=9), 100)  # a whole hour
    add("approvals_approvedsum", "minute", at.replace(hour=9, minute=30), 1000)  # inside it: unread
    add("approvals_approvedhoursum", "hour", at.replace(hour=7), 10000)  # partial hours: unread
    add("approvals_approvedhoursum", "hour", at.replace(hour=11), 10000)
    assert velocity.approved_sum(**args) == pytest.approx(before + 111)


@postgresql_only
def test_the_index_that_carries_the_total_arbitrates_one_row_per_minute(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    """approvedsum_minute carries `total` (approvals 0016), so that the whole minutes are read
    from it alone (the next test), and it still arbitrates the trigger's ON CONFLICT: one row
    per minute, summed."""
    rng = random.Random(3)
    minute = NOW - timedelta(minutes=30)
    for second in (1, 20, 40):
        make(
            shop.service,
            refund_type,
            rng,
            state="approved",
            decision_outcome="approve",
            decided_at=minute + timedelta(seconds=second),
            payload={"amount": 2.5},
        )
    rows = ApprovedSum.objects.filter(service=shop.service, field="amount", minute=minute)
    assert [row.total for row in rows] == [7.5]


# first, hour, last_hour, last: minutes either side of eight whole hours.
WHOLE_SUMS_BOUNDS = [
    NOW - timedelta(hours=9, minutes=30),
    NOW - timedelta(hours=9),
    NOW - timedelta(hours=1),
    NOW - timedelta(minutes=10),
]
EVERY_WHOLE_SUM_INDEXED = [
    ("Index Scan", "approvedhoursum_hour"),
    ("Index Only Scan", "approvedsum_minute"),
    ("Index Only Scan", "approvedsum_minute"),
]


@postgresql_only
@pytest.mark.parametrize("grown", [False, True])
def test_the_whole_sums_have_one_generic_plan_bounded_on_every_column(
    shop: ServiceClient, refund_type: ActionType, grown: bool
) -> None:
    """The whole hours and minutes of a sum are read by gatehouse_whole_sums (approvals 0021),
    whose plan PostgreSQL makes once per connection without the values: the unique index of
    each table bound on all four columns (the minutes' from the index alone: it carries
    `total`), made on empty tables (the first call after a start) and on tables of 40,000
    minutes and 5,000 hours of other services, never analysed."""
    if grown:
        other = Service.objects.create(name="other-shop")
        with connection.cursor() as cursor:
            for table, unit, count in [
                ("approvals_approvedsum", "minute", 40_000),
                ("approvals_approvedhoursum", "hour", 5_000),
            ]:
                cursor.execute(
                    f"INSERT INTO {table} (service_id, action_type_id, field, {unit}, total) "  # noqa: S608 - our tables
                    f"SELECT %s, %s, 'amount', %s - g * interval '1 {unit}', 1.0 "
                    f"FROM generate_series(1, %s) g",
                    [other.pk, refund_type.pk, NOW, count],
                )
    plans = nested_plans(
        "SELECT " + velocity._WHOLE_SUMS,
        [shop.service.pk, refund_type.pk, "amount", *WHOLE_SUMS_BOUNDS],
    )
    assert len(plans) == 2 and plans[0] == plans[1]
    assert scans(plans[0]) == EVERY_WHOLE_SUM_INDEXED, plans[0]
    conditions = " ".join(n.get("Index Cond", "") for n in nodes(plans[0]))
    for bound in ["service_id = $1", "action_type_id = $2", "field = $3", "< $7"]:
        assert bound in conditions, conditions


@postgresql_only
@pytest.mark.parametrize("pending", [0, 30_000])
def test_the_approved_rows_have_one_generic_plan_that_bounds_every_column(
    shop: ServiceClient, refund_type: ActionType, pending: int
) -> None:
    """The rows of a sum are read by gatehouse_approved_rows_sum (approvals 0019), whose plan
    PostgreSQL makes once per connection without the values, so it must be the one way that
    stays cheap as the table grows: proposal_outcome_decided bound on the service, the type, the
    outcome and the decision time. Made on an empty table, and on one of many pending rows that
    was never analysed (the case where a plan through proposal_velocity bound only service and
    type). auto_explain hands the function's own plan back as a notice."""
    template = make(
        shop.service,
        refund_type,
        random.Random(1),
        state="pending_review",
        decision_outcome="",
        decided_at=None,
    )
    if pending:  # copies of a pending row, in this transaction: the table's pages grow
        copy_proposal(template, pending)
    plans = nested_plans(  # planned on the first call, the same plan on the second
        "SELECT " + velocity._ROWS_SUM,
        [shop.service.pk, refund_type.pk, ["amount"], NOW - timedelta(hours=24), NOW],
    )
    assert len(plans) == 2 and plans[0] == plans[1]
    read = [n for n in nodes(plans[0]) if n.get("Relation Name") or n.get("Index Name")]
    conditions = " ".join(n.get("Index Cond", "") for n in read)
    assert [n.get("Index Name") for n in read if n.get("Index Name")] == [
        "proposal_outcome_decided"
    ], read
    for bound in ["service_id = $1", "action_type_id = $2", "decision_outcome", "decided_at >= $4"]:
        assert bound in conditions, conditions
    assert "decided_at < $5" in conditions, conditions


def test_values_a_float_cannot_sum_exactly_fall_back_to_the_rows(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    rng = random.Random(11)
    big = 10**15 + 1
    for amount in (big, 2.5, 1e-320):
        make(
            shop.service,
            refund_type,
            rng,
            state="approved",
            decision_outcome="approve",
            payload={"amount": amount},
            decided_at=NOW - timedelta(minutes=30),
        )
    got = velocity.approved_sum(
        service_id=shop.service.pk,
        action_type_id=refund_type.pk,
        field_path="payload.amount",
        window="1h",
        as_of=NOW,
    )
    assert got == float(big) + 2.5


def test_a_key_too_long_to_keep_is_summed_from_the_rows(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    rng = random.Random(5)
    key = "k" * 250
    for amount in (1.5, 2.0):
        make(
            shop.service,
            refund_type,
            rng,
            state="executed",
            decision_outcome="approve",
            payload={key: amount},
            decided_at=NOW - timedelta(minutes=10),
        )
    got = velocity.approved_sum(
        service_id=shop.service.pk,
        action_type_id=refund_type.pk,
        field_path=f"payload.{key}",
        window="1h",
        as_of=NOW,
    )
    assert got == 3.5


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_minute_keep_the_sums_exact(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    """Many transactions approving, editing and deleting proposals of one service, type and
    minute at once: none fails on the shared minute row, and the sums stay exact."""
    writers, per_writer = 10, 8
    minute = NOW - timedelta(minutes=5)
    seeded = [
        make(
            shop.service,
            refund_type,
            random.Random(i),
            state="approved",
            decision_outcome="approve",
            decided_at=minute + timedelta(seconds=i),
            payload={"amount": 10.0 + i, "fee": 1},
        )
        for i in range(writers)
    ]
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(index: int) -> None:
        rng = random.Random(100 + index)
        try:
            barrier.wait(timeout=10)
            for n in range(per_writer):
                with transaction.atomic():
                    make(
                        shop.service,
                        refund_type,
                        rng,
                        state="approved",
                        decision_outcome="approve",
                        decided_at=minute + timedelta(seconds=rng.uniform(0, 59)),
                        payload={"amount": round(rng.uniform(1, 100), 2), "fee": n},
                    )
                    if n == 3:
                        Proposal.objects.filter(pk=seeded[index].pk).update(
                            final_payload={"amount": 1.0}
                        )
                    if n == 6:
                        Proposal.objects.filter(pk=seeded[index].pk).delete()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert Proposal.objects.count() == writers * per_writer
    as_of = minute + timedelta(minutes=2)
    for field in ("payload.amount", "payload.fee"):
        got = velocity.approved_sum(
            service_id=shop.service.pk,
            action_type_id=refund_type.pk,
            field_path=field,
            window="1h",
            as_of=as_of,
        )
        want = expected(shop.service, refund_type, field, as_of - timedelta(hours=1), as_of)
        assert got == pytest.approx(want, abs=1e-6)
    assert_minutes_match_a_recount()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_approving_many_in_one_transaction_beside_single_approvals_cannot_deadlock(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    """A transaction approving many proposals over two hours, in several minutes, runs beside
    transactions approving one proposal each in those minutes: each takes the hour's row before
    any minute's, so none waits for the other in a cycle (a deadlock would fail one of them)."""
    boundary = NOW - timedelta(hours=2)
    minutes = [boundary + timedelta(minutes=m) for m in (-2, -1, 1, 2, 3)]
    batches, singles, per_single = 4, 6, 10
    pending = [
        [
            make(
                shop.service,
                refund_type,
                random.Random(b * 100 + i),
                state="pending_review",
                decision_outcome="",
                decided_by="",
                decided_at=None,
                payload={"amount": 1.0 + i},
            ).pk
            for i in range(len(minutes) * 4)
        ]
        for b in range(batches)
    ]
    barrier = threading.Barrier(batches + singles)
    errors: list[BaseException] = []

    def approve_many(ids: list[Any]) -> None:
        try:
            barrier.wait(timeout=10)
            with transaction.atomic():
                # Each row's hour and minute stay locked to the end: minutes in turn, twice over.
                for i, pk in enumerate(ids):
                    Proposal.objects.filter(pk=pk).update(
                        state="approved",
                        decision_outcome="approve",
                        decided_by="reviewer",
                        decided_at=minutes[i % len(minutes)] + timedelta(seconds=5),
                    )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def approve_one_at_a_time(index: int) -> None:
        rng = random.Random(500 + index)
        try:
            barrier.wait(timeout=10)
            for _ in range(per_single):
                with transaction.atomic():
                    make(
                        shop.service,
                        refund_type,
                        rng,
                        state="approved",
                        decision_outcome="approve",
                        decided_at=rng.choice(minutes) + timedelta(seconds=rng.uniform(0, 59)),
                        payload={"amount": round(rng.uniform(1, 100), 2)},
                    )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve_many, args=(ids,)) for ids in pending]
    threads += [threading.Thread(target=approve_one_at_a_time, args=(i,)) for i in range(singles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    as_of = NOW
    got = velocity.approved_sum(
        service_id=shop.service.pk,
        action_type_id=refund_type.pk,
        field_path="payload.amount",
        window="3h",
        as_of=as_of,
    )
    want = expected(shop.service, refund_type, "payload.amount", as_of - timedelta(hours=3), as_of)
    assert got == pytest.approx(want, abs=1e-6)
    assert_minutes_match_a_recount()


@postgresql_only
@pytest.mark.parametrize("seed", [4, 5])
def test_the_sums_read_with_the_lock_are_the_sums_the_rules_read(
    shop: ServiceClient, refund_type: ActionType, seed: int
) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        make(shop.service, refund_type, rng)
    calls = {
        (field, window)
        for field in ("payload.amount", "payload.fee.amount", "payload.missing")
        for window in ("1h", "90m", "2h", "150s", "5h", "1d", "45s", "61m")
    }
    read = velocity.lock_and_sum(
        lock=("test", seed),
        service_id=shop.service.pk,
        action_type_id=refund_type.pk,
        sums=calls,
        now=NOW,
    )
    # A nested field and a window without a whole minute are left to the rules.
    assert set(read) == {
        (field, window)
        for field, window in calls
        if field != "payload.fee.amount" and window != "45s"
    }
    for (field, window), total in read.items():
        plain = velocity.approved_sum(
            service_id=shop.service.pk,
            action_type_id=refund_type.pk,
            field_path=field,
            window=window,
            as_of=NOW,
        )
        assert total == pytest.approx(plain, abs=1e-6), (field, window)
    with connection.cursor() as cursor:  # and the lock is this transaction's
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND pid = pg_backend_pid()"
        )
        assert cursor.fetchone()[0] == 1


@postgresql_only
def test_the_sum_read_with_the_lock_ends_with_the_minute_rows(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    """Under the spend cap's lock the window has no end, so its last minutes are read whole from
    ApprovedSum (the current minute and any later one), and the proposals only for the window's
    first partial minute: a figure put in a minute row shows there, one put in the first
    partial minute's row does not."""
    rng = random.Random(9)
    now = NOW - timedelta(seconds=20)  # inside the minute 11:59
    for _ in range(20):
        make(shop.service, refund_type, rng, state="approved", decision_outcome="approve")
    calls = {("payload.amount", "3h")}

    def read() -> float:
        with transaction.atomic():
            figures = velocity.lock_and_sum(
                lock=("test", 9),
                service_id=shop.service.pk,
                action_type_id=refund_type.pk,
                sums=calls,
                now=now,
            )
        return figures[("payload.amount", "3h")]

    before = read()
    with connection.cursor() as cursor:  # only to prove which source is read
        for minute, total in (
            (now.replace(second=0), 10.0),  # the current minute: read from its row
            (now.replace(second=0) + timedelta(minutes=2), 100.0),  # a later one: counted too
            (now.replace(second=0) - timedelta(hours=3), 1000.0),  # the first partial minute
        ):
            cursor.execute(
                "INSERT INTO approvals_approvedsum (service_id, action_type_id, field, minute, "
                "total) VALUES (%s, %s, 'amount', %s, %s) ON CONFLICT (service_id, "
                "action_type_id, field, minute) DO UPDATE SET total = "
                "approvals_approvedsum.total + EXCLUDED.total",
                [shop.service.pk, refund_type.pk, minute, total],
            )
    assert read() == pytest.approx(before + 110)
