from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from foundation.errors import ApplicationError
from notify import services


class Command(BaseCommand):
    help = (
        "Let a Slack user act as a Gatehouse reviewer: link_slack USER SLACK_ID, or "
        "link_slack USER to find them in Slack by their email address (users.lookupByEmail)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("slack_user_id", nargs="?", help="U0123ABCD; omit to look up by email")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}.")
        try:
            if options["slack_user_id"]:
                link = services.slack_link(user=user, slack_user_id=options["slack_user_id"])
            else:
                link = services.slack_link_by_email(user=user)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"{user.get_username()} is Slack user {link.slack_user_id} ({link.method})"
        )
