"""The `reviewer_groups` section of `manage.py apply`: groups and their Slack channels."""

from __future__ import annotations

from pydantic import Field

from foundation.configfile import StrictItem, register, upsert


class ReviewerGroupSpec(StrictItem):
    name: str = Field(min_length=1, max_length=150)
    slack_channel: str | None = Field(
        default=None,
        pattern=r"^[CG][A-Z0-9]{2,39}$",
        description="the id of the channel proposals are posted to, such as C0123ABCD",
    )


# Before action_types (10), so that a type may name a group this file creates.
@register("reviewer_groups", ReviewerGroupSpec, order=5)
def apply_reviewer_groups(items: list[ReviewerGroupSpec]) -> list[str]:
    from django.contrib.auth.models import Group

    from notify.models import GroupChannel

    report = []
    for spec in items:
        group, created = Group.objects.get_or_create(name=spec.name)
        if spec.slack_channel:
            what = upsert(GroupChannel, {"group": group}, {"slack_channel": spec.slack_channel})
        else:
            what = (
                "updated (slack_channel)"
                if GroupChannel.objects.filter(group=group).delete()[0]
                else "unchanged"
            )
        report.append(f"reviewer group {spec.name}: {'created' if created else what}")
    return report
