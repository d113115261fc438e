"""The REST API for services: /api/v1/."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Schema
from ninja.security import HttpBearer
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictStr, WithJsonSchema

from approvals import longpoll, selectors, services
from approvals.models import Proposal, Service
from approvals.representation import action_type_representation, proposal_representation
from foundation import cursors, jsonfast, jsonvalues, problems
from foundation.errors import ApplicationError, NotFound
from telemetry import metrics


class ServiceKeyAuth(HttpBearer):
    """Sets the calling service as `_service(request)` (and `request.service`)."""

    def __call__(self, request: HttpRequest) -> Service | None:
        # HttpBearer's own parsing, from META: ninja's reads request.headers, which builds a dict
        # of every header on each request when nothing else on the API path needs it.
        auth_value = request.META.get("HTTP_AUTHORIZATION")
        if not auth_value:
            return None
        scheme, _, token = auth_value.partition(" ")
        if scheme.lower() != self.openapi_scheme:
            return None
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> Service | None:
        service = services.api_key_authenticate(token=token)
        if service is not None:
            request.service = service  # type: ignore[attr-defined]
        return service


api = problems.ProblemAPI(
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

Text200 = Annotated[StrictStr, Field(max_length=200, pattern=problems.NO_NUL)]
Confidence = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]
JsonObject = Annotated[dict[str, Any], WithJsonSchema(problems.JSON_OBJECT_MARK)]


# Request bodies are plain pydantic models: ninja's Schema validates a model that forbids extra
# fields twice (once as the dict, once through its attribute getter), 59 µs a submit instead of 6.
class ProposalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action_type: Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=100,
            pattern=problems.NO_NUL,
            description="One of the keys `GET /action-types` lists; any other is refused (422).",
        ),
    ]
    payload: Annotated[
        JsonObject, Field(description="Checked against the action type's `payload_schema` (422).")
    ]
    confidence: Confidence
    summary: Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=problems.NO_NUL)]
    rationale: Annotated[StrictStr, Field(max_length=20_000, pattern=problems.NO_NUL)] = ""
    model: Text200 = ""
    prompt_version: Text200 = ""
    feature: Text200 = ""
    external_id: Text200 = ""
    llm_call_id: Annotated[
        uuid.UUID | None,
        Field(
            description="The `X-Gatehouse-Call-Id` of a model call this service made through "
            "the proxy (`/llm/v1`); any other id is refused (422)."
        ),
    ] = None
    metadata: JsonObject = Field(default_factory=dict)


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
    payload_hash: str | None = None
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


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[StrictStr, Field(max_length=2000, pattern=problems.NO_NUL)] = ""


class ResultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["executed", "failed"]
    detail: Annotated[StrictStr, Field(max_length=2000, pattern=problems.NO_NUL)] = ""


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


Filter = Annotated[str, Field(max_length=200, pattern=problems.NO_NUL)]


class ListFilters(Schema):
    state: Proposal.State | None = None
    action_type: Filter | None = None
    external_id: Filter | None = None
    cursor: Annotated[
        str | None,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": cursors.PATTERN,
                "description": "Opaque: the `next_cursor` of the page before (400 otherwise).",
            }
        ),
    ] = None
    limit: int = Field(50, ge=1, le=200)


# What each error status means, per kind of request; every error is application/problem+json.
AUTH = {401: "No valid service key: send `Authorization: Bearer gh_<prefix>_<secret>`."}
BODY = {
    400: (
        "The body is not JSON, or holds NaN/Infinity, a number out of range, a string or key "
        f"with the NUL character, or nests deeper than {jsonvalues.MAX_DEPTH} levels."
    ),
    413: "The body is larger than `API_MAX_BODY_BYTES` (256 KiB by default).",
    415: "The body is not `application/json`.",
}
INVALID = {422: "A field is missing or wrong; `errors` lists each one."}
NOT_FOUND = {404: "No such proposal for this service (another service's proposal too)."}


def responses(ok: dict[int, Any], *errors: dict[int, str]) -> dict[str, Any]:
    """`response=` and `openapi_extra=` for an operation: its successes and its documented
    errors, each with the problem schema and a description of when it happens."""
    described = {code: text for group in errors for code, text in group.items()}
    return {
        "response": {**ok, **dict.fromkeys(described, ProblemOut)},
        "openapi_extra": {
            "responses": {code: {"description": text} for code, text in described.items()}
        },
    }


def _link(operation_id: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": {"proposal_id": "$response.body#/id"}}


# The operations a proposal's id leads to, as OpenAPI links (clients and fuzzers follow them).
PROPOSAL_LINKS = {
    "GetProposal": _link("approvals_api_get_proposal"),
    "CancelProposal": _link("approvals_api_cancel_proposal"),
    "ReportResult": _link("approvals_api_report_result"),
}
IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": (
        "Makes a retry safe: the same key with the same body replays the first response (200); "
        "with another body it is refused (422); while the first is still running, 409. "
        "1 to 255 printable characters, quoted or bare (400 otherwise)."
    ),
    "schema": {"type": "string", "pattern": r"^[!#-~]{1,255}$"},
}


def _service(request: HttpRequest) -> Service:
    """The calling service, set by ServiceKeyAuth."""
    service: Service = request.auth  # type: ignore[attr-defined]
    return service


def _json(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(jsonfast.dumps(body), status=status, content_type="application/json")


def _idempotency_key(request: HttpRequest) -> str | None:
    raw = request.META.get("HTTP_IDEMPOTENCY_KEY")
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


SUBMIT = responses(
    {200: ProposalOut, 201: ProposalOut},
    AUTH,
    BODY,
    {400: BODY[400] + " Or the Idempotency-Key is not 1 to 255 printable characters."},
    {403: "This service may not propose that action type; an admin can allow it."},
    {409: "A request with the same Idempotency-Key is still being processed; retry shortly."},
    {
        422: (
            "A field is missing or wrong, the action type is unknown, the payload breaks the "
            "action type's JSON Schema, or the Idempotency-Key was used with another body; "
            "`errors` lists each field."
        )
    },
)
SUBMIT["openapi_extra"]["parameters"] = [IDEMPOTENCY_KEY]
for _code in (200, 201):
    SUBMIT["openapi_extra"]["responses"][_code] = {"links": PROPOSAL_LINKS}


@api.post("/proposals", **SUBMIT, tags=["proposals"])
def submit_proposal(request: HttpRequest, data: ProposalIn) -> HttpResponse:
    """Submit a proposed action. 201 when new, 200 when an idempotent replay."""
    started = time.perf_counter()
    key = _idempotency_key(request)
    # The body parser (foundation.problems.parse_json_body) checked every value of the body.
    result = services.proposal_submit(
        service=_service(request),
        data=data.model_dump(mode="json"),
        idempotency_key=key,
        values_checked=True,
    )
    response = _json(result.response, status=200 if result.replayed else 201)
    response["Location"] = f"/api/v1/proposals/{result.proposal.id}"
    if result.replayed:
        response["Idempotent-Replayed"] = "true"
    metrics.SUBMIT_SECONDS.observe(time.perf_counter() - started)
    return response


@api.get(
    "/proposals/{proposal_id}",
    **responses({200: ProposalOut}, AUTH, NOT_FOUND, INVALID),
    tags=["proposals"],
)
def get_proposal(
    request: HttpRequest,
    proposal_id: uuid.UUID,
    wait: Annotated[float, Field(ge=0)] = 0,
) -> HttpResponse:
    """One of your proposals. `?wait=SECONDS` (at most 30) holds the request until it is decided."""
    since = time.monotonic()
    proposal = selectors.proposal_for_service(service=_service(request), proposal_id=proposal_id)
    if proposal is None:
        raise NotFound("No such proposal for this service.")
    return longpoll.respond(request, proposal, since=since, wait=wait)


def _decode_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    position = cursors.decode(text)
    if position is None:
        raise ApplicationError(
            "The cursor is not one this API returned.",
            status=400,
            code="invalid-cursor",
            errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor"}],
        )
    return position


@api.get(
    "/proposals",
    **responses(
        {200: ProposalPage}, AUTH, {400: "The cursor is not one this API returned."}, INVALID
    ),
    tags=["proposals"],
)
def list_proposals(request: HttpRequest, filters: Query[ListFilters]) -> HttpResponse:
    """Your proposals, newest first, `limit` at a time; pass `next_cursor` back as `cursor`."""
    rows, more = selectors.proposals_for_service(
        service=_service(request),
        state=filters.state,
        action_type=filters.action_type,
        external_id=filters.external_id,
        after=_decode_cursor(filters.cursor) if filters.cursor else None,
        limit=filters.limit,
    )
    return _json(
        {
            "items": [proposal_representation(p) for p in rows],
            "next_cursor": cursors.encode(rows[-1].created_at, rows[-1].id) if more else None,
        }
    )


@api.post(
    "/proposals/{proposal_id}/cancel",
    **responses(
        {200: ProposalOut},
        AUTH,
        BODY,
        NOT_FOUND,
        {409: "The proposal is no longer pending; `state` says what it is."},
        INVALID,
    ),
    tags=["proposals"],
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
    "/proposals/{proposal_id}/result",
    **responses(
        {200: ProposalOut},
        AUTH,
        BODY,
        NOT_FOUND,
        {
            409: (
                "The proposal is not approved (`state` says what it is), or its action type "
                "is executed by Gatehouse, not by the service (executor is not `none`)."
            )
        },
        INVALID,
    ),
    tags=["proposals"],
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


@api.get("/action-types", **responses({200: list[ActionTypeOut]}, AUTH), tags=["action types"])
def list_action_types(request: HttpRequest) -> list[dict[str, Any]]:
    """The action types this service may propose, with the JSON Schema of their payloads."""
    return [
        action_type_representation(t)
        for t in selectors.action_types_for_service(service=_service(request))
    ]
