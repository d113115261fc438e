"""The `mcp_upstreams` section of `manage.py apply` (registered by mcpgate's AppConfig.ready)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from foundation.configfile import ConfigFileError, StrictItem, register, upsert
from mcpgate.models import NAME_PATTERN


class ToolOverride(StrictItem):
    irreversible: bool | None = None
    risk: Literal["low", "medium", "high"] | None = None
    read_only: bool | None = None


class UpstreamSpec(StrictItem):
    name: str = Field(pattern=NAME_PATTERN)
    url: str = Field(max_length=500)
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="header name → environment variable holding its value"
    )
    services: list[str] = Field(default_factory=list)
    tools: dict[str, ToolOverride] = Field(default_factory=dict)
    reviewer_group: str | None = None
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("an MCP upstream needs an http(s):// URL (streamable HTTP)")
        return url

    @field_validator("headers_env")
    @classmethod
    def _variables(cls, headers: dict[str, str]) -> dict[str, str]:
        for header, variable in headers.items():
            if not header.replace("-", "").isalnum():
                raise ValueError(f"{header!r} is not a header name")
            if not variable.replace("_", "").isalnum():
                raise ValueError(f"{variable!r} is not an environment variable name")
        return headers


@register("mcp_upstreams", UpstreamSpec, order=70)
def apply_mcp_upstreams(items: list[UpstreamSpec]) -> list[str]:
    from django.contrib.auth.models import Group

    from approvals.models import Service
    from mcpgate import services
    from mcpgate.models import Upstream

    report = []
    for spec in items:
        found = {s.name: s for s in Service.objects.filter(name__in=spec.services)}
        missing = sorted(set(spec.services) - set(found))
        if missing:
            raise ConfigFileError(
                [f"mcp_upstreams: {spec.name}: unknown services: {', '.join(missing)}"]
            )
        group = (
            Group.objects.get_or_create(name=spec.reviewer_group)[0]
            if spec.reviewer_group
            else None
        )
        values = {
            "url": spec.url,
            "headers_env": spec.headers_env,
            "tool_overrides": {
                tool: o.model_dump(exclude_none=True) for tool, o in spec.tools.items()
            },
            "reviewer_group": group,
            "enabled": spec.enabled,
        }
        what = upsert(Upstream, {"name": spec.name}, values)
        upstream = Upstream.objects.get(name=spec.name)
        if set(upstream.services.all()) != set(found.values()):
            upstream.services.set(found.values())
            what = "updated (services)" if what == "unchanged" else what
        services.upstream_services_sync(upstream=upstream)
        changed = services.upstream_overrides_apply(upstream=upstream)
        if changed:
            what += f"; tools changed: {', '.join(changed)}"
        report.append(f"mcp upstream {spec.name}: {what}")
    return report
