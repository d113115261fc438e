"""Business operations. Views, the API, the admin, commands, tasks and tests all call these."""

from __future__ import annotations

import hashlib
import secrets
import string
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from approvals import decisions, localcache, outbox, schemas_cache
from approvals.errors import ApplicationError, Conflict, NotFound
from approvals.models import (
    ActionType,
    ApiKey,
    AuditEvent,
    Proposal,
    Review,
    Rule,
    RuleVersion,
    Service,
    payload_hash,
)
from approvals.representation import proposal_representation

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


@transaction.atomic
def service_create(
    *, name: str, action_type_keys: Iterable[str] = (), callback_url: str = ""
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
    service = Service.objects.create(
        name=name, callback_url=callback_url, webhook_secret=webhook_secret_generate()
    )
    service.action_types.set(found.values())
    _, plain = api_key_create(service=service, label="created with the service")
    AuditEvent.objects.create(kind="service.created", actor="system", data={"service": name})
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


def proposal_submit(
    *, service: Service, data: dict[str, Any], idempotency_key: str | None = None
) -> SubmitResult:
    """Record a proposal, decide it automatically if the rules can, else queue it for review.

    `data` is the validated request body. With an idempotency key, a replay with the same body
    returns the first response; the same key with another body is refused (422); the same key
    while the first request is still running is a conflict (409).
    """
    request_hash = payload_hash(data) if idempotency_key is not None else ""
    action_type = _allowed_action_type(service=service, key=data["action_type"])
    schema_errors = schemas_cache.validate_payload(action_type, data["payload"])
    if schema_errors:
        raise ApplicationError(
            f"The payload does not match the schema of {action_type.key!r}: {schema_errors[0]['msg']}",
            status=422,
            code="validation-error",
            errors=schema_errors,
        )
    try:
        with transaction.atomic():
            if idempotency_key is not None:
                replay = _idempotent_replay(service, idempotency_key, request_hash)
                if replay is not None:
                    return replay
            return _create_proposal(service, action_type, data, idempotency_key, request_hash)
    except IntegrityError:
        # Only the idempotency constraint can collide here: another request won the race.
        if idempotency_key is None:
            raise
        raise Conflict(
            "A request with this Idempotency-Key is being processed; retry shortly.",
            code="idempotency-key-in-flight",
        ) from None


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


def _create_proposal(
    service: Service,
    action_type: ActionType,
    data: dict[str, Any],
    idempotency_key: str | None,
    request_hash: str,
) -> SubmitResult:
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
        proposal=proposal, service=service, action_type=action_type
    )
    proposal.rule_trace = decision.trace
    routed_state = _apply_auto_decision(proposal, action_type, decision, now)
    response = proposal_representation(proposal)
    # Only a request with an idempotency key can be replayed, so only then is its answer kept.
    proposal.first_response = response if idempotency_key is not None else None
    # The row is invisible to everyone until this transaction commits, so it is inserted in
    # its routed state; the audit trail still records both steps.
    proposal.save(force_insert=True)
    actor = f"service:{service.name}"
    AuditEvent.objects.bulk_create(
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
        ]
    )
    if routed_state in outbox.CALLBACK_STATES:
        outbox.outbox_record(proposal=proposal, to_state=routed_state)
    return SubmitResult(proposal=proposal, response=response, replayed=False)


def _apply_auto_decision(
    proposal: Proposal, action_type: ActionType, decision: decisions.AutoDecision, now: datetime
) -> str:
    if decision.outcome == "review":
        proposal.state = State.PENDING_REVIEW
        proposal.expires_at = now + action_type.review_ttl
        proposal.decision_reason = decision.reason
        return proposal.state
    proposal.state = State.APPROVED if decision.outcome == "approve" else State.REJECTED
    proposal.decision_outcome = decision.outcome
    proposal.decided_by = Proposal.DecidedBy.RULE if decision.rule else Proposal.DecidedBy.POLICY
    proposal.decision_rule = decision.rule
    proposal.decision_rule_version = decision.rule_version
    proposal.decision_reason = decision.reason
    proposal.decided_at = now
    return proposal.state


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
                # Execution and callbacks are recorded with the change and sent after commit.
                outbox.outbox_record(
                    proposal=Proposal.objects.select_related(
                        "service", "action_type", "decision_reviewer"
                    ).get(pk=proposal_id),
                    to_state=to_state,
                )
        return won


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


def proposal_decide(
    *,
    proposal: Proposal,
    reviewer: User,
    verdict: str,
    comment: str = "",
    seen_payload_hash: str | None = None,
) -> Proposal:
    """A reviewer's verdict on a pending proposal."""
    if verdict not in Review.Verdict.values:
        raise ApplicationError(f"Unknown verdict {verdict!r}.", code="invalid-verdict")
    if verdict == Review.Verdict.REJECT and not comment.strip():
        raise ApplicationError(
            "A rejection needs a reason.",
            status=422,
            code="reason-required",
            errors=[{"loc": ["comment"], "msg": "required when rejecting"}],
        )
    if seen_payload_hash is not None and seen_payload_hash != proposal.payload_hash:
        raise Conflict("The payload changed since you opened it; reload and review again.")
    to_state = State.APPROVED if verdict == Review.Verdict.APPROVE else State.REJECTED
    now = timezone.now()
    with transaction.atomic():
        won = transition(
            proposal_id=proposal.pk,
            from_states=[State.PENDING_REVIEW],
            to_state=to_state,
            kind=f"proposal.{to_state}",
            actor=f"user:{reviewer.get_username()}",
            fields={
                "decision_outcome": verdict,
                "decided_by": Proposal.DecidedBy.REVIEWER,
                "decision_reviewer_id": reviewer.pk,
                "decision_reason": comment,
                "decided_at": now,
            },
            data={"verdict": verdict, "comment": comment},
        )
        if not won:
            proposal.refresh_from_db()
            raise Conflict(f"This proposal was decided already: it is {proposal.state}.")
        Review.objects.create(
            proposal=proposal,
            reviewer=reviewer,
            verdict=verdict,
            comment=comment,
            payload_hash=proposal.payload_hash,
            created_at=now,
        )
    proposal.refresh_from_db()
    return proposal


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
