from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals import services
from foundation.errors import ApplicationError


class Command(BaseCommand):
    help = "Create a service and print its API key and webhook secret (shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--action-types", default="", help="comma-separated action type keys")
        parser.add_argument("--callback-url", default="")
        parser.add_argument("--json", action="store_true", help="print JSON")
        for grant, (help_text, _) in sorted(services.SERVICE_GRANTS.items()):
            parser.add_argument(f"--{grant}", default="", help=help_text)

    def handle(self, *args: Any, **options: Any) -> None:
        keys = _split(options["action_types"])
        grants = {g: _split(options[g.replace("-", "_")]) for g in services.SERVICE_GRANTS}
        try:
            service, api_key = services.service_create(
                name=options["name"],
                action_type_keys=keys,
                callback_url=options["callback_url"],
                grants=grants,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "name": service.name,
                        "api_key": api_key,
                        "webhook_secret": service.webhook_secret,
                    }
                )
            )
            return
        self.stdout.write(
            f"Service {service.name} created. Store these now; they are not shown again."
        )
        self.stdout.write(f"  API key:        {api_key}")
        self.stdout.write(f"  Webhook secret: {service.webhook_secret}")


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
