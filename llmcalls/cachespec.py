"""A route's `semantic_cache` option, described once: the config file's item (llmcalls.configspec),
the admin form's check and what the routing snapshot reads from the route row (llmcalls.routing).
A module of its own so that routing can read it without importing the config-file machinery."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from foundation.configfile import Duration, StrictItem


class SemanticCacheSpec(StrictItem):
    """A route's `semantic_cache` (llmcalls.semcache), in YAML, the admin and the route row."""

    embedding_route: str = Field(min_length=1, max_length=200)
    threshold: float = Field(default=0.95, gt=0, le=1)
    ttl: Duration = timedelta(days=7)
    serve: Literal["approved_only", "any"] = "approved_only"

    @field_validator("ttl")
    @classmethod
    def _positive_ttl(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("the ttl must be at least 1s")
        return value

    def stored(self) -> dict[str, Any]:
        """As Route.semantic_cache keeps it (the ttl in whole seconds)."""
        return {**self.model_dump(), "ttl": f"{int(self.ttl.total_seconds())}s"}
