"""The OpenAPI document's ProposalOut and approvals/representation.py say the same thing.

The endpoints answer with `proposal_representation` (a dict) while the document is generated
from the `ProposalOut` schema in approvals/api.py; nothing ties the two but this test. For a real
proposal in every state (and the variants of decision and execution), the representation and
the API's answer validate against ProposalOut taken from the live document, and the schema's
properties are exactly the representation's keys, nested objects included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from django.contrib.auth.models import User
from django.test import Client

from approvals import services, statemachine
from approvals.models import ActionType, Proposal
from approvals.representation import proposal_representation
from tests.conftest import ServiceClient

State = Proposal.State


@pytest.fixture
def document(db: None) -> dict[str, Any]:
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The object schema behind a $ref or an `anyOf [object, null]`, else {}."""
    if "$ref" in schema:
        return _resolve(document, document["components"]["schemas"][schema["$ref"].split("/")[-1]])
    for option in schema.get("anyOf", []):
        resolved = _resolve(document, option)
        if resolved:
            return resolved
    return schema if "properties" in schema else {}


def _same_keys(document: dict[str, Any], schema: dict[str, Any], value: Any, at: str) -> None:
    properties = schema["properties"]
    assert set(properties) == set(value), f"{at}: schema {sorted(properties)} != {sorted(value)}"
    for key, sub in properties.items():
        nested = _resolve(document, sub)
        if nested and isinstance(value[key], dict):
            _same_keys(document, nested, value[key], f"{at}.{key}")


def _transition(proposal: Proposal, to_state: str, **fields: Any) -> None:
    proposal.refresh_from_db()
    assert statemachine.transition(
        proposal_id=proposal.pk,
        from_states=[proposal.state],
        to_state=to_state,
        kind=f"proposal.{to_state}",
        actor="test",
        fields=fields,
    )


@pytest.fixture
def proposals_in_every_state(
    shop: ServiceClient,
    submit: Callable[..., Proposal],
    reviewer: User,
    refund_type: ActionType,
    make_rule: Callable[..., Any],
) -> dict[str, Proposal]:
    def decided(verdict: str) -> Proposal:
        proposal = submit()
        services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
        return services.proposal_decide(
            proposal=proposal, reviewer=reviewer, verdict=verdict, comment="checked"
        )

    made: dict[str, Proposal] = {State.PENDING_REVIEW: submit()}
    made[State.RECEIVED] = submit()  # never visible outside its transaction; shown all the same
    Proposal.objects.filter(pk=made[State.RECEIVED].pk).update(state=State.RECEIVED)
    made[State.APPROVED] = decided("approve")
    made[State.REJECTED] = decided("reject")
    made[State.CANCELLED] = services.proposal_cancel(
        service=shop.service, proposal_id=submit().pk, reason="withdrawn"
    )
    made[State.EXPIRED] = submit()
    _transition(made[State.EXPIRED], State.EXPIRED)
    made[State.EXECUTING] = decided("approve")
    _transition(made[State.EXECUTING], State.EXECUTING)
    for state, succeeded in ((State.EXECUTED, True), (State.FAILED, False)):
        made[state] = services.proposal_report_result(
            service=shop.service, proposal_id=decided("approve").pk, succeeded=succeeded
        )
    # Approved by a rule, executed by Gatehouse over a webhook: an execution with an outbox row.
    ActionType.objects.filter(pk=refund_type.pk).update(
        executor_kind="webhook", executor_target="https://shop.example/execute"
    )
    make_rule("small refunds", action_type=refund_type, when="payload.amount < 100.0")
    made["approved by rule, webhook executor"] = submit()
    assert made["approved by rule, webhook executor"].state == State.APPROVED
    for proposal in made.values():
        proposal.refresh_from_db()
    assert {p.state for p in made.values()} == set(State.values)
    return made


def test_the_schema_and_the_representation_agree_in_every_state(
    document: dict[str, Any], shop: ServiceClient, proposals_in_every_state: dict[str, Proposal]
) -> None:
    proposal_out = document["components"]["schemas"]["ProposalOut"]
    validator = jsonschema.Draft202012Validator(
        {**proposal_out, "components": document["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    for name, proposal in proposals_in_every_state.items():
        fresh = Proposal.objects.select_related("action_type", "decision_reviewer").get(
            pk=proposal.pk
        )
        represented = proposal_representation(fresh)
        answered = shop.get(f"/api/v1/proposals/{proposal.pk}").json()
        assert answered == represented, name
        errors = [e.message for e in validator.iter_errors(represented)]
        assert not errors, f"{name}: {errors}"
        _same_keys(document, proposal_out, represented, name)
