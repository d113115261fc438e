from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from approvals.models import ActionType, ApiKey, Service
from tests.conftest import ServiceClient

GOOD = """\
action_types:
  - key: refund.issue
    title: Issue a refund
    irreversible: false
    risk: medium            # low | medium | high
    approvals_required: 1   # 2 = four-eyes
    review_ttl: 24h         # then the proposal expires
    executor: {kind: webhook, url: "http://127.0.0.1:9000/execute"}
    payload_schema:          # JSON Schema
      type: object
      required: [order_id, amount]
      properties: {order_id: {type: string}, amount: {type: number, minimum: 0}}
  - key: account.close
    title: Close an account
    irreversible: true
    risk: high
    approvals_required: 2
    review_ttl: 3d
    executor: {kind: none}
"""


def apply(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gatehouse.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply", str(path), stdout=out)
    return out.getvalue()


def test_apply_creates_action_types(db: None, tmp_path: Path) -> None:
    out = apply(tmp_path, GOOD)
    assert "action type refund.issue: created" in out
    refund = ActionType.objects.get(key="refund.issue")
    assert refund.executor_kind == "webhook"
    assert refund.executor_target == "http://127.0.0.1:9000/execute"
    assert refund.review_ttl.total_seconds() == 86400
    assert refund.payload_schema["required"] == ["order_id", "amount"]
    close = ActionType.objects.get(key="account.close")
    assert (close.irreversible, close.approvals_required, close.risk) == (True, 2, "high")
    assert close.review_ttl.days == 3


def test_applying_twice_changes_nothing(db: None, tmp_path: Path) -> None:
    apply(tmp_path, GOOD)
    stamp = ActionType.objects.get(key="refund.issue").updated_at
    out = apply(tmp_path, GOOD)
    assert "action type refund.issue: unchanged" in out
    assert "action type account.close: unchanged" in out
    assert ActionType.objects.get(key="refund.issue").updated_at == stamp


def test_apply_updates_what_changed(db: None, tmp_path: Path) -> None:
    apply(tmp_path, GOOD)
    out = apply(tmp_path, GOOD.replace("risk: medium ", "risk: high "))
    assert "action type refund.issue: updated (risk)" in out
    assert ActionType.objects.get(key="refund.issue").risk == "high"


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (GOOD.replace("risk: high", "risk: extreme"), "line 16: action_types[1].risk"),
        (GOOD.replace("review_ttl: 3d", "review_ttl: soon"), "line 18: action_types[1].review_ttl"),
        (
            GOOD.replace("approvals_required: 2", "approvals_required: 3"),
            "line 17: action_types[1].approvals_required",
        ),
        (
            GOOD.replace("type: number, minimum: 0", "type: numeric"),
            "line 9: action_types[0].payload_schema: Value error, invalid JSON Schema at properties/amount/type",
        ),
        (
            GOOD.replace("    title: Close an account\n", ""),
            "line 13: action_types[1].title: Field required",
        ),
        (
            GOOD.replace("irreversible: true", "irreversable: true"),
            "line 15: action_types[1].irreversable: Extra inputs are not permitted",
        ),
        (
            GOOD.replace('url: "http://127.0.0.1:9000/execute"', "url: ftp://x"),
            "line 8: action_types[0].executor",
        ),
        (GOOD + "rulez: []\n", "line 20: rulez: unknown section"),
        (
            GOOD.replace("  - key: account.close", "  - key: account.close\n  bad: [indent"),
            "not valid YAML",
        ),
    ],
)
def test_a_bad_file_is_refused_whole_naming_line_and_field(
    db: None, tmp_path: Path, broken: str, expected: str
) -> None:
    with pytest.raises(CommandError) as error:
        apply(tmp_path, broken)
    assert expected in str(error.value)
    assert "nothing was changed" in str(error.value)
    assert ActionType.objects.count() == 0


def test_create_service_prints_its_key_and_secret_once_as_json(db: None, tmp_path: Path) -> None:
    apply(tmp_path, GOOD)
    out = StringIO()
    call_command("create_service", "shop", "--action-types", "refund.issue", "--json", stdout=out)
    printed = json.loads(out.getvalue())
    assert printed["name"] == "shop"
    assert printed["api_key"].startswith("gh_")
    assert printed["webhook_secret"].startswith("whsec_")
    service = Service.objects.get(name="shop")
    key = ApiKey.objects.get(service=service)
    assert printed["api_key"].split("_")[2] not in key.secret_hash
    assert key.secret_hash == ApiKey.hash_secret(printed["api_key"].split("_", 2)[2])
    client = ServiceClient(service, printed["api_key"])
    assert [t["key"] for t in client.get("/api/v1/action-types").json()] == ["refund.issue"]


def test_create_service_refuses_unknown_action_types(db: None) -> None:
    with pytest.raises(CommandError, match="Unknown action types: nope"):
        call_command("create_service", "shop", "--action-types", "nope", stdout=StringIO())
    assert not Service.objects.exists()


def test_revoke_key_locks_the_service_out(shop: ServiceClient) -> None:
    prefix = shop.key.split("_")[1]
    out = StringIO()
    call_command("revoke_key", prefix, stdout=out)
    assert "revoked" in out.getvalue()
    assert shop.get("/api/v1/proposals").status_code == 401
    with pytest.raises(CommandError, match="No API key"):
        call_command("revoke_key", "ffffffff", stdout=StringIO())
