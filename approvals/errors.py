"""One error type for requests that break a rule of the domain, mapped once to problem+json."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A request the domain refuses. `errors` lists field errors as {"loc": [...], "msg": "..."}."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "bad-request",
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.title = title
        self.errors = errors or []
        self.extra = extra or {}


class Conflict(ApplicationError):
    """Another request changed the same thing first (a lost compare-and-set)."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("status", 409)
        kwargs.setdefault("code", "conflict")
        super().__init__(message, **kwargs)


class NotFound(ApplicationError):
    def __init__(self, message: str = "Not found.", **kwargs: Any) -> None:
        kwargs.setdefault("status", 404)
        kwargs.setdefault("code", "not-found")
        super().__init__(message, **kwargs)
