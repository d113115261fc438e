from __future__ import annotations

from django.apps import AppConfig


class McpgateConfig(AppConfig):
    name = "mcpgate"
    verbose_name = "MCP"

    def ready(self) -> None:
        # Registers the mcp_upstreams section of `manage.py apply`.
        from mcpgate import configspec  # noqa: F401
