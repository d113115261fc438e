from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from config.celery import app
from notify.models import GroupChannel, SlackLink
from tests.notify.fake_slack import TOKEN, FakeSlack

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SUPPORT_CHANNEL = "C0SUPPORT"
LEADS_CHANNEL = "C0LEADS"


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def slack_on(settings: Any, fake_slack: FakeSlack) -> FakeSlack:
    settings.SLACK_BOT_TOKEN = TOKEN
    settings.SLACK_SIGNING_SECRET = SIGNING_SECRET
    settings.SLACK_API_URL = fake_slack.url
    settings.SITE_URL = "https://gatehouse.example"
    return fake_slack


@pytest.fixture(autouse=True)
def eager_tasks() -> Iterator[None]:
    """Tasks run where they are enqueued, so a test sees their effect (the broker is Redis)."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def forget_rules() -> Iterator[None]:
    """A rule a test saved must not outlive its rolled-back transaction in the rules cache."""
    from approvals.rules import invalidate

    yield
    invalidate()


@pytest.fixture
def support_channel(refund_type: Any) -> GroupChannel:
    return GroupChannel.objects.create(
        group=Group.objects.get(name="support"), slack_channel=SUPPORT_CHANNEL
    )


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Run a function and then what it left for after commit (broadcasts, the notify hook)."""

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run


def link(user: User, slack_user_id: str) -> User:
    SlackLink.objects.create(user=user, slack_user_id=slack_user_id)
    return user


def sign(
    body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Slack's v0 signature, computed here from the spec (not with slack_sdk)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def form_body(payload: dict[str, Any]) -> str:
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def post_interaction(payload: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    body = form_body(payload)
    return Client().post(
        "/slack/interactions",
        body,
        content_type="application/x-www-form-urlencoded",
        headers=sign(body) if headers is None else headers,
    )


def button(
    proposal: Any, action_id: str, slack_user_id: str, *, payload_hash: str | None = None
) -> dict[str, Any]:
    """A block_actions payload as Slack sends it when a card's button is pressed."""
    value = json.dumps({"p": str(proposal.pk), "h": payload_hash or proposal.payload_hash})
    return {
        "type": "block_actions",
        "user": {"id": slack_user_id, "username": "someone"},
        "trigger_id": "trigger-123",
        "channel": {"id": SUPPORT_CHANNEL},
        "container": {"type": "message", "channel_id": SUPPORT_CHANNEL},
        "actions": [{"action_id": action_id, "value": value, "type": "button"}],
    }


def reject_form(
    proposal: Any, slack_user_id: str, reason: str, *, kind: str = "view_submission"
) -> dict[str, Any]:
    metadata = json.dumps({"p": str(proposal.pk), "h": proposal.payload_hash, "c": SUPPORT_CHANNEL})
    return {
        "type": kind,
        "user": {"id": slack_user_id},
        "view": {
            "callback_id": "gatehouse_reject",
            "private_metadata": metadata,
            "state": {
                "values": {
                    "reason": {"reason_input": {"type": "plain_text_input", "value": reason}}
                }
            },
        },
    }
