"""Action types, the catalogue of what services may propose: saved and audited here."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from approvals.models import ActionType, AuditEvent


@transaction.atomic
def action_type_save(*, action_type: ActionType, changed: Iterable[str], actor: str) -> bool:
    """Create or update an action type (its form validated it) and audit it, with the fields
    that changed. Returns whether it was created. The per-process cache follows the save
    (approvals/apps.py) and other processes within HOT_PATH_CACHE_SECONDS."""
    created = action_type.pk is None
    action_type.save()
    AuditEvent.objects.create(
        kind="action_type.created" if created else "action_type.updated",
        actor=actor,
        data={"action_type": action_type.key, "changed": sorted(changed)},
    )
    return created
