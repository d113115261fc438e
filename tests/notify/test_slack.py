"""Slack approvals against a fake Slack Web API on loopback, with signed interaction payloads."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command

from approvals import services
from approvals.models import AuditEvent, Proposal
from notify.models import SlackLink, SlackMessage
from tests.conftest import decide_as, logged_in
from tests.notify.conftest import (
    SUPPORT_CHANNEL,
    button,
    form_body,
    link,
    post_interaction,
    reject_form,
    sign,
)
from tests.notify.fake_slack import FakeSlack

pytestmark = pytest.mark.django_db
Submit = Callable[..., Proposal]


@pytest.fixture
def posted(slack_on: FakeSlack, support_channel: Any, submit: Submit, committed: Any) -> Proposal:
    """A refund waiting for review, posted to support's channel."""
    proposal = committed(submit, metadata={"requested_by": "customer-42"})
    assert len(slack_on.of("chat.postMessage")) == 1
    return proposal


def card_text(params: dict[str, Any]) -> str:
    return json.dumps(params["blocks"], ensure_ascii=False)


def last_card(fake: FakeSlack) -> dict[str, Any]:
    updates = fake.of("chat.update")
    return updates[-1] if updates else fake.of("chat.postMessage")[-1]


def test_a_proposal_waiting_for_review_is_posted_to_its_groups_channel(
    slack_on: FakeSlack, support_channel: Any, submit: Submit, committed: Any, refund_type: Any
) -> None:
    refund_type.redacted_fields = ["currency"]
    refund_type.save()
    proposal = committed(submit, summary="Refund <!channel> *now*", confidence=0.42)
    (message,) = slack_on.of("chat.postMessage")
    assert message["channel"] == SUPPORT_CHANNEL
    blocks = message["blocks"]
    text = card_text(message)
    # The model's summary is plain text (never parsed for mentions or formatting).
    assert {"type": "plain_text", "text": "Refund <!channel> *now*", "emoji": False} in [
        b.get("text") for b in blocks
    ]
    assert "<!channel>" not in message["text"]  # the notification text is escaped
    assert "42% confidence" in text and "refund.issue" in text and "shop" in text
    assert '\\"ORD-1\\"' in text and "EUR" not in text and "1 field withheld" in text
    actions = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [a["action_id"] for a in actions] == ["approve", "reject", "open"]
    assert json.loads(actions[0]["value"]) == {"p": str(proposal.pk), "h": proposal.payload_hash}
    assert actions[2]["url"] == f"https://gatehouse.example/proposals/{proposal.pk}/"
    row = SlackMessage.objects.get(proposal=proposal)
    assert row.channel == SUPPORT_CHANNEL and row.ts and not row.final
    # A second sync (a duplicate task, the reconciler) posts nothing more.
    from notify import services as notify_services

    notify_services.proposal_notify(proposal_id=proposal.pk)
    assert notify_services.notify_reconcile() >= 0
    assert len(slack_on.of("chat.postMessage")) == 1


def test_an_automatically_decided_proposal_is_not_posted(
    slack_on: FakeSlack, support_channel: Any, submit: Submit, committed: Any, make_rule: Any
) -> None:
    make_rule("small", when="payload.amount < 100.0", outcome="approve")
    proposal = committed(submit)
    assert proposal.state == Proposal.State.APPROVED
    assert slack_on.of("chat.postMessage") == []


def test_a_signed_approve_click_approves_as_the_linked_reviewer(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, committed: Any
) -> None:
    link(reviewer, "U0RITA")
    response = committed(post_interaction, button(posted, "approve", "U0RITA"))
    assert response.status_code == 200 and response.content == b""
    posted.refresh_from_db()
    assert posted.state == Proposal.State.APPROVED and posted.decision_reviewer == reviewer
    event = AuditEvent.objects.get(proposal=posted, kind="proposal.approved")
    assert event.actor == "user:rita" and event.data["channel"] == "slack"
    assert (
        AuditEvent.objects.get(proposal=posted, kind="proposal.claimed").data["channel"] == "slack"
    )
    update = last_card(slack_on)
    assert update["ts"] == SlackMessage.objects.get(proposal=posted).ts
    assert "Approved* by rita in Slack" in card_text(update)
    assert "approve" not in [
        a["action_id"] for b in update["blocks"] if b["type"] == "actions" for a in b["elements"]
    ]
    assert SlackMessage.objects.get(proposal=posted).final


