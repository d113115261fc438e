"""Proposals from the services: submitted (and decided automatically), cancelled, their results reported."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.apps import apps
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from approvals import (
    bulk,
    caches,
    decisions,
    events,
    outbox,
    schemas_cache,
)
from approvals.locks import advisory_lock_key, try_advisory_xact_lock
from approvals.models import (
    ActionType,
    AuditEvent,
    Proposal,
    Service,
    payload_hash,
)
from approvals.representation import proposal_representation
from approvals.rules import AutoDecision
from approvals.statemachine import transition
from foundation import ids, jsonvalues
from foundation.errors import ApplicationError, Conflict, NotFound
from telemetry import metrics, tracing

log = logging.getLogger("gatehouse.decisions")
State = Proposal.State


@dataclass(frozen=True)
class SubmitResult:
    proposal: Proposal
    response: dict[str, Any]
    replayed: bool


def _allowed_action_type(*, service: Service, key: str) -> ActionType:
    action_type: ActionType | None = caches.action_types.get(key)
    if action_type is None:
        action_type = ActionType.objects.filter(key=key).first()
        if action_type is not None:
            caches.action_types.set(key, action_type)
    if action_type is None:
        raise ApplicationError(
            f"There is no action type {key!r}. GET /api/v1/action-types lists the ones you may propose.",
            status=422,
            code="unknown-action-type",
            errors=[{"loc": ["body", "action_type"], "msg": f"unknown action type {key!r}"}],
        )
    allowed = getattr(service, "allowed_action_type_ids", None)
    if allowed is None:
        allowed = frozenset(service.action_types.values_list("pk", flat=True))
    if action_type.pk not in allowed:
        raise ApplicationError(
            f"Service {service.name!r} may not propose {key!r}; an admin can allow it.",
            status=403,
            code="action-type-not-allowed",
            errors=[
                {"loc": ["body", "action_type"], "msg": f"not allowed for this service: {key!r}"}
            ],
        )
    return action_type


# The proxy writes a successful call's row once its answer is sent (llmcalls.proxy): a service
# that posts a proposal the moment the answer arrives may be ahead of the row by a millisecond or
# two. An unknown id minted lately (its time-ordered id says when, foundation.ids) is looked for
# again for up to 55 ms; any other unknown id is refused at once, as is another service's call.
# A call's id is minted when the call starts, and its answer comes up to its route's deadline
# later (30 s by default; a real model's answer takes seconds): hence "lately" is ten minutes.
_CALL_ROW_WAIT = (0.002, 0.004, 0.008, 0.016, 0.025)  # 55 ms in all
_RECENT_CALL_SECONDS = 600.0


def _check_own_llm_call(*, service: Service, call_id: Any) -> None:
    """A proposal links only a model call of its own service: reviewers are shown its prompt."""
    call_model = None
    if apps.is_installed("llmcalls"):  # the call log is an optional app above the core
        call_model = apps.get_model("llmcalls", "LLMCall")
    if call_model is not None:
        calls = call_model.objects.filter(pk=call_id).values_list("service", flat=True)
        owner = calls.first()
        if owner is None and _minted_lately(call_id):
            for pause in _CALL_ROW_WAIT:
                time.sleep(pause)
                owner = calls.first()
                if owner is not None:
                    break
        if owner == service.name:
            return
    raise ApplicationError(
        f"llm_call_id {call_id} is not a model call of service {service.name!r}: link the "
        "X-Gatehouse-Call-Id of a call this service made through the proxy.",
        status=422,
        code="unknown-llm-call",
        errors=[{"loc": ["body", "llm_call_id"], "msg": "not a model call of this service"}],
    )


def _minted_lately(call_id: Any) -> bool:
    try:
        minted = ids.uuid7_seconds(
            call_id if isinstance(call_id, uuid.UUID) else uuid.UUID(str(call_id))
        )
    except ValueError:
        return False
    # A second ahead is allowed for the clocks of several web machines.
    return minted is not None and -1.0 <= time.time() - minted <= _RECENT_CALL_SECONDS


def proposal_submit(
    *,
    service: Service,
    data: dict[str, Any],
    idempotency_key: str | None = None,
    values_checked: bool = False,
) -> SubmitResult:
    """Record a proposal, decide it automatically if the rules can, else queue it for review.

    `data` is the validated request body. With an idempotency key, a replay with the same body
    returns the first response; the same key with another body is refused (422); the same key
    while the first request is still running is a conflict (409).

    Every value is checked (foundation.jsonvalues: no NUL, lone surrogate, NaN) unless the
    caller walked the very values `data` holds already (`values_checked`: the API's body parser,
    the MCP server); commands, tests and other callers leave it False.
    """
    if not values_checked:
        try:
            jsonvalues.check(data)
        except jsonvalues.BadValue as exc:
            raise exc.refusal() from None
    request_hash = payload_hash(data) if idempotency_key is not None else ""
    action_type = _allowed_action_type(service=service, key=data["action_type"])
    if data.get("llm_call_id") is not None:
        _check_own_llm_call(service=service, call_id=data["llm_call_id"])
    schema_errors = schemas_cache.validate_payload(action_type, data["payload"])
    if schema_errors:
        raise ApplicationError(
            f"The payload does not match the schema of {action_type.key!r}: {schema_errors[0]['msg']}",
            status=422,
            code="validation-error",
            errors=schema_errors,
        )
    with tracing.span("gatehouse.proposal.submit", {"gatehouse.service": service.name}) as span:
        try:
            proposal = _new_proposal(service, action_type, data, idempotency_key, request_hash)
            decision: AutoDecision | None = None
            new: _NewProposal | None = None
            if not decisions.reads_database(action_type):
                # Rules that read no velocity figures read nothing from the database: they
                # decide before any transaction. A proposal they send to review is then one
                # INSERT (below) and needs no transaction at all; an approval's policy checks
                # (which may read and write) and anything with more to write get the
                # transaction, as a decision that reads the database does.
                decision = decisions.decide_automatically(
                    proposal=proposal,
                    service=service,
                    action_type=action_type,
                    new=True,
                    policy_checks=False,
                )
                if decision.outcome == "review":
                    new = _decided(proposal, action_type, decision)
            alone = new is not None and new.insert_is_all and not bulk.transaction_started()
            if not alone:
                with transaction.atomic():
                    if new is None:  # not decided yet, or an approval still to be checked
                        if decision is None:
                            decision = decisions.decide_automatically(
                                proposal=proposal,
                                service=service,
                                action_type=action_type,
                                new=True,
                            )
                        else:
                            decision = decisions.run_policy_checks(
                                proposal=proposal, action_type=action_type, decision=decision
                            )
                        new = _decided(proposal, action_type, decision)
                    alone = new.insert_is_all and not bulk.transaction_started()
                    if not alone:
                        replay = None
                        if idempotency_key is not None:
                            replay = _idempotent_replay(service, idempotency_key, request_hash)
                        if replay is not None:
                            # What deciding wrote for the proposal that will not be (an audit
                            # sample) goes with it: the replay commits nothing.
                            transaction.set_rollback(True)
                            result = replay
                        else:
                            # The rows with the COMMIT in one round trip: a cap's lock is
                            # held until the commit, so every round trip it waits counts.
                            with bulk.sent_with_commit():
                                result = _record_proposal(new)
            assert new is not None  # decided in one of the two ways above
            if alone:
                # The decision read nothing (no lock, no velocity figures) and the proposal with
                # its audit events, one INSERT statement, is all there is to write: on its own
                # that statement is atomic, so it runs without BEGIN and COMMIT, one round trip;
                # with an idempotency key the statement takes the key's lock and checks the key
                # is new before it writes anything (_record_keyed_proposal).
                if idempotency_key is None:
                    result = _record_proposal(new)
                else:
                    result = _record_keyed_proposal(new, idempotency_key)
            if result.replayed:
                tracing.set_attributes(span, {"gatehouse.replayed": True})
                return result
            result_decision = new.decision
        except IntegrityError:
            # Only the idempotency constraint can collide here: another request won the race.
            if idempotency_key is None:
                raise
            raise Conflict(
                "A request with this Idempotency-Key is being processed; retry shortly.",
                code="idempotency-key-in-flight",
            ) from None
        _observe_submit(result.proposal, result_decision, span)
    return result


def _observe_submit(proposal: Proposal, decision: AutoDecision, span: Any) -> None:
    """Metrics, the decision's log line and span attributes for a new proposal (committed)."""
    action_type = proposal.action_type.key
    metrics.PROPOSALS_SUBMITTED.labels(action_type).inc()
    if proposal.decided_by:
        metrics.PROPOSALS_DECIDED.labels(action_type, proposal.decided_by, decision.outcome).inc()
        metrics.TIME_TO_DECISION_SECONDS.labels(action_type, proposal.decided_by).observe(0)
    context = {
        "service": proposal.service.name,
        "proposal_id": str(proposal.pk),
        "action_type": action_type,
        "outcome": decision.outcome,
        "rule": decision.rule,
        "rule_version": decision.rule_version,
    }
    log.info(
        "proposal %s %s by %s",
        proposal.pk,
        proposal.state,
        f"rule {decision.rule} v{decision.rule_version}" if decision.rule else "policy",
        extra=context,
    )
    tracing.set_attributes(span, {f"gatehouse.{k}": v for k, v in context.items()})


