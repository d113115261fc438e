from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals import services
from foundation.errors import ApplicationError


class Command(BaseCommand):
    help = "Revoke an API key by its prefix (the part after gh_)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"].removeprefix("gh_").split("_")[0]
        try:
            key = services.api_key_revoke(prefix=prefix)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Key gh_{key.prefix}_… of service {key.service.name} is revoked.")