def test_reject_opens_a_form_whose_submission_rejects_with_the_reason(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, committed: Any
) -> None:
    link(reviewer, "U0RITA")
    assert committed(post_interaction, button(posted, "reject", "U0RITA")).status_code == 200
    (opened,) = slack_on.of("views.open")
    assert opened["trigger_id"] == "trigger-123"
    assert opened["view"]["callback_id"] == "gatehouse_reject"
    posted.refresh_from_db()
    assert posted.state == Proposal.State.PENDING_REVIEW and posted.live_claim is not None
    assert "being reviewed by rita" in card_text(last_card(slack_on))

    empty = committed(post_interaction, reject_form(posted, "U0RITA", "   "))
    assert empty.status_code == 200
    assert empty.json() == {
        "response_action": "errors",
        "errors": {"reason": "A rejection needs a reason."},
    }
    posted.refresh_from_db()
    assert posted.state == Proposal.State.PENDING_REVIEW

    done = committed(post_interaction, reject_form(posted, "U0RITA", "Order was never paid"))
    assert done.status_code == 200
    posted.refresh_from_db()
    assert posted.state == Proposal.State.REJECTED
    assert posted.decision_reason == "Order was never paid"
    assert (
        AuditEvent.objects.get(proposal=posted, kind="proposal.rejected").data["channel"] == "slack"
    )
    assert "Rejected* by rita in Slack: Order was never paid" in card_text(last_card(slack_on))


def test_closing_the_reject_form_releases_the_claim(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, committed: Any
) -> None:
    link(reviewer, "U0RITA")
    committed(post_interaction, button(posted, "reject", "U0RITA"))
    committed(post_interaction, reject_form(posted, "U0RITA", "", kind="view_closed"))
    posted.refresh_from_db()
    assert posted.state == Proposal.State.PENDING_REVIEW
    assert not hasattr(posted, "claim") or posted.live_claim is None


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param("stale", id="stale"),
        pytest.param("wrong-secret", id="wrongly-signed"),
        pytest.param("tampered", id="body-changed-after-signing"),
        pytest.param({"X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": "v0=00"}, id="junk"),
    ],
)
def test_a_request_not_signed_by_slack_gets_401_and_changes_nothing(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, committed: Any, headers: Any
) -> None:
    link(reviewer, "U0RITA")
    payload = button(posted, "approve", "U0RITA")
    body = form_body(payload)
    if headers == "stale":
        headers = sign(body, timestamp=int(time.time()) - 6 * 60)
    elif headers == "wrong-secret":
        headers = sign(body, secret="not-the-secret")
    elif headers == "tampered":
        headers = sign(form_body(button(posted, "reject", "U0RITA")))
    calls_before = len(slack_on.calls)
    response = committed(post_interaction, payload, headers)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    posted.refresh_from_db()
    assert posted.state == Proposal.State.PENDING_REVIEW
    assert not AuditEvent.objects.filter(proposal=posted, kind="proposal.claimed").exists()
    assert len(slack_on.calls) == calls_before


def test_the_endpoint_is_off_without_slack_settings(posted: Proposal, settings: Any) -> None:
    settings.SLACK_SIGNING_SECRET = ""
    assert post_interaction(button(posted, "approve", "U0RITA")).status_code == 404


def test_a_malformed_signed_payload_is_a_400(posted: Proposal, slack_on: FakeSlack) -> None:
    bad = button(posted, "approve", "U0RITA")
    bad["actions"][0]["value"] = '{"p": "not-a-uuid", "h": "zz"}'
    response = post_interaction(bad)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_an_unlinked_slack_user_is_told_privately_and_nothing_changes(
    posted: Proposal, slack_on: FakeSlack, committed: Any
) -> None:
    slack_on.users["U0STRANGER"] = {"email": "nobody@example.com"}
    assert committed(post_interaction, button(posted, "approve", "U0STRANGER")).status_code == 200
    (told,) = slack_on.of("chat.postEphemeral")
    assert told["user"] == "U0STRANGER" and told["channel"] == SUPPORT_CHANNEL
    assert "not linked" in told["text"]
    posted.refresh_from_db()
    assert posted.state == Proposal.State.PENDING_REVIEW
    assert not SlackLink.objects.exists()


def test_a_slack_user_with_the_reviewers_confirmed_email_is_linked_on_first_click(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, committed: Any
) -> None:
    reviewer.email = "rita@example.com"
    reviewer.save()
    slack_on.users["U0UNCONFIRMED"] = {"email": "rita@example.com", "confirmed": False}
    committed(post_interaction, button(posted, "approve", "U0UNCONFIRMED"))
    posted.refresh_from_db()
    assert posted.state == Proposal.State.PENDING_REVIEW  # an unconfirmed address proves nothing

    slack_on.users["U0RITA"] = {"email": "Rita@Example.com"}
    committed(post_interaction, button(posted, "approve", "U0RITA"))
    posted.refresh_from_db()
    assert posted.state == Proposal.State.APPROVED and posted.decision_reviewer == reviewer
    assert SlackLink.objects.get(user=reviewer).method == "email"