def _key_in_flight() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        code="idempotency-key-in-flight",
    )


def _idempotent_replay(service: Service, key: str, request_hash: str) -> SubmitResult | None:
    """Inside the submit's transaction: take the key's lock (409 when another request holds it),
    then the first response for the key, if there is one."""
    if not try_advisory_xact_lock("idempotency", service.pk, key):
        raise _key_in_flight()
    return _first_response(service, key, request_hash)


def _first_response(service: Service, key: str, request_hash: str) -> SubmitResult | None:
    first = Proposal.objects.filter(service=service, idempotency_key=key).first()
    if first is None:
        return None
    if first.request_hash != request_hash:
        raise ApplicationError(
            "This Idempotency-Key was used with a different request body. Use a new key for a new request.",
            status=422,
            code="idempotency-key-reused",
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": "reused with a different body"}],
        )
    return SubmitResult(proposal=first, response=first.first_response or {}, replayed=True)


@dataclass
class _NewProposal:
    """A decided proposal (already in its routed state), not yet written."""

    proposal: Proposal
    decision: AutoDecision
    response: dict[str, Any]

    @property
    def insert_is_all(self) -> bool:
        """True when recording it is one INSERT (guarded by its idempotency key, if it has one):
        no outbox row, PostgreSQL (elsewhere the key is checked inside the transaction)."""
        return self.proposal.state not in outbox.CALLBACK_STATES and (
            self.proposal.idempotency_key is None or connection.vendor == "postgresql"
        )


