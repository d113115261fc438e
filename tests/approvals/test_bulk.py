"""The one-statement insert of a proposal and its audit events."""

from __future__ import annotations

import uuid

from django.db.models.sql import InsertQuery

from approvals import bulk
from approvals.models import AuditEvent, Proposal
from tests.conftest import ServiceClient


def fresh_sql(row: AuditEvent) -> tuple[str, tuple[object, ...]]:
    fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    query = InsertQuery(AuditEvent)
    query.insert_values(fields, [row])
    from django.db import connection

    [(sql, params)] = query.get_compiler(connection=connection).as_sql()
    return sql, tuple(params)


def test_the_cached_insert_prepares_values_as_the_compiler_does(shop: ServiceClient) -> None:
    bulk._insert_sql([AuditEvent(kind="a", actor="x", data={"n": 1, "s": "<b>"})])  # compiled
    for again in (
        AuditEvent(kind="c", actor="z", from_state="received", data={"k": None}),
        AuditEvent(kind="d", actor="w", data=[1, 2]),
    ):
        cached_sql, cached_params = bulk._insert_sql([again])
        sql, params = fresh_sql(again)
        assert cached_sql == sql
        assert [str(p) for p in cached_params] == [str(p) for p in params]


def test_a_proposal_and_its_events_land_together(shop: ServiceClient) -> None:
    response = shop.post_json(
        "/api/v1/proposals",
        {
            "action_type": "refund.issue",
            "payload": {"order_id": "ORD-7", "amount": 5},
            "confidence": 0.5,
            "summary": "s",
        },
    )
    proposal = Proposal.objects.get(pk=uuid.UUID(response.json()["id"]))
    assert proposal.payload == {"order_id": "ORD-7", "amount": 5}
    assert list(proposal.events.values_list("kind", flat=True)) == [
        "proposal.received",
        "proposal.routed",
    ]
