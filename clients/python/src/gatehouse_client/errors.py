"""Typed errors: one class per kind of problem+json answer, and the outcomes of a gated call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gatehouse_client.models import Proposal

PROBLEM_PREFIX = "urn:gatehouse:problem:"


@dataclass(frozen=True)
class FieldError:
    """One bad field: `loc` as the server gives it (e.g. `["body", "payload", "amount"]`)."""

    loc: tuple[str | int, ...]
    msg: str

    @property
    def field(self) -> str:
        """The field's dotted path without the `body` / `query` / `header` prefix."""
        parts = list(self.loc)
        if parts and parts[0] in {"body", "query", "header", "path"}:
            parts = parts[1:]
        return ".".join(str(p) for p in parts)


class GatehouseError(Exception):
    """Any error this client raises."""


class APIError(GatehouseError):
    """Gatehouse answered with an error (`application/problem+json`)."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        title: str = "",
        detail: str = "",
        errors: list[FieldError] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.body = body or {}
        super().__init__(f"{status} {code}: {detail or title}")

    @property
    def fields(self) -> dict[str, str]:
        """Each bad field's dotted path (`payload.amount`) and what is wrong with it."""
        return {e.field: e.msg for e in self.errors}


class BadRequest(APIError):
    """400: malformed JSON, an invalid Idempotency-Key or cursor."""


class Unauthorized(APIError):
    """401: no valid service key."""


class Forbidden(APIError):
    """403: the service may not propose this action type."""


class NotFound(APIError):
    """404: no such proposal for this service."""


class Conflict(APIError):
    """409: the proposal is not in a state that allows this, or the key is still in flight."""


class PayloadTooLarge(APIError):
    """413."""


class UnsupportedMediaType(APIError):
    """415."""


class ValidationError(APIError):
    """422: a field is missing or wrong, or the payload breaks the action type's schema."""


class RateLimited(APIError):
    """429 after the retries ran out."""


class ServerError(APIError):
    """5xx after the retries ran out."""


class ConnectionFailed(GatehouseError):
    """Gatehouse could not be reached (after the retries ran out)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    429: RateLimited,
}


def error_from_response(status: int, body: Any) -> APIError:
    """The typed error for an answer; tolerant of bodies that are not problem+json (a proxy's)."""
    problem = body if isinstance(body, dict) else {}
    kind = str(problem.get("type") or "")
    code = kind.removeprefix(PROBLEM_PREFIX) if kind.startswith(PROBLEM_PREFIX) else kind
    errors = []
    for item in problem.get("errors") or []:
        if isinstance(item, dict):
            loc = item.get("loc")
            errors.append(
                FieldError(
                    loc=tuple(loc) if isinstance(loc, list) else (),
                    msg=str(item.get("msg", "")),
                )
            )
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    return cls(
        status=status,
        code=code or f"http-{status}",
        title=str(problem.get("title") or ""),
        detail=str(problem.get("detail") or ""),
        errors=errors,
        body=problem,
    )


# --- outcomes of a gated call (@requires_approval and the adapters) ------------------------


class NotApproved(GatehouseError):
    """The gated function did not run: the proposal was not approved."""

    def __init__(self, message: str, *, proposal: Proposal | None) -> None:
        super().__init__(message)
        self.proposal = proposal

    @property
    def proposal_id(self) -> str | None:
        return self.proposal.id if self.proposal is not None else None


class Rejected(NotApproved):
    """A reviewer or a rule rejected the proposal; `reason` says why."""

    def __init__(self, reason: str, *, proposal: Proposal) -> None:
        super().__init__(f"Rejected: {reason}", proposal=proposal)
        self.reason = reason


class Expired(NotApproved):
    """Nobody decided before the action type's review TTL ran out."""


class Cancelled(NotApproved):
    """The proposal was withdrawn."""


class ApprovalTimeout(NotApproved):
    """No decision within the caller's wait; the proposal was withdrawn if it still could be."""


class PayloadMismatch(NotApproved):
    """What would run does not hash to what was approved; nothing ran."""


class AlreadyExecuted(NotApproved):
    """The proposal was approved and its result already reported: a second run would repeat it."""
