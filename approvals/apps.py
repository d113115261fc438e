from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from approvals import caches, configspec, tasks  # noqa: F401 - configspec registers its sections; tasks registers the outbox names
        from approvals.models import ActionType, ApiKey, Service

        def clear(**kwargs: Any) -> None:
            caches.clear_all()

        # Keep the per-process hot-path cache honest about edits made in this process.
        # weak=False: `clear` is a local function, nothing else keeps it alive.
        for model in (ActionType, ApiKey, Service):
            name = model.__name__
            post_save.connect(
                clear, sender=model, weak=False, dispatch_uid=f"localcache-save-{name}"
            )
            post_delete.connect(
                clear, sender=model, weak=False, dispatch_uid=f"localcache-del-{name}"
            )
        m2m_changed.connect(
            clear, sender=Service.action_types.through, weak=False, dispatch_uid="localcache-m2m"
        )
        _follow_reviewer_access()


def _follow_reviewer_access() -> None:
    """Open queue sockets follow changes to who may see which action type (events.py): any
    change of a user's groups, of the user (deactivated, made superuser) or of an action type's
    reviewer group, however made (admin, commands, services), tells the sockets concerned."""
    from django.contrib.auth.models import Group, User
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from approvals import events
    from approvals.models import ActionType

    def memberships(instance: Any, action: str, reverse: bool, pk_set: Any, **kw: Any) -> None:
        if action not in ("post_add", "post_remove", "post_clear"):
            return
        if not reverse:
            events.reviewer_access_changed([instance.pk])
        else:  # group.user_set: the users named, or everyone when cleared
            events.reviewer_access_changed(sorted(pk_set) if pk_set else None)

    def user_saved(instance: User, update_fields: Any = None, **kw: Any) -> None:
        if update_fields is not None and set(update_fields) <= {"last_login", "password"}:
            return  # every sign-in saves last_login; a password change ends the session anyway
        events.reviewer_access_changed([instance.pk])

    def everyone(**kw: Any) -> None:
        events.reviewer_access_changed(None)

    # weak=False: the receivers are local functions, nothing else keeps them alive.
    m2m_changed.connect(
        memberships, sender=User.groups.through, weak=False, dispatch_uid="access-m2m"
    )
    post_save.connect(user_saved, sender=User, weak=False, dispatch_uid="access-user")
    for model in (ActionType, Group):
        name = model.__name__
        post_save.connect(everyone, sender=model, weak=False, dispatch_uid=f"access-save-{name}")
        post_delete.connect(everyone, sender=model, weak=False, dispatch_uid=f"access-del-{name}")
