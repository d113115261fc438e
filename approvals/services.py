"""Business operations. Views, the API, the admin, commands, tasks and tests all call these."""

from __future__ import annotations

import hashlib
import logging
import secrets
import string
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from approvals import (
    bulk,
    decisions,
    events,
    jsonvalues,
    localcache,
    outbox,
    schemas_cache,
    selectors,
    webhooks,
)
from approvals.errors import ApplicationError, Conflict, NotFound
from approvals.models import (
    ActionType,
    ApiKey,
    AuditEvent,
    Claim,
    Proposal,
    Review,
    Rule,
    RuleVersion,
    Service,
    payload_hash,
)
from approvals.representation import proposal_representation
from telemetry import metrics, tracing

log = logging.getLogger("gatehouse.decisions")
State = Proposal.State
_ALPHABET = string.ascii_letters + string.digits


# --- services and keys ---------------------------------------------------------------------


def api_key_create(*, service: Service, label: str = "") -> tuple[ApiKey, str]:
    """Create a key and return it with its full text, which is never stored and shown only now."""
    prefix = secrets.token_hex(4)
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    key = ApiKey.objects.create(
        service=service, prefix=prefix, secret_hash=ApiKey.hash_secret(secret), label=label
    )
    return key, f"gh_{prefix}_{secret}"


def webhook_secret_generate() -> str:
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


# Apps above the core register what else a new service may be granted there (llmcalls: the
# features it may call through the model proxy): option name -> (help, grant(service, values)).
SERVICE_GRANTS: dict[str, tuple[str, Callable[[Service, list[str]], None]]] = {}


@transaction.atomic
def service_webhook_secret_rotate(*, service: Service, actor: str) -> str:
    """A new signing secret; the old one keeps signing too (two signatures) until the rotation
    is finished. Returns the new secret, which is shown once and never again."""
    locked = Service.objects.select_for_update().get(pk=service.pk)
    secret = webhook_secret_generate()
    Service.objects.filter(pk=locked.pk).update(
        webhook_secret=secret, previous_webhook_secret=locked.webhook_secret
    )
    AuditEvent.objects.create(
        kind="service.webhook_secret_rotated", actor=actor, data={"service": locked.name}
    )
    return secret


@transaction.atomic
def service_webhook_rotation_finish(*, service: Service, actor: str) -> bool:
    """Stop signing with the previous secret (the receivers have the new one)."""
    if (
        not Service.objects.filter(pk=service.pk)
        .exclude(previous_webhook_secret="")
        .update(previous_webhook_secret="")
    ):
        return False
    AuditEvent.objects.create(
        kind="service.webhook_rotation_finished", actor=actor, data={"service": service.name}
    )
    return True


@transaction.atomic
def service_create(
    *,
    name: str,
    action_type_keys: Iterable[str] = (),
    callback_url: str = "",
    grants: dict[str, list[str]] | None = None,
) -> tuple[Service, str]:
    keys = [k for k in action_type_keys if k]
    found = {t.key: t for t in ActionType.objects.filter(key__in=keys)}
    missing = sorted(set(keys) - set(found))
    if missing:
        raise ApplicationError(
            f"Unknown action types: {', '.join(missing)}", code="unknown-action-type"
        )
    if Service.objects.filter(name=name).exists():
        raise ApplicationError(f"A service named {name!r} exists already.", code="duplicate")
    problem = webhooks.url_problem(callback_url) if callback_url else None
    if problem:
        raise ApplicationError(
            f"callback_url is refused: {problem}",
            code="bad-url",
            errors=[{"loc": ["callback_url"], "msg": problem}],
        )
    service = Service.objects.create(
        name=name, callback_url=callback_url, webhook_secret=webhook_secret_generate()
    )
    service.action_types.set(found.values())
    _, plain = api_key_create(service=service, label="created with the service")
    AuditEvent.objects.create(kind="service.created", actor="system", data={"service": name})
    for grant, values in (grants or {}).items():
        if grant not in SERVICE_GRANTS:
            raise ApplicationError(f"Unknown grant: {grant}", code="unknown-grant")
        if values:
            SERVICE_GRANTS[grant][1](service, values)
    return service, plain


def api_key_revoke(*, prefix: str) -> ApiKey:
    with transaction.atomic():
        updated = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        key = ApiKey.objects.select_related("service").filter(prefix=prefix).first()
        if key is None:
            raise NotFound(f"No API key with prefix {prefix!r}.")
        localcache.clear_all()
        if updated:
            AuditEvent.objects.create(
                kind="api_key.revoked",
                actor="system",
                data={"service": key.service.name, "prefix": prefix},
            )
    return key


