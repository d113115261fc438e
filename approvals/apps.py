from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from approvals import localcache
        from approvals.models import ActionType, ApiKey, Service

        def clear(**kwargs: Any) -> None:
            localcache.clear_all()

        # Keep the per-process hot-path cache honest about edits made in this process.
        for model in (ActionType, ApiKey, Service):
            post_save.connect(clear, sender=model, dispatch_uid=f"localcache-save-{model.__name__}")
            post_delete.connect(
                clear, sender=model, dispatch_uid=f"localcache-del-{model.__name__}"
            )
        m2m_changed.connect(
            clear, sender=Service.action_types.through, dispatch_uid="localcache-m2m"
        )
