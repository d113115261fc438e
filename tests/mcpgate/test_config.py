"""Declaring upstreams (apply and the admin) and what a tool's annotations make of it."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from approvals import services as approvals
from approvals.models import ActionType, Rule, Service
from foundation import configfile
from mcpgate import services
from mcpgate.models import Tool, Upstream

DELETE = {
    "name": "delete_file",
    "inputSchema": {
        "type": "object",
        "required": ["path"],
        "properties": {"path": {"type": "string"}},
    },
    "annotations": {"destructiveHint": True},
}
RENAME = {"name": "rename_file", "inputSchema": {"type": "object"}}
LIST = {
    "name": "list_files",
    "inputSchema": {"type": "object"},
    "annotations": {"readOnlyHint": True},
}

YAML = """
mcp_upstreams:
  - name: files
    url: https://files.example.com/mcp
    headers_env: {Authorization: FILES_MCP_TOKEN}
    services: [coding-agent]
    tools:
      delete_file: {irreversible: true, risk: high}
"""


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, (True, "high", False)),  # no annotations: destructive
        ({"destructiveHint": True}, (True, "high", False)),
        ({"readOnlyHint": True}, (False, "low", True)),
        ({"readOnlyHint": True, "destructiveHint": True}, (False, "low", True)),
        ({"destructiveHint": False}, (False, "medium", False)),
        ({"destructiveHint": False, "idempotentHint": True}, (False, "low", False)),
        ({"readOnlyHint": "yes"}, (True, "high", False)),  # only a real true counts
    ],
)
def test_annotations_decide_irreversibility_risk_and_pass_through(
    annotations: dict[str, Any], expected: tuple[bool, str, bool]
) -> None:
    policy = services.tool_policy(annotations)
    assert (policy.irreversible, policy.risk, policy.read_only) == expected


def test_an_override_beats_the_annotations() -> None:
    policy = services.tool_policy({"readOnlyHint": True}, {"read_only": False, "risk": "high"})
    assert (policy.irreversible, policy.risk, policy.read_only) == (False, "high", False)


@pytest.fixture
def agent(db: None) -> Service:
    return approvals.service_create(name="coding-agent")[0]


def test_apply_creates_the_upstream_and_applying_again_changes_nothing(agent: Service) -> None:
    first = configfile.apply(YAML, source="gw.yaml")
    again = configfile.apply(YAML, source="gw.yaml")

    assert first == ["mcp upstream files: created"]
    assert again == ["mcp upstream files: unchanged"]
    upstream = Upstream.objects.get(name="files")
    assert upstream.headers_env == {"Authorization": "FILES_MCP_TOKEN"}
    assert list(upstream.services.all()) == [agent]
    assert upstream.tool_overrides == {"delete_file": {"irreversible": True, "risk": "high"}}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "url: ftp://files/mcp",
            "line 8: mcp_upstreams[0].url: Value error, an MCP upstream needs",
        ),
        ("name: 'files/x'", "mcp_upstreams[0].name: String should match pattern"),
        ("headers_env: {Authorization: 'X; rm'}", "is not an environment variable name"),
        ("tools: {delete_file: {risk: extreme}}", "mcp_upstreams[0].tools.delete_file.risk"),
        ("services: [nobody]", "unknown services: nobody"),
    ],
)
def test_a_bad_upstream_is_refused_naming_the_field(agent: Service, bad: str, message: str) -> None:
    key = bad.split(":")[0]
    lines = [line for line in YAML.splitlines() if not line.strip().startswith(key)]
    if key == "tools":
        lines = [line for line in lines if "delete_file" not in line]
    text = "\n".join([*lines, f"    {bad}"])
    with pytest.raises(configfile.ConfigFileError) as refused:
        configfile.apply(text, source="gw.yaml")
    assert message in str(refused.value)
    assert not Upstream.objects.exists()


def test_tools_are_created_on_first_sight_and_then_kept_as_tuned(agent: Service) -> None:
    configfile.apply(YAML, source="gw.yaml")
    upstream = Upstream.objects.get(name="files")
    bad_schema = {"name": "broken", "inputSchema": {"type": "object", "required": "path"}}

    services.tools_record(upstream=upstream, tools=[DELETE, RENAME, LIST, bad_schema])

    assert sorted(Tool.objects.values_list("name", flat=True)) == [
        "delete_file",
        "list_files",
        "rename_file",
    ]  # a schema Gatehouse cannot check offers nothing to call
    delete = ActionType.objects.get(key="mcp.files.delete_file")
    assert (delete.irreversible, delete.risk, delete.payload_schema) == (
        True,
        "high",
        DELETE["inputSchema"],
    )
    assert list(delete.services.all()) == [agent]
    assert Rule.objects.get(action_type__key="mcp.files.list_files").outcome == "approve"
    assert not Rule.objects.filter(action_type=delete).exists()

    delete.risk = "medium"  # an admin tunes it
    delete.save()
    services.tools_record(upstream=upstream, tools=[{**DELETE, "description": "Deletes."}])

    delete.refresh_from_db()
    assert delete.risk == "medium"
    assert Tool.objects.get(name="delete_file").description == "Deletes."


def test_overrides_and_services_in_a_later_apply_reach_the_tools_seen_before(
    agent: Service,
) -> None:
    configfile.apply(YAML, source="gw.yaml")
    services.tools_record(upstream=Upstream.objects.get(name="files"), tools=[DELETE, RENAME])
    newcomer = approvals.service_create(name="new-agent")[0]
    later = YAML.replace("services: [coding-agent]", "services: [coding-agent, new-agent]")
    later = later.replace(
        "delete_file: {irreversible: true, risk: high}",
        "rename_file: {read_only: true}",
    )

    report = configfile.apply(later, source="gw.yaml")

    assert "mcp.files.rename_file (read_only=True)" in report[0]
    assert Tool.objects.get(name="rename_file").read_only
    assert Rule.objects.filter(action_type__key="mcp.files.rename_file", enabled=True).exists()
    rename = ActionType.objects.get(key="mcp.files.rename_file")
    assert set(rename.services.all()) == {agent, newcomer}


def test_the_admin_checks_and_saves_an_upstream_like_apply(
    agent: Service, admin_client_logged_in: Client
) -> None:
    form = {
        "name": "files",
        "url": "https://files.example.com/mcp",
        "headers_env": '{"Authorization": "NOT A VARIABLE"}',
        "services": [agent.pk],
        "tool_overrides": '{"delete_file": {"risk": "extreme"}}',
        "enabled": "on",
    }
    refused = admin_client_logged_in.post("/admin/mcpgate/upstream/add/", form)
    assert refused.status_code == 200
    assert "is not an environment variable name" in refused.content.decode()
    assert not Upstream.objects.exists()

    form.update(headers_env='{"Authorization": "FILES_MCP_TOKEN"}', tool_overrides="{}")
    saved = admin_client_logged_in.post("/admin/mcpgate/upstream/add/", form)

    assert saved.status_code == 302
    assert list(Upstream.objects.get(name="files").services.all()) == [agent]