def api_key_authenticate(*, token: str) -> Service | None:
    """The service a bearer token belongs to, or None for a malformed, unknown or revoked key."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "gh" or not parts[1] or not parts[2] or len(parts[1]) > 16:
        return None
    token_hash = ApiKey.hash_secret(token)
    cached: Service | None = localcache.api_keys.get(token_hash)
    if cached is not None:
        return cached
    key = (
        ApiKey.objects.select_related("service")
        .filter(prefix=parts[1], revoked_at__isnull=True, service__is_active=True)
        .first()
    )
    if key is None:
        return None
    if not secrets.compare_digest(key.secret_hash, ApiKey.hash_secret(parts[2])):
        return None
    service = key.service
    # Remember which action types the service may propose, so submitting needs no extra query.
    service.allowed_action_type_ids = frozenset(  # type: ignore[attr-defined]
        service.action_types.values_list("pk", flat=True)
    )
    localcache.api_keys.set(token_hash, service)
    return service


# --- proposals ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitResult:
    proposal: Proposal
    response: dict[str, Any]
    replayed: bool


def _advisory_lock_key(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def try_advisory_xact_lock(*parts: object) -> bool:
    """Take a transaction-scoped PostgreSQL advisory lock without waiting.

    On SQLite every write transaction already holds the database lock (BEGIN IMMEDIATE),
    so there is nothing more to take.
    """
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_advisory_lock_key(*parts)])
        return bool(cursor.fetchone()[0])


def advisory_xact_lock(*parts: object) -> None:
    """Take a transaction-scoped PostgreSQL advisory lock, waiting for it."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_advisory_lock_key(*parts)])


def _allowed_action_type(*, service: Service, key: str) -> ActionType:
    action_type: ActionType | None = localcache.action_types.get(key)
    if action_type is None:
        action_type = ActionType.objects.filter(key=key).first()
        if action_type is not None:
            localcache.action_types.set(key, action_type)
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


def _check_own_llm_call(*, service: Service, call_id: Any) -> None:
    """A proposal links only a model call of its own service: reviewers are shown its prompt."""
    call_model = None
    if apps.is_installed("llmcalls"):  # the call log is an optional app above the core
        call_model = apps.get_model("llmcalls", "LLMCall")
    if (
        call_model is None
        or not call_model.objects.filter(pk=call_id, service=service.name).exists()
    ):
        raise ApplicationError(
            f"llm_call_id {call_id} is not a model call of service {service.name!r}: link the "
            "X-Gatehouse-Call-Id of a call this service made through the proxy.",
            status=422,
            code="unknown-llm-call",
            errors=[{"loc": ["body", "llm_call_id"], "msg": "not a model call of this service"}],
        )


def proposal_submit(
    *, service: Service, data: dict[str, Any], idempotency_key: str | None = None
) -> SubmitResult:
    """Record a proposal, decide it automatically if the rules can, else queue it for review.

    `data` is the validated request body. With an idempotency key, a replay with the same body
    returns the first response; the same key with another body is refused (422); the same key
    while the first request is still running is a conflict (409).
    """
    try:
        jsonvalues.check(data)  # the API checked already; other callers (commands, tests) not
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
            with transaction.atomic():
                if idempotency_key is not None:
                    replay = _idempotent_replay(service, idempotency_key, request_hash)
                    if replay is not None:
                        tracing.set_attributes(span, {"gatehouse.replayed": True})
                        return replay
                new = _decide_proposal(service, action_type, data, idempotency_key, request_hash)
                alone = new.insert_is_all and not _transaction_started()
                if not alone:
                    result = _record_proposal(new)
            if alone:
                # The decision read nothing (no lock, no velocity figures) and the proposal with
                # its audit events, one INSERT statement, is all there is to write: on its own
                # that statement is atomic, so it runs without BEGIN and COMMIT, one round trip.
                result = _record_proposal(new)
        except IntegrityError:
            # Only the idempotency constraint can collide here: another request won the race.
            if idempotency_key is None:
                raise
            raise Conflict(
                "A request with this Idempotency-Key is being processed; retry shortly.",
                code="idempotency-key-in-flight",
            ) from None
        _observe_submit(result.proposal, new.decision, span)
    return result


def _observe_submit(proposal: Proposal, decision: decisions.AutoDecision, span: Any) -> None:
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


def _idempotent_replay(service: Service, key: str, request_hash: str) -> SubmitResult | None:
    if not try_advisory_xact_lock("idempotency", service.pk, key):
        raise Conflict(
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            code="idempotency-key-in-flight",
        )
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