def _new_proposal(
    service: Service,
    action_type: ActionType,
    data: dict[str, Any],
    idempotency_key: str | None,
    request_hash: str,
) -> Proposal:
    """The new proposal, not yet decided nor written."""
    now = timezone.now()
    return bulk.new_row(
        Proposal,
        id=ids.uuid7(),
        service=service,
        action_type=action_type,
        payload=data["payload"],
        payload_hash=payload_hash(data["payload"]),
        confidence=data["confidence"],
        summary=data["summary"],
        rationale=data.get("rationale") or "",
        model=data.get("model") or "",
        prompt_version=data.get("prompt_version") or "",
        feature=data.get("feature") or "",
        external_id=data.get("external_id") or "",
        llm_call_id=data.get("llm_call_id"),
        metadata=data.get("metadata") or {},
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        updated_at=now,
    )


def _decided(proposal: Proposal, action_type: ActionType, decision: AutoDecision) -> _NewProposal:
    """`proposal` put in the state its automatic decision routes it to, with its answer."""
    proposal.rule_trace = decision.trace
    _apply_auto_decision(proposal, action_type, decision, proposal.created_at)
    response = proposal_representation(proposal)
    # Only a request with an idempotency key can be replayed, so only then is its answer kept.
    proposal.first_response = response if proposal.idempotency_key is not None else None
    return _NewProposal(proposal, decision, response)


def _record_proposal(new: _NewProposal) -> SubmitResult:
    proposal = new.proposal
    bulk.insert_rows([proposal], _first_events(new))
    if proposal.state in outbox.CALLBACK_STATES:
        outbox.outbox_record(proposal=proposal, to_state=proposal.state)
    events.proposal_created(proposal)
    return SubmitResult(proposal=proposal, response=new.response, replayed=False)


# One statement, outside any transaction (so its own): the key's transaction-scoped lock, held
# until the rows are in, and whether a proposal has the key already, read after the lock.
_KEY_GUARD = (
    "SELECT pg_try_advisory_xact_lock(%s) AS locked, EXISTS (SELECT 1 FROM approvals_proposal "
    "WHERE service_id = %s AND idempotency_key = %s) AS taken"
)


def _record_keyed_proposal(new: _NewProposal, key: str) -> SubmitResult:
    """A proposal with an idempotency key in one round trip, where the transaction of
    `_idempotent_replay` takes five (BEGIN, the lock, the lookup, the insert, COMMIT).

    The key's lock and the check that the key is new guard the INSERT of the proposal and its
    audit events in the same statement. Taken: the first response is read (a replay, or 422 for
    another body). Locked by another request: 409, as in the transaction. A first request that
    commits between this statement's snapshot and its lock makes the INSERT collide with the
    unique key (IntegrityError, 409 at the caller): the retry replays.
    """
    proposal = new.proposal
    service = proposal.service
    inserted, (locked, _taken) = bulk.insert_rows_if(
        _KEY_GUARD,
        (advisory_lock_key("idempotency", service.pk, key), service.pk, key),
        "locked AND NOT taken",
        [proposal],
        _first_events(new),
    )
    if inserted:
        events.proposal_created(proposal)
        return SubmitResult(proposal=proposal, response=new.response, replayed=False)
    if not locked:
        raise _key_in_flight()
    replay = _first_response(service, key, proposal.request_hash)
    if replay is None:  # the first proposal is gone meanwhile (retention): try again
        raise _key_in_flight()
    return replay


