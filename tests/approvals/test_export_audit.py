"""manage.py export_audit: proposals and the audit trail as JSON lines, for archiving."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.utils import timezone

from approvals.models import AuditEvent, Proposal

pytestmark = pytest.mark.django_db


def export(*args: str) -> list[dict[str, Any]]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_audit", *args, stdout=out, stderr=err)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_it_writes_the_proposals_and_audit_events_since_a_date(
    submit: Callable[..., Proposal],
) -> None:
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=10)):
        submit(summary="old one")
    recent = submit(summary="recent one")
    since = (now - timedelta(days=1)).date().isoformat()

    rows = export("--since", since)
    proposals = [r for r in rows if r["record"] == "proposal"]
    events = [r for r in rows if r["record"] == "audit_event"]
    assert [p["id"] for p in proposals] == [str(recent.pk)]
    assert proposals[0]["summary"] == "recent one"
    assert proposals[0]["payload"] == recent.payload
    assert proposals[0]["service_id"] == recent.service_id
    assert proposals[0]["state"] == "pending_review"
    expected = AuditEvent.objects.filter(created_at__gte=now - timedelta(days=1)).count()
    assert len(events) == expected >= 2
    assert {e["kind"] for e in events} >= {"proposal.received", "proposal.routed"}
    # Nothing was purged by exporting.
    assert Proposal.objects.count() == 2


def test_it_writes_a_file_and_refuses_a_bad_date(
    submit: Callable[..., Proposal], tmp_path: Path
) -> None:
    submit()
    target = tmp_path / "audit.jsonl"
    call_command(
        "export_audit", "--since", "2000-01-01", "--output", str(target), stderr=io.StringIO()
    )
    lines = target.read_text().splitlines()
    assert sum(json.loads(line)["record"] == "proposal" for line in lines) == 1
    with pytest.raises(CommandError, match="--since must be a date"):
        call_command("export_audit", "--since", "last tuesday")