def _transaction_started() -> bool:
    """Whether the current atomic block has sent anything to the database yet (PostgreSQL)."""
    if connection.vendor != "postgresql":
        return True  # elsewhere, stay inside the transaction
    status = connection.connection.info.transaction_status
    return bool(status != psycopg.pq.TransactionStatus.IDLE)


@dataclass
class _NewProposal:
    """A decided proposal (already in its routed state), not yet written."""

    proposal: Proposal
    decision: decisions.AutoDecision
    response: dict[str, Any]

    @property
    def insert_is_all(self) -> bool:
        """True when recording it is one INSERT: no idempotency key, no outbox row."""
        return (
            self.proposal.idempotency_key is None
            and self.proposal.state not in outbox.CALLBACK_STATES
        )


def _decide_proposal(
    service: Service,
    action_type: ActionType,
    data: dict[str, Any],
    idempotency_key: str | None,
    request_hash: str,
) -> _NewProposal:
    now = timezone.now()
    proposal = Proposal(
        id=uuid.uuid4(),
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
    decision = decisions.decide_automatically(
        proposal=proposal, service=service, action_type=action_type, new=True
    )
    proposal.rule_trace = decision.trace
    _apply_auto_decision(proposal, action_type, decision, now)
    response = proposal_representation(proposal)
    # Only a request with an idempotency key can be replayed, so only then is its answer kept.
    proposal.first_response = response if idempotency_key is not None else None
    return _NewProposal(proposal, decision, response)


def _record_proposal(new: _NewProposal) -> SubmitResult:
    proposal, decision = new.proposal, new.decision
    routed_state, now = proposal.state, proposal.created_at
    # The row is invisible to everyone until it commits, so it is inserted in its routed
    # state; the audit trail still records both steps (in the same statement).
    actor = f"service:{proposal.service.name}"
    bulk.insert_rows(
        [proposal],
        [
            AuditEvent(
                proposal=proposal,
                kind="proposal.received",
                to_state=State.RECEIVED,
                actor=actor,
                data={"payload_hash": proposal.payload_hash, "confidence": proposal.confidence},
                created_at=now,
            ),
            AuditEvent(
                proposal=proposal,
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
        ],
    )
    if routed_state in outbox.CALLBACK_STATES:
        outbox.outbox_record(proposal=proposal, to_state=routed_state)
    events.proposal_changed(proposal.pk, proposal.action_type_id, created=True)
    return SubmitResult(proposal=proposal, response=new.response, replayed=False)


def _apply_auto_decision(
    proposal: Proposal, action_type: ActionType, decision: decisions.AutoDecision, now: datetime
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


def transition(
    *,
    proposal_id: uuid.UUID,
    from_states: Iterable[str],
    to_state: str,
    kind: str,
    actor: str,
    fields: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> bool:
    """Move a proposal from one of `from_states` to `to_state` if nobody got there first.

    A compare-and-set: `UPDATE … WHERE id = … AND state IN (…)`. The audit event is written in
    the same transaction, so either both happen or neither. Returns whether this call won.
    """
    now = timezone.now()
    sources = list(from_states)
    with transaction.atomic():
        current = (
            Proposal.objects.filter(pk=proposal_id, state__in=sources)
            .values_list("state", flat=True)
            .first()
        )
        if current is None:
            return False
        won = (
            Proposal.objects.filter(pk=proposal_id, state=current).update(
                state=to_state, updated_at=now, **(fields or {})
            )
            == 1
        )
        if won:
            AuditEvent.objects.create(
                proposal_id=proposal_id,
                kind=kind,
                from_state=current,
                to_state=to_state,
                actor=actor,
                data=data or {},
                created_at=now,
            )
            if to_state in outbox.CALLBACK_STATES:
                proposal = Proposal.objects.select_related(
                    "service", "action_type", "decision_reviewer"
                ).get(pk=proposal_id)
                # Execution and callbacks are recorded with the change and sent after commit.
                outbox.outbox_record(proposal=proposal, to_state=to_state)
                transaction.on_commit(partial(_observe_transition, proposal, current, now))
            events.proposal_changed(proposal_id)
        return won


#: Who decided, for the decisions that are not a rule's, a reviewer's or the policy's.
_DECIDED_BY: dict[str, str] = {State.EXPIRED: "expiry", State.CANCELLED: "cancel"}
_OUTCOME: dict[str, str] = {
    State.APPROVED: "approve",
    State.REJECTED: "reject",
    State.EXPIRED: "expire",
    State.CANCELLED: "cancel",
}


def _observe_transition(proposal: Proposal, from_state: str, now: datetime) -> None:
    """Metrics and the log line of a committed decision or execution result."""
    action_type = proposal.action_type.key
    context: dict[str, Any] = {
        "service": proposal.service.name,
        "proposal_id": str(proposal.pk),
        "action_type": action_type,
        "from_state": from_state,
        "to_state": proposal.state,
    }
    if from_state in (State.RECEIVED, State.PENDING_REVIEW) and proposal.state in _OUTCOME:
        decided_by = proposal.decided_by or _DECIDED_BY.get(proposal.state, "policy")
        outcome = _OUTCOME[proposal.state]
        metrics.PROPOSALS_DECIDED.labels(action_type, decided_by, outcome).inc()
        metrics.TIME_TO_DECISION_SECONDS.labels(action_type, decided_by).observe(
            max((now - proposal.created_at).total_seconds(), 0.0)
        )
        context.update(
            outcome=outcome,
            decided_by=decided_by,
            rule=proposal.decision_rule,
            rule_version=proposal.decision_rule_version,
            reviewer=proposal.decision_reviewer.get_username()
            if proposal.decision_reviewer
            else "",
        )
        log.info("proposal %s %s by %s", proposal.pk, proposal.state, decided_by, extra=context)
        return
    if proposal.state == State.FAILED:
        metrics.EXECUTIONS_FAILED.labels(action_type).inc()
    log.info("proposal %s %s → %s", proposal.pk, from_state, proposal.state, extra=context)


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


# --- reviewers: claims, decisions, comments --------------------------------------------------


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    acquired: bool  # False: someone else holds a live claim


def _locked_for_reviewer(proposal_id: uuid.UUID, reviewer: User) -> Proposal:
    """The proposal row, locked for this transaction, if the reviewer may see it."""
    proposal = (
        Proposal.objects.select_for_update(of=("self",))
        .select_related("action_type")
        .filter(pk=proposal_id, action_type__in=selectors.visible_action_types(user=reviewer))
        .first()
    )
    if proposal is None:
        raise NotFound("No such proposal.")
    return proposal


def _check_may_decide(proposal: Proposal, reviewer: User) -> None:
    if proposal.state != State.PENDING_REVIEW:
        raise Conflict(
            f"This proposal is no longer waiting for review: it is {proposal.get_state_display()}.",
            code="invalid-state",
            extra={"state": proposal.state},
        )
    if proposal.raised_by and proposal.raised_by in selectors.reviewer_identities(user=reviewer):
        raise ApplicationError(
            "You raised this proposal, so another reviewer must decide it.",
            status=403,
            code="own-proposal",
        )
    if Review.objects.filter(proposal=proposal, reviewer=reviewer).exists():
        raise ApplicationError(
            "You have already approved this proposal; a second reviewer must decide it.",
            status=403,
            code="already-reviewed",
        )


def claim_acquire(*, proposal_id: uuid.UUID, reviewer: User, channel: str = "web") -> ClaimResult:
    """Reserve a pending proposal for `reviewer` for REVIEW_CLAIM_TTL, or renew their claim.

    A live claim of someone else is left alone and returned with `acquired=False`. A new
    holder is recorded in the audit trail (with the channel it came from: web or slack);
    renewals are not.
    """
    now = timezone.now()
    with transaction.atomic():
        proposal = _locked_for_reviewer(proposal_id, reviewer)
        _check_may_decide(proposal, reviewer)
        claim = Claim.objects.select_related("reviewer").filter(proposal=proposal).first()
        if claim is not None and claim.reviewer_id != reviewer.pk and claim.is_live(now):
            return ClaimResult(claim=claim, acquired=False)
        renewal = claim is not None and claim.reviewer_id == reviewer.pk and claim.is_live(now)
        expires_at = now + settings.REVIEW_CLAIM_TTL
        if claim is None:
            claim = Claim.objects.create(
                proposal=proposal, reviewer=reviewer, claimed_at=now, expires_at=expires_at
            )
        else:
            Claim.objects.filter(pk=proposal.pk).update(
                reviewer=reviewer,
                claimed_at=claim.claimed_at if renewal else now,
                expires_at=expires_at,
            )
            claim.refresh_from_db()
        if not renewal:
            AuditEvent.objects.create(
                proposal=proposal,
                kind="proposal.claimed",
                actor=f"user:{reviewer.get_username()}",
                data={"expires_at": expires_at.isoformat(), "channel": channel},
                created_at=now,
            )
            events.proposal_changed(proposal.pk)
    return ClaimResult(claim=claim, acquired=True)


def claim_release(*, proposal_id: uuid.UUID, reviewer: User, channel: str = "web") -> bool:
    """Give up one's own claim. Returns whether there was one to give up."""
    with transaction.atomic():
        proposal = _locked_for_reviewer(proposal_id, reviewer)
        released = Claim.objects.filter(proposal=proposal, reviewer=reviewer).delete()[0] > 0
        if released:
            AuditEvent.objects.create(
                proposal=proposal,
                kind="proposal.claim_released",
                actor=f"user:{reviewer.get_username()}",
                data={"channel": channel},
            )
            events.proposal_changed(proposal.pk)
    return released


def _check_claim(proposal: Proposal, reviewer: User, now: datetime) -> None:
    claim = Claim.objects.select_related("reviewer").filter(proposal=proposal).first()
    if claim is None:
        raise Conflict(
            "You do not hold a claim on this proposal; open it again to claim it, then decide.",
            code="claim-required",
        )
    if claim.reviewer_id != reviewer.pk:
        if claim.is_live(now):
            raise Conflict(
                f"{claim.reviewer.get_username()} is reviewing this proposal now; "
                "your decision was not recorded.",
                code="claimed-by-other",
            )
        raise Conflict(
            "You do not hold a claim on this proposal; open it again to claim it, then decide.",
            code="claim-required",
        )
    if not claim.is_live(now):
        raise Conflict(
            "Your claim on this proposal expired, so someone else may have opened it. "
            "Reload it, check it again and decide.",
            code="claim-expired",
        )


def _evaluate_edit(
    proposal: Proposal, edited_payload: Any
) -> tuple[str, int | None, decisions.AutoDecision]:
    """Validate an edited payload and run it through the rules as a fresh proposal would be.

    Returns the new payload's hash, the approvals the rules ask for, and the decision. A
    payload the rules would reject is refused: a reviewer's edit cannot slip past a rule.
    """
    if not isinstance(edited_payload, dict):
        raise ApplicationError(
            "The edited payload must be a JSON object.",
            status=422,
            code="validation-error",
            errors=[{"loc": ["payload"], "msg": "must be a JSON object"}],
        )
    try:
        jsonvalues.check(edited_payload, ("payload",))
    except jsonvalues.BadValue as exc:
        raise exc.refusal() from None
    errors = schemas_cache.validate_payload(proposal.action_type, edited_payload)
    if errors:
        raise ApplicationError(
            f"The edited payload does not match the schema of {proposal.action_type.key!r}: "
            f"{errors[0]['msg']}",
            status=422,
            code="validation-error",
            errors=[{**e, "loc": ["payload", *e["loc"][2:]]} for e in errors],
        )
    candidate = Proposal(
        id=proposal.id,
        service=proposal.service,
        action_type=proposal.action_type,
        payload=edited_payload,
        payload_hash=payload_hash(edited_payload),
        confidence=proposal.confidence,
        summary=proposal.summary,
        rationale=proposal.rationale,
        model=proposal.model,
        prompt_version=proposal.prompt_version,
        feature=proposal.feature,
        external_id=proposal.external_id,
        metadata=proposal.metadata,
        created_at=proposal.created_at,
    )
    try:
        decision = decisions.decide_automatically(
            proposal=candidate, service=proposal.service, action_type=proposal.action_type
        )
    except Exception as exc:  # fail closed: an edit the rules cannot judge is refused
        raise ApplicationError(
            f"The rules could not evaluate the edited payload ({type(exc).__name__}); "
            "it was not recorded.",
            status=422,
            code="rules-error",
        ) from exc
    if decision.outcome not in {"approve", "review"}:
        raise ApplicationError(
            f"The rules reject the edited payload: {decision.reason or decision.outcome}",
            status=422,
            code="edit-rejected-by-rules",
            extra={"rule": decision.rule},
        )
    return candidate.payload_hash, decision.approvals_required, decision


def proposal_decide(
    *,
    proposal: Proposal,
    reviewer: User,
    verdict: str,
    comment: str = "",
    seen_payload_hash: str | None = None,
    edited_payload: Any = None,
    channel: str = "web",
) -> Proposal:
    """A reviewer's verdict on a pending proposal they hold the claim on.

    `channel` (web, slack) is where the reviewer decided; the audit events record it.

    1. The reviewer must see the type, not have raised the proposal nor reviewed it already,
       and hold a live claim; the verdict is bound to the payload hash they saw.
    2. reject: decided at once (a reason is required).
    3. approve (optionally with an edited payload, validated and run through the rules again;
       a stricter result such as more approvals applies): the review is recorded; when the
       approvals bound to the current payload reach the number needed (two for four-eyes,
       from distinct reviewers), the proposal becomes approved, else it waits for the next.
    """
    if verdict not in Review.Verdict.values:
        raise ApplicationError(f"Unknown verdict {verdict!r}.", code="invalid-verdict")
    if verdict == Review.Verdict.REJECT and not comment.strip():
        raise ApplicationError(
            "A rejection needs a reason.",
            status=422,
            code="reason-required",
            errors=[{"loc": ["comment"], "msg": "required when rejecting"}],
        )
    if verdict == Review.Verdict.REJECT and edited_payload is not None:
        raise ApplicationError("An edit can only be approved.", code="invalid-verdict")
    now = timezone.now()
    actor = f"user:{reviewer.get_username()}"
    review = {
        "gatehouse.proposal_id": str(proposal.pk),
        "gatehouse.reviewer": reviewer.get_username(),
        "gatehouse.verdict": verdict,
        "gatehouse.waited_seconds": (now - proposal.created_at).total_seconds(),
    }
    with tracing.span("gatehouse.proposal.review", review) as span, transaction.atomic():
        locked = _locked_for_reviewer(proposal.pk, reviewer)
        _check_may_decide(locked, reviewer)
        _check_claim(locked, reviewer, now)
        current_hash = locked.effective_payload_hash
        if seen_payload_hash is not None and seen_payload_hash != current_hash:
            raise Conflict(
                "The payload changed since you opened it; reload and review it again.",
                code="payload-changed",
            )
        fields: dict[str, Any] = {}
        if edited_payload is not None:
            new_hash, asked, decision = _evaluate_edit(locked, edited_payload)
            if new_hash != current_hash:
                current_hash = new_hash
                locked.final_payload = edited_payload
                locked.required_approvals = max(asked or 1, locked.required_approvals or 1)
                fields.update(
                    final_payload=edited_payload, required_approvals=locked.required_approvals
                )
                AuditEvent.objects.create(
                    proposal=locked,
                    kind="proposal.edited",
                    actor=actor,
                    data={
                        "payload_hash": new_hash,
                        "rules_outcome": decision.outcome,
                        "rule": decision.rule,
                        "rule_version": decision.rule_version,
                        "reason": decision.reason,
                        "approvals_required": locked.approvals_needed,
                        "trace": decision.trace,
                    },
                    created_at=now,
                )
        Review.objects.create(
            proposal=locked,
            reviewer=reviewer,
            verdict=verdict,
            comment=comment,
            edited_payload=edited_payload if fields else None,
            payload_hash=current_hash,
            created_at=now,
        )
        Claim.objects.filter(proposal=locked).delete()
        approvals = Review.objects.filter(
            proposal=locked, verdict=Review.Verdict.APPROVE, payload_hash=current_hash
        ).count()
        if verdict == Review.Verdict.APPROVE and approvals < locked.approvals_needed:
            Proposal.objects.filter(pk=locked.pk).update(updated_at=now, **fields)
            AuditEvent.objects.create(
                proposal=locked,
                kind="proposal.approval_recorded",
                actor=actor,
                data={
                    "approvals": approvals,
                    "needed": locked.approvals_needed,
                    "payload_hash": current_hash,
                    "comment": comment,
                    "channel": channel,
                },
                created_at=now,
            )
            events.proposal_changed(locked.pk)
            tracing.set_attributes(span, {"gatehouse.state": locked.state})
        else:
            to_state = State.APPROVED if verdict == Review.Verdict.APPROVE else State.REJECTED
            tracing.set_attributes(span, {"gatehouse.state": to_state})
            won = transition(
                proposal_id=locked.pk,
                from_states=[State.PENDING_REVIEW],
                to_state=to_state,
                kind=f"proposal.{to_state}",
                actor=actor,
                fields={
                    **fields,
                    "decision_outcome": verdict,
                    "decided_by": Proposal.DecidedBy.REVIEWER,
                    "decision_reviewer_id": reviewer.pk,
                    "decision_reason": comment,
                    "decided_at": now,
                },
                data={
                    "verdict": verdict,
                    "comment": comment,
                    "payload_hash": current_hash,
                    "channel": channel,
                },
            )
            if not won:  # the row is locked, so only a bug could get here
                raise Conflict("This proposal was decided already.")
    proposal.refresh_from_db()
    return proposal


def proposal_extend_expiry(*, proposal_id: uuid.UUID, reviewer: User) -> Proposal:
    """Push a pending proposal's expiry back by its type's review TTL, once in its life.

    Any reviewer who may decide it may do so; a compare-and-set on `expiry_extended_at` makes
    the second attempt (or a race of two) a clean refusal.
    """
    now = timezone.now()
    with transaction.atomic():
        proposal = _locked_for_reviewer(proposal_id, reviewer)
        _check_may_decide(proposal, reviewer)
        if proposal.expiry_extended_at is not None:
            raise Conflict(
                "The review expiry of this proposal was extended once already.",
                code="already-extended",
            )
        previous = proposal.expires_at or now
        new_expiry = max(previous, now) + proposal.action_type.review_ttl
        won = (
            Proposal.objects.filter(
                pk=proposal.pk, state=State.PENDING_REVIEW, expiry_extended_at__isnull=True
            ).update(expires_at=new_expiry, expiry_extended_at=now, updated_at=now)
            == 1
        )
        if not won:  # the row is locked, so only a bug could get here
            raise Conflict("The review expiry of this proposal was extended once already.")
        AuditEvent.objects.create(
            proposal=proposal,
            kind="proposal.expiry_extended",
            actor=f"user:{reviewer.get_username()}",
            data={"from": previous.isoformat(), "to": new_expiry.isoformat()},
            created_at=now,
        )
        events.proposal_changed(proposal.pk, proposal.action_type_id)
    proposal.refresh_from_db()
    return proposal


# The share of a review SLA after which the group is reminded.
SLA_REMINDER_AT = 0.8


def proposals_check_sla(*, now: datetime | None = None, limit: int = 1000) -> tuple[int, int]:
    """Mark pending proposals that reached 80% of their review SLA (a reminder is due) and
    those past it (breached: escalated to the type's escalation group).

    Each mark is set once, by compare-and-set, with its audit event (`proposal.sla_reminder`,
    `proposal.sla_breached`) in the same transaction; apps above approvals hear of it through
    events.proposal_committed and send the notifications. Returns (reminded, breached).
    """
    now = now or timezone.now()
    pending = Proposal.objects.filter(state=State.PENDING_REVIEW, review_due_at__isnull=False)
    reminded = breached = 0
    for pk, created_at, due in pending.filter(sla_reminded_at__isnull=True).values_list(
        "pk", "created_at", "review_due_at"
    )[:limit]:
        assert due is not None  # filtered above
        if now < created_at + (due - created_at) * SLA_REMINDER_AT:
            continue
        reminded += _sla_mark(
            pk, "sla_reminded_at", "proposal.sla_reminder", now, {"due_at": due.isoformat()}
        )
    for pk, due, group, type_key in pending.filter(
        escalated_at__isnull=True, review_due_at__lte=now
    ).values_list("pk", "review_due_at", "action_type__escalation_group__name", "action_type__key")[
        :limit
    ]:
        assert due is not None
        won = _sla_mark(
            pk,
            "escalated_at",
            "proposal.sla_breached",
            now,
            {"due_at": due.isoformat(), "escalation_group": group},
        )
        if won:
            metrics.REVIEW_SLA_BREACHES.labels(type_key).inc()
        breached += won
    return reminded, breached


def _sla_mark(pk: uuid.UUID, field: str, kind: str, now: datetime, data: dict[str, Any]) -> int:
    with transaction.atomic():
        won = Proposal.objects.filter(
            pk=pk, state=State.PENDING_REVIEW, **{f"{field}__isnull": True}
        ).update(**{field: now})
        if not won:
            return 0
        AuditEvent.objects.create(
            proposal_id=pk, kind=kind, actor="system", data=data, created_at=now
        )
        events.proposal_changed(pk)
    return 1


def proposal_comment(*, proposal_id: uuid.UUID, reviewer: User, text: str) -> AuditEvent:
    """A note on a proposal, without a decision; it shows in the proposal's history."""
    text = text.strip()
    if not text:
        raise ApplicationError(
            "A comment cannot be empty.",
            status=422,
            code="comment-required",
            errors=[{"loc": ["comment"], "msg": "required"}],
        )
    with transaction.atomic():
        proposal = _locked_for_reviewer(proposal_id, reviewer)
        event = AuditEvent.objects.create(
            proposal=proposal,
            kind="proposal.commented",
            actor=f"user:{reviewer.get_username()}",
            data={"comment": text[:5000]},
        )
    return event


def password_check(*, password: str, user: User) -> None:
    """Django's password validators (AUTH_PASSWORD_VALIDATORS), as a refusal naming the field:
    every way Gatehouse sets a password runs them, as the admin's forms do."""
    try:
        validate_password(password, user)
    except DjangoValidationError as exc:
        raise ApplicationError(
            "The password is refused: " + " ".join(exc.messages),
            code="weak-password",
            errors=[{"loc": ["password"], "msg": m} for m in exc.messages],
        ) from None


@transaction.atomic
def reviewer_create(
    *, username: str, action_type_keys: Iterable[str], password: str | None = None
) -> tuple[User, list[Group], str | None]:
    """Create (or update) a reviewer allowed to decide the given action types.

    Access goes through groups: each action type's reviewer group (one named
    `reviewers:<key>` is created for a type that has none). Returns the user, the groups
    and a generated password when none was given for a new user (shown once).
    """
    keys = [k.strip() for k in action_type_keys if k.strip()]
    if not keys:
        raise ApplicationError("Name at least one action type.", code="action-types-required")
    found = {t.key: t for t in ActionType.objects.filter(key__in=keys)}
    missing = sorted(set(keys) - set(found))
    if missing:
        raise ApplicationError(
            f"Unknown action types: {', '.join(missing)}", code="unknown-action-type"
        )
    groups = []
    for key in keys:
        action_type = found[key]
        if action_type.reviewer_group is None:
            action_type.reviewer_group = Group.objects.get_or_create(name=f"reviewers:{key}")[0]
            action_type.save(update_fields=["reviewer_group", "updated_at"])
            localcache.clear_all()
        groups.append(action_type.reviewer_group)
    user, created = User.objects.get_or_create(username=username)
    generated = None
    if password is None and created:
        generated = password = secrets.token_urlsafe(15)
    if password is not None:
        password_check(password=password, user=user)
        user.set_password(password)
        user.save()
    user.groups.add(*groups)
    AuditEvent.objects.create(
        kind="reviewer.created" if created else "reviewer.updated",
        actor="system",
        data={"reviewer": username, "groups": sorted({g.name for g in groups})},
    )
    return user, list(dict.fromkeys(groups)), generated


# --- rules ------------------------------------------------------------------------------------


def _rule_snapshot(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "description": rule.description,
        "priority": rule.priority,
        "action_type_key": rule.action_type.key if rule.action_type is not None else "",
        "when": rule.when,
        "outcome": rule.outcome,
        "reason": rule.reason,
        "allows_irreversible": rule.allows_irreversible,
        "approvals_required": rule.approvals_required,
        "mode": rule.mode,
        "enabled": rule.enabled,
    }


def rule_save(*, rule: Rule, actor: str) -> bool:
    """Check a rule's condition, save it and record it as a new immutable version.

    Refuses (ApplicationError, field `when`) a condition that does not compile or type-check.
    Returns False, writing nothing, when nothing differs from the latest version.
    """
    from approvals.rules import RuleCompileError, compile_condition, invalidate

    try:
        compile_condition(rule.when)
    except RuleCompileError as exc:
        raise ApplicationError(
            f"Rule {rule.name!r}: the condition is refused: {exc}",
            status=422,
            code="invalid-rule",
            errors=[{"loc": ["when"], "msg": str(exc)}],
        ) from None
    if rule.outcome not in Proposal.Outcome.values:
        raise ApplicationError(f"Rule {rule.name!r}: unknown outcome {rule.outcome!r}.")
    if rule.approvals_required not in (1, 2) or not Rule.approvals_fit_outcome(
        rule.approvals_required, rule.outcome
    ):
        message = "1, or 2 with the outcome review (reviewers approve; a rule cannot)"
        raise ApplicationError(
            f"Rule {rule.name!r}: approvals_required must be {message}.",
            status=422,
            code="invalid-rule",
            errors=[{"loc": ["approvals_required"], "msg": message}],
        )
    snapshot = _rule_snapshot(rule)
    with transaction.atomic():
        latest = None
        if rule.pk is not None:
            Rule.objects.select_for_update().filter(pk=rule.pk).first()
            latest = RuleVersion.objects.filter(rule_id=rule.pk).order_by("-version").first()
        if latest is not None and all(getattr(latest, k) == v for k, v in snapshot.items()):
            return False
        rule.version = (latest.version if latest is not None else 0) + 1
        rule.save()
        RuleVersion.objects.create(rule=rule, version=rule.version, created_by=actor, **snapshot)
        AuditEvent.objects.create(
            kind="rule.saved",
            actor=actor,
            data={"rule": rule.name, "version": rule.version, **snapshot},
        )
        # This process forgets its rules now and again at commit; the others hear the
        # database's NOTIFY (see approvals/rules.py).
        invalidate()
        transaction.on_commit(invalidate)
    return True