def _refused(fake: FakeSlack, proposal: Proposal, expected: str) -> None:
    told = fake.of("chat.postEphemeral")
    assert told and expected in told[-1]["text"], told
    assert "Nothing was changed" in told[-1]["text"] or "nothing was changed" in told[-1]["text"]
    proposal.refresh_from_db()
    assert proposal.state == Proposal.State.PENDING_REVIEW


def test_a_reviewer_of_another_team_cannot_decide_from_slack(
    posted: Proposal, slack_on: FakeSlack, other_team_reviewer: User, committed: Any
) -> None:
    link(other_team_reviewer, "U0OTTO")
    committed(post_interaction, button(posted, "approve", "U0OTTO"))
    _refused(slack_on, posted, "You may not review this proposal")
    committed(post_interaction, button(posted, "reject", "U0OTTO"))
    assert slack_on.of("views.open") == []


def test_the_reviewer_who_raised_it_cannot_decide_it_from_slack(
    slack_on: FakeSlack, support_channel: Any, submit: Submit, reviewer: User, committed: Any
) -> None:
    proposal = committed(submit, metadata={"requested_by": "rita"})
    link(reviewer, "U0RITA")
    committed(post_interaction, button(proposal, "approve", "U0RITA"))
    _refused(slack_on, proposal, "You raised this proposal")


def test_a_claim_held_on_the_web_refuses_a_slack_click(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, second_reviewer: User, committed: Any
) -> None:
    committed(services.claim_acquire, proposal_id=posted.pk, reviewer=second_reviewer)
    link(reviewer, "U0RITA")
    committed(post_interaction, button(posted, "approve", "U0RITA"))
    _refused(slack_on, posted, "sam is reviewing this proposal now")


def test_a_click_on_an_outdated_card_is_refused(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, committed: Any
) -> None:
    link(reviewer, "U0RITA")
    committed(post_interaction, button(posted, "approve", "U0RITA", payload_hash="0" * 64))
    _refused(slack_on, posted, "The payload changed since you opened it")
    posted.refresh_from_db()
    assert posted.live_claim is None  # the click's claim was given back


def test_four_eyes_counts_distinct_reviewers_across_slack_and_the_web(
    posted: Proposal,
    slack_on: FakeSlack,
    reviewer: User,
    second_reviewer: User,
    refund_type: Any,
    committed: Any,
) -> None:
    refund_type.approvals_required = 2
    refund_type.save()
    link(reviewer, "U0RITA")
    committed(post_interaction, button(posted, "approve", "U0RITA"))
    assert "a second reviewer must approve" in slack_on.of("chat.postEphemeral")[-1]["text"]
    assert "1 of 2 approvals" in card_text(last_card(slack_on))
    committed(post_interaction, button(posted, "approve", "U0RITA"))
    _refused(slack_on, posted, "You have already approved this proposal")
    committed(decide_as, second_reviewer, posted)
    posted.refresh_from_db()
    assert posted.state == Proposal.State.APPROVED
    assert "Approved* by sam on the web" in card_text(last_card(slack_on))


def test_approving_a_card_that_withholds_fields_is_refused(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, refund_type: Any, committed: Any
) -> None:
    refund_type.redacted_fields = ["amount"]
    refund_type.save()
    link(reviewer, "U0RITA")
    committed(post_interaction, button(posted, "approve", "U0RITA"))
    _refused(slack_on, posted, "approve it on its page")


def test_a_decision_on_the_web_updates_the_slack_message(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, committed: Any
) -> None:
    client = logged_in(reviewer)
    committed(client.post, f"/proposals/{posted.pk}/claim/")
    assert "being reviewed by rita" in card_text(last_card(slack_on))
    response = committed(
        client.post,
        f"/proposals/{posted.pk}/decide/",
        {"verdict": "reject", "comment": "Duplicate", "payload_hash": posted.payload_hash},
    )
    assert response.status_code == 302
    update = last_card(slack_on)
    assert update["channel"] == SUPPORT_CHANNEL
    assert update["ts"] == SlackMessage.objects.get(proposal=posted).ts
    assert "Rejected* by rita on the web: Duplicate" in card_text(update)


