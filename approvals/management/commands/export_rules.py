from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from approvals import configspec


class Command(BaseCommand):
    help = "Print the rules as a YAML `rules:` file that `manage.py apply` takes back unchanged."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(configspec.export_rules(), ending="")
