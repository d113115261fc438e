from __future__ import annotations

from django.apps import AppConfig


class LlmcallsConfig(AppConfig):
    name = "llmcalls"
    verbose_name = "Model calls"

    def ready(self) -> None:
        # Registers the llm_providers and llm_routes sections of `manage.py apply`.
        from llmcalls import configspec  # noqa: F401
