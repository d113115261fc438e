from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from foundation.admin import ReadOnlyAdmin
from notify import services
from notify.models import EmailPreference, GroupChannel, Notice, SlackLink, SlackMessage


class GroupChannelInline(admin.StackedInline):
    model = GroupChannel
    extra = 0
    max_num = 1
    verbose_name = "Slack channel"


# The reviewer group's page gains its Slack channel.
admin.site.unregister(Group)


@admin.register(Group)
class ReviewerGroupAdmin(GroupAdmin):
    inlines = [GroupChannelInline]


class SlackLinkForm(forms.ModelForm):
    class Meta:
        model = SlackLink
        fields = ["user", "slack_user_id"]

    def clean_slack_user_id(self) -> str:
        value = str(self.cleaned_data["slack_user_id"]).strip()
        if not services.SLACK_USER_ID.fullmatch(value):
            raise ValidationError("A Slack user id such as U0123ABCD.")
        return value


@admin.register(SlackLink)
class SlackLinkAdmin(admin.ModelAdmin):
    form = SlackLinkForm
    list_display = ["user", "slack_user_id", "method", "created_at"]
    search_fields = ["user__username", "slack_user_id"]
    raw_id_fields = ["user"]

    def save_model(self, request: HttpRequest, obj: SlackLink, form: Any, change: bool) -> None:
        # Through the service, so that the link is in the audit trail.
        linked = services.slack_link(user=obj.user, slack_user_id=obj.slack_user_id)
        obj.pk = linked.pk


@admin.register(EmailPreference)
class EmailPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "mode", "digest_minutes", "last_digest_at"]
    list_filter = ["mode"]
    raw_id_fields = ["user"]


@admin.register(SlackMessage)
class SlackMessageAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "channel", "ts", "final", "updated_at"]


@admin.register(Notice)
class NoticeAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "kind", "recipient", "created_at"]
    list_filter = ["kind"]
