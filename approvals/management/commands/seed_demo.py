from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from approvals import services
from approvals.models import ApiKey, Service
from foundation import configfile

DEMO_FILE = Path(settings.BASE_DIR) / "config" / "demo.yaml"
# Where config/demo.yaml expects the demo's simulated model; `--model-url` moves it.
DEMO_MODEL_URL = "http://127.0.0.1:18560/v1"
DEMO_PASSWORD = "gatehouse-demo"  # noqa: S105 - the demo's own login, printed for the newcomer
# The features the demo service may call through the model proxy, each for the action type its
# proposals take (so each team reads only its own model calls). Applied once the service exists.
DEMO_GRANTS = """
llm_grants:
  - {service: demo-shop, feature: support-refunds, action_types: [refund.issue]}
  - {service: demo-shop, feature: support-replies, action_types: [email.send]}
  - {service: demo-shop, feature: trust-and-safety, action_types: [account.close]}
"""


class Command(BaseCommand):
    help = "Load the demo configuration, a demo service with a fresh key, and demo logins."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--model-url",
            default=DEMO_MODEL_URL,
            help="base URL of the demo's simulated model (manage.py simulate_provider)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        text = DEMO_FILE.read_text().replace(DEMO_MODEL_URL, options["model_url"])
        with transaction.atomic():
            configfile.apply(text, source=str(DEMO_FILE))
            # Two teams, so that per-team visibility shows: `reviewer` decides refunds and
            # account closures, `comms` the customer emails; the simulated reviewer2 all three.
            reviewer = self._user("reviewer", staff=False, groups=["support", "trust-and-safety"])
            self._user("comms", staff=False, groups=["comms"])
            self._user("reviewer2", staff=False, groups=["support", "comms", "trust-and-safety"])
            self._user("admin", staff=True, groups=[])
            service = Service.objects.filter(name="demo-shop").first()
            if service is None:
                service, api_key = services.service_create(
                    name="demo-shop",
                    action_type_keys=["refund.issue", "email.send", "account.close"],
                )
            else:
                ApiKey.objects.filter(service=service, revoked_at__isnull=True).update(
                    revoked_at=service.created_at
                )
                _, api_key = services.api_key_create(service=service, label="demo")
            configfile.apply(DEMO_GRANTS, source="seed_demo")
        self.stdout.write(f"Demo reviewer login: {reviewer.username} / {DEMO_PASSWORD}")
        self.stdout.write(f"Emails team login:   comms / {DEMO_PASSWORD}")
        self.stdout.write(f"Admin login:         admin / {DEMO_PASSWORD}")
        self.stdout.write(f"Demo service key:    {api_key}")
        (Path(settings.BASE_DIR) / ".demo-key").write_text(api_key + "\n")

    def _user(self, name: str, *, staff: bool, groups: list[str]) -> User:
        user, created = User.objects.get_or_create(
            username=name, defaults={"is_staff": staff, "is_superuser": staff}
        )
        if created:
            services.password_check(password=DEMO_PASSWORD, user=user)
            user.set_password(DEMO_PASSWORD)
            user.save()
        for group_name in groups:
            user.groups.add(Group.objects.get_or_create(name=group_name)[0])
        return user
