"""The REST API for services: /api/v1/."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection as db_connection
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Query, Schema
from ninja.security import HttpBearer
from pydantic import ConfigDict, StrictFloat, StrictStr

from approvals import jsonfast, problems, services
from approvals.errors import ApplicationError, NotFound
from approvals.models import ActionType, Proposal, Service
from approvals.representation import proposal_representation


class ServiceKeyAuth(HttpBearer):
    """Sets the calling service as `_service(request)` (and `request.service`)."""

    def authenticate(self, request: HttpRequest, token: str) -> Service | None:
        service = services.api_key_authenticate(token=token)
        if service is not None:
            request.service = service  # type: ignore[attr-defined]
        return service


api = NinjaAPI(
    title="Gatehouse API",
    version="1.0.0",
    description=(
        "Services submit the actions their models propose; Gatehouse decides by rule or routes "
        "them to a reviewer. Authenticate with `Authorization: Bearer gh_<prefix>_<secret>`. "
        "Errors are `application/problem+json` (RFC 9457). `Idempotency-Key` on POST /proposals "
        "is scoped per service and kept at least 24 hours: a replay with the same body returns the "
        "first response (200), the same key with another body is refused (422), and the same key "
        "while the first request is still running is a conflict (409)."
    ),
    auth=ServiceKeyAuth(),
    parser=problems.StrictJSONParser(),
    urls_namespace="api",
)
problems.install(api)

Text200 = Annotated[StrictStr, Field(max_length=200)]
Confidence = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]


class ProposalIn(Schema):
    model_config = ConfigDict(extra="forbid")

    action_type: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    payload: dict[str, Any]
    confidence: Confidence
    summary: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    rationale: Annotated[StrictStr, Field(max_length=20_000)] = ""
    model: Text200 = ""
    prompt_version: Text200 = ""
    feature: Text200 = ""
    external_id: Text200 = ""
    llm_call_id: uuid.UUID | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class DecisionOut(Schema):
    outcome: str
    by: Literal["rule", "reviewer", "policy"]
    rule: str | None
    rule_version: int | None
    reviewer: str | None
    reason: str
    decided_at: datetime | None
    trace: list[dict[str, Any]]


class RoutingOut(Schema):
    reason: str
    trace: list[dict[str, Any]]


class ExecutionOut(Schema):
    executor: Literal["webhook", "callable", "none"]
    status: Literal["pending", "running", "retrying", "succeeded", "failed", "awaiting_report"]
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    completed_at: datetime | None


class ProposalOut(Schema):
    id: uuid.UUID
    action_type: str
    state: str
    payload: dict[str, Any]
    final_payload: dict[str, Any] | None
    confidence: float
    summary: str
    external_id: str | None
    llm_call_id: uuid.UUID | None
    decision: DecisionOut | None
    routing: RoutingOut | None
    execution: ExecutionOut | None = None
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    links: dict[str, str]


class ProposalPage(Schema):
    items: list[ProposalOut]
    next_cursor: str | None


class ProblemOut(Schema):
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None


class CancelIn(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[StrictStr, Field(max_length=2000)] = ""


class ResultIn(Schema):
    model_config = ConfigDict(extra="forbid")
    status: Literal["executed", "failed"]
    detail: Annotated[StrictStr, Field(max_length=2000)] = ""


class ActionTypeOut(Schema):
    key: str
    title: str
    description: str
    irreversible: bool
    risk: str
    approvals_required: int
    review_ttl_seconds: int
    executor: str
    payload_schema: dict[str, Any]


class ListFilters(Schema):
    state: Proposal.State | None = None
    action_type: str | None = None
    external_id: str | None = None
    cursor: str | None = None
    limit: int = Field(50, ge=1, le=200)


ERRORS: dict[int, type[Schema]] = {
    code: ProblemOut for code in (400, 401, 403, 404, 409, 413, 415, 422)
}


def _service(request: HttpRequest) -> Service:
    """The calling service, set by ServiceKeyAuth."""
    service: Service = request.auth  # type: ignore[attr-defined]
    return service


def _json(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(jsonfast.dumps(body), status=status, content_type="application/json")


def _idempotency_key(request: HttpRequest) -> str | None:
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > 255 or not key.isprintable():
        raise ApplicationError(
            "Idempotency-Key must be 1 to 255 printable characters (quoted or bare).",
            status=400,
            code="invalid-idempotency-key",
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": "1 to 255 printable characters"}],
        )
    return key


@api.post("/proposals", response={200: ProposalOut, 201: ProposalOut, **ERRORS}, tags=["proposals"])
def submit_proposal(request: HttpRequest, data: ProposalIn) -> HttpResponse:
    """Submit a proposed action. 201 when new, 200 when an idempotent replay."""
    key = _idempotency_key(request)
    result = services.proposal_submit(
        service=_service(request), data=data.model_dump(mode="json"), idempotency_key=key
    )
    response = _json(result.response, status=200 if result.replayed else 201)
    response["Location"] = f"/api/v1/proposals/{result.proposal.id}"
    if result.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def _load(service: Service, proposal_id: uuid.UUID) -> Proposal | None:
    return (
        Proposal.objects.select_related("action_type", "decision_reviewer")
        .prefetch_related("outbox")
        .filter(pk=proposal_id, service=service)
        .first()
    )


def _load_and_release(service: Service, proposal_id: uuid.UUID) -> Proposal | None:
    """`_load`, then the connection goes back to the pool: a long poll sleeps between reads,
    and 500 waiters each holding a connection for 30 s would exhaust the pool (DB_POOL_MAX)
    and answer 503 (bench/long_poll.py measured 484 of 500)."""
    try:
        return _load(service, proposal_id)
    finally:
        if not db_connection.in_atomic_block:  # (tests run each in a transaction)
            db_connection.close()


@api.get("/proposals/{proposal_id}", response={200: ProposalOut, **ERRORS}, tags=["proposals"])
async def get_proposal(
    request: HttpRequest,
    proposal_id: uuid.UUID,
    wait: Annotated[float, Field(ge=0)] = 0,
) -> HttpResponse:
    """One of your proposals. `?wait=SECONDS` (at most 30) holds the request until it is decided."""
    service = _service(request)
    load = sync_to_async(_load_and_release)
    proposal = await load(service, proposal_id)
    if proposal is None:
        raise NotFound("No such proposal for this service.")
    deadline = time.monotonic() + min(wait, settings.LONG_POLL_MAX_SECONDS)
    pause = 0.05
    while not proposal.is_decided and time.monotonic() < deadline:
        await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 1.5, 0.5)
        proposal = await load(service, proposal_id) or proposal
    return _json(proposal_representation(proposal))


def _encode_cursor(proposal: Proposal) -> str:
    raw = f"{proposal.created_at.isoformat()}|{proposal.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, pk = raw.split("|")
        return datetime.fromisoformat(created), uuid.UUID(pk)
    except ValueError:
        raise ApplicationError(
            "The cursor is not one this API returned.",
            status=400,
            code="invalid-cursor",
            errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor"}],
        ) from None


@api.get("/proposals", response={200: ProposalPage, **ERRORS}, tags=["proposals"])
def list_proposals(request: HttpRequest, filters: Query[ListFilters]) -> HttpResponse:
    """Your proposals, newest first, `limit` at a time; pass `next_cursor` back as `cursor`."""
    qs = (
        Proposal.objects.select_related("action_type", "decision_reviewer")
        .prefetch_related("outbox")
        .filter(service=_service(request))
    )
    if filters.state:
        qs = qs.filter(state=filters.state)
    if filters.action_type:
        qs = qs.filter(action_type__key=filters.action_type)
    if filters.external_id:
        qs = qs.filter(external_id=filters.external_id)
    if filters.cursor:
        created, pk = _decode_cursor(filters.cursor)
        qs = qs.filter(Q(created_at__lt=created) | Q(created_at=created, id__lt=pk))
    rows = list(qs.order_by("-created_at", "-id")[: filters.limit + 1])
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    return _json(
        {
            "items": [proposal_representation(p) for p in rows],
            "next_cursor": _encode_cursor(rows[-1]) if more else None,
        }
    )


@api.post(
    "/proposals/{proposal_id}/cancel", response={200: ProposalOut, **ERRORS}, tags=["proposals"]
)
def cancel_proposal(
    request: HttpRequest, proposal_id: uuid.UUID, data: CancelIn | None = None
) -> HttpResponse:
    """Withdraw a proposal that is still pending."""
    proposal = services.proposal_cancel(
        service=_service(request), proposal_id=proposal_id, reason=data.reason if data else ""
    )
    return _json(proposal_representation(proposal))


@api.post(
    "/proposals/{proposal_id}/result", response={200: ProposalOut, **ERRORS}, tags=["proposals"]
)
def report_result(request: HttpRequest, proposal_id: uuid.UUID, data: ResultIn) -> HttpResponse:
    """For executor `none`: report that you executed the approved action, or that it failed."""
    proposal = services.proposal_report_result(
        service=_service(request),
        proposal_id=proposal_id,
        succeeded=data.status == "executed",
        detail=data.detail,
    )
    return _json(proposal_representation(proposal))


@api.get("/action-types", response={200: list[ActionTypeOut], **ERRORS}, tags=["action types"])
def list_action_types(request: HttpRequest) -> list[dict[str, Any]]:
    """The action types this service may propose, with the JSON Schema of their payloads."""
    types = ActionType.objects.filter(services=_service(request)).order_by("key")
    return [
        {
            "key": t.key,
            "title": t.title,
            "description": t.description,
            "irreversible": t.irreversible,
            "risk": t.risk,
            "approvals_required": t.approvals_required,
            "review_ttl_seconds": int(t.review_ttl.total_seconds()),
            "executor": t.executor_kind,
            "payload_schema": t.payload_schema,
        }
        for t in types
    ]
