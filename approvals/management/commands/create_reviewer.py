from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals import services
from foundation.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Create a reviewer (or add types to one) allowed to decide the given action types, "
        "through each type's reviewer group. Prints a generated password once unless "
        "--password-stdin is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--action-types",
            required=True,
            help="Comma-separated keys, e.g. refund.issue,email.send",
        )
        parser.add_argument(
            "--password-stdin", action="store_true", help="Read the password from standard input"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = None
        if options["password_stdin"]:
            password = sys.stdin.readline().rstrip("\n")  # checked by the password validators
        try:
            user, groups, generated = services.reviewer_create(
                username=options["name"],
                action_type_keys=options["action_types"].split(","),
                password=password,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        names = ", ".join(sorted({g.name for g in groups}))
        self.stdout.write(f"Reviewer {user.username} may decide through groups: {names}")
        if generated:
            self.stdout.write(f"Password (shown once): {generated}")