def _first_events(new: _NewProposal) -> list[AuditEvent]:
    """The audit events of a new proposal: received, and routed to its state."""
    proposal, decision = new.proposal, new.decision
    routed_state, now = proposal.state, proposal.created_at
    # The row is invisible to everyone until it commits, so it is inserted in its routed
    # state; the audit trail still records both steps (in the same statement).
    # proposal_id rather than proposal=: nothing reads the events back, and the relation's
    # descriptor costs more than the id the INSERT needs.
    actor = f"service:{proposal.service.name}"
    return [
        bulk.new_row(
            AuditEvent,
            proposal_id=proposal.pk,
            kind="proposal.received",
            to_state=State.RECEIVED,
            actor=actor,
            data={"payload_hash": proposal.payload_hash, "confidence": proposal.confidence},
            created_at=now,
        ),
        bulk.new_row(
            AuditEvent,
            proposal_id=proposal.pk,
            kind="proposal.routed",
            from_state=State.RECEIVED,
            to_state=routed_state,
            actor=f"rule:{decision.rule}" if decision.rule else "policy",
            data={
                "outcome": decision.outcome,
                "rule": decision.rule,
                "rule_version": decision.rule_version,
                "reason": decision.reason,
            },
            created_at=now,
        ),
    ]


def _apply_auto_decision(
    proposal: Proposal, action_type: ActionType, decision: AutoDecision, now: datetime
) -> None:
    """Put a new proposal in the state its automatic decision routes it to."""
    if decision.outcome == "review":
        proposal.state = State.PENDING_REVIEW
        proposal.expires_at = now + action_type.review_ttl
        if action_type.review_sla:
            proposal.review_due_at = now + action_type.review_sla
        proposal.decision_reason = decision.reason
        if decision.approvals_required:  # a rule asked for more reviewers than the type does
            proposal.required_approvals = decision.approvals_required
        return
    proposal.state = State.APPROVED if decision.outcome == "approve" else State.REJECTED
    proposal.decision_outcome = decision.outcome
    proposal.decided_by = Proposal.DecidedBy.RULE if decision.rule else Proposal.DecidedBy.POLICY
    proposal.decision_rule = decision.rule
    proposal.decision_rule_version = decision.rule_version
    proposal.decision_reason = decision.reason
    proposal.decided_at = now


def _own_proposal(service: Service, proposal_id: uuid.UUID) -> Proposal:
    proposal = (
        Proposal.objects.select_related("action_type")
        .filter(pk=proposal_id, service=service)
        .first()
    )
    if proposal is None:
        raise NotFound("No such proposal for this service.")
    return proposal


def proposal_cancel(*, service: Service, proposal_id: uuid.UUID, reason: str = "") -> Proposal:
    proposal = _own_proposal(service, proposal_id)
    won = transition(
        proposal_id=proposal.pk,
        from_states=[State.RECEIVED, State.PENDING_REVIEW],
        to_state=State.CANCELLED,
        kind="proposal.cancelled",
        actor=f"service:{service.name}",
        fields={"decision_reason": reason or "Withdrawn by the service."},
        data={"reason": reason},
    )
    proposal.refresh_from_db()
    if not won:
        raise Conflict(
            f"Only a pending proposal can be cancelled; this one is {proposal.state}.",
            code="invalid-state",
            extra={"state": proposal.state},
        )
    return proposal


def proposal_report_result(
    *, service: Service, proposal_id: uuid.UUID, succeeded: bool, detail: str = ""
) -> Proposal:
    """The service's own report of executing an approved proposal (executor `none`)."""
    proposal = _own_proposal(service, proposal_id)
    if proposal.action_type.executor_kind != "none":
        raise ApplicationError(
            f"{proposal.action_type.key!r} is executed by Gatehouse ({proposal.action_type.executor_kind}); "
            "only executor 'none' takes results from the service.",
            status=409,
            code="executor-not-none",
        )
    to_state = State.EXECUTED if succeeded else State.FAILED
    won = transition(
        proposal_id=proposal.pk,
        from_states=[State.APPROVED, State.EXECUTING],
        to_state=to_state,
        kind=f"proposal.{to_state}",
        actor=f"service:{service.name}",
        data={"detail": detail[:2000]},
    )
    proposal.refresh_from_db()
    if not won:
        raise Conflict(
            f"Only an approved proposal can take a result; this one is {proposal.state}.",
            code="invalid-state",
            extra={"state": proposal.state},
        )
    return proposal
