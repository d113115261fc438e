"""Demo only: reviewers who decide what `simulate_service` posts, so insights has verdicts.

`python manage.py simulate_reviewers [--as reviewer2] [--delay 20] [--interval 2]`
Every `--interval` seconds it decides pending proposals older than `--delay` seconds (humans get
the fresh ones first), through the same claim and decide services the reviewer UI uses. It agrees
with a proposal with a probability equal to its stated confidence (a calibrated model) while the
proposal's metadata says `sim_quality: good`, and far less often once the simulated service's
"silent model update" degraded it. It also turns on audit sampling (`--audit-fraction`) for action
types that have no insights settings yet.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from approvals import services as approvals_services
from approvals.models import ActionType, Proposal
from foundation.errors import ApplicationError
from insights import services
from insights.models import TypeSettings


class Command(BaseCommand):
    help = "Demo: decide pending proposals as simulated reviewers (see simulate_service)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--as", dest="username", default="reviewer2")
        parser.add_argument("--delay", type=float, default=20, help="Leave newer ones to humans")
        parser.add_argument("--interval", type=float, default=2)
        parser.add_argument("--audit-fraction", type=float, default=0.3)
        parser.add_argument("--once", action="store_true", help="One pass, then stop")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}: run `manage.py seed_demo` first.")
        for action_type in ActionType.objects.exclude(insight_settings__isnull=False):
            services.type_settings_save(
                action_type=action_type,
                audit_fraction=options["audit_fraction"],
                error_target=TypeSettings._meta.get_field("error_target").get_default(),
                brake_enabled=True,
            )
        rng = random.Random(options["seed"])
        while True:
            cutoff = timezone.now() - timedelta(seconds=options["delay"])
            pending = (
                Proposal.objects.filter(state=Proposal.State.PENDING_REVIEW, created_at__lt=cutoff)
                .exclude(reviews__reviewer=user)  # four-eyes: the second pair is a human's
                .order_by("created_at")[:50]
            )
            for proposal in pending:
                self._decide(proposal, user, rng)
            if options["once"]:
                return
            time.sleep(options["interval"])

    def _decide(self, proposal: Proposal, user: User, rng: random.Random) -> None:
        degraded = (proposal.metadata or {}).get("sim_quality") == "degraded"
        p_agree = proposal.confidence * (0.55 if degraded else 1.0)
        agree = rng.random() < min(p_agree + 0.04, 0.995)
        try:
            approvals_services.claim_acquire(proposal_id=proposal.pk, reviewer=user)
            approvals_services.proposal_decide(
                proposal=proposal,
                reviewer=user,
                verdict="approve" if agree else "reject",
                comment="" if agree else "Simulated reviewer: not what policy allows.",
            )
        except ApplicationError as exc:  # claimed by a human, decided already, four-eyes …
            self.stdout.write(f"skip {proposal.pk}: {exc}")
            return
        self.stdout.write(f"{'approve' if agree else 'reject ':<8} {proposal.summary[:70]}")