def test_expiry_updates_the_slack_message(
    posted: Proposal, slack_on: FakeSlack, committed: Any
) -> None:
    from approvals import execution

    assert committed(execution.proposals_expire, now=posted.expires_at) == 1
    assert "Expired" in card_text(last_card(slack_on))
    updates = len(slack_on.of("chat.update"))
    from notify import services as notify_services

    notify_services.proposal_notify(proposal_id=posted.pk)  # final: never touched again
    assert len(slack_on.of("chat.update")) == updates


def test_link_slack_by_id_and_by_email(slack_on: FakeSlack, reviewer: User) -> None:
    call_command("link_slack", "rita", "U0RITA1")
    assert SlackLink.objects.get(user=reviewer).slack_user_id == "U0RITA1"
    reviewer.email = "rita@example.com"
    reviewer.save()
    slack_on.users["U0RITA2"] = {"email": "rita@example.com"}
    call_command("link_slack", "rita")
    assert slack_on.of("users.lookupByEmail") == [{"email": "rita@example.com"}]
    link_row = SlackLink.objects.get(user=reviewer)
    assert (link_row.slack_user_id, link_row.method) == ("U0RITA2", "email")
    assert AuditEvent.objects.filter(kind="reviewer.slack_linked").count() == 2
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not a Slack user id"):
        call_command("link_slack", "rita", "<script>")


def test_apply_sets_a_groups_slack_channel(db: None) -> None:
    from foundation import configfile
    from notify.models import GroupChannel

    report = configfile.apply(
        "reviewer_groups:\n  - name: support\n    slack_channel: C0123ABCD\n  - name: leads\n"
    )
    assert report == ["reviewer group support: created", "reviewer group leads: created"]
    assert GroupChannel.objects.get(group__name="support").slack_channel == "C0123ABCD"
    assert configfile.apply("reviewer_groups:\n  - name: support\n    slack_channel: C0999\n") == [
        "reviewer group support: updated (slack_channel)"
    ]
    with pytest.raises(
        configfile.ConfigFileError, match=r"line 3: reviewer_groups\[0\]\.slack_channel"
    ):
        configfile.parse("reviewer_groups:\n  - name: x\n    slack_channel: '#general'\n")
    assert Group.objects.filter(name="leads").exists()


def test_slack_is_answered_at_once_and_a_worker_does_the_work(
    posted: Proposal, slack_on: FakeSlack, reviewer: User, committed: Any, settings: Any
) -> None:
    import base64

    import redis

    from config.celery import app
    from notify import tasks

    link(reviewer, "U0RITA")
    broker = redis.Redis.from_url(settings.REDIS_URL)
    broker.delete("celery")
    app.conf.task_always_eager = False  # the eager_tasks fixture restores it
    started = time.monotonic()
    response = committed(post_interaction, button(posted, "approve", "U0RITA"))
    assert response.status_code == 200 and time.monotonic() - started < 3
    posted.refresh_from_db()
    assert posted.state == Proposal.State.PENDING_REVIEW  # nothing decided on the request

    (raw,) = cast(list[bytes], broker.lrange("celery", 0, -1))
    message = json.loads(raw)
    assert message["headers"]["task"] == "notify.handle_interaction"
    args, _, _ = json.loads(base64.b64decode(message["body"]))
    broker.delete("celery")
    app.conf.task_always_eager = True
    assert committed(tasks.handle_interaction, *args) == "approved"
    posted.refresh_from_db()
    assert posted.state == Proposal.State.APPROVED


def test_what_a_slack_outage_left_behind_the_reconciler_catches_up(
    slack_on: FakeSlack, support_channel: Any, submit: Submit, reviewer: User, committed: Any
) -> None:
    from notify import services as notify_services

    slack_on.errors["chat.postMessage"] = "service_unavailable"
    proposal = committed(submit)
    assert not SlackMessage.objects.filter(proposal=proposal).exists()
    del slack_on.errors["chat.postMessage"]
    assert notify_services.notify_reconcile() == 1
    assert SlackMessage.objects.get(proposal=proposal).ts

    # A decision on the web goes through while Slack refuses the update; the card follows later.
    slack_on.errors["chat.update"] = "internal_error"
    committed(decide_as, reviewer, proposal, "reject", "Not eligible")
    proposal.refresh_from_db()
    assert proposal.state == Proposal.State.REJECTED
    assert not SlackMessage.objects.get(proposal=proposal).final
    del slack_on.errors["chat.update"]
    assert notify_services.notify_reconcile() == 1
    assert "Rejected* by rita on the web: Not eligible" in card_text(last_card(slack_on))
    assert SlackMessage.objects.get(proposal=proposal).final
    assert notify_services.notify_reconcile() == 0
