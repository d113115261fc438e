from __future__ import annotations

from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "notify"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from approvals.events import proposal_committed
        from notify import configspec, tasks  # noqa: F401 - registers the reviewer_groups section

        proposal_committed.connect(tasks.on_proposal_committed, dispatch_uid="notify")
