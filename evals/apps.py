from __future__ import annotations

from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "evals"
    verbose_name = "Evals"

    def ready(self) -> None:
        # Registers the prompts and eval_sets sections of `manage.py apply`.
        from evals import configspec  # noqa: F401
