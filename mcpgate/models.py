"""The MCP gateway's records: the upstream servers, the tools seen on them, and each forward."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone

from approvals.models import ActionType, Proposal, Service

# MCP tool and upstream names: what a URL path segment and an action type key can carry.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"


class Upstream(models.Model):
    """An MCP server Gatehouse stands in front of, at /mcp/gateway/<name>."""

    name = models.CharField(
        max_length=64, unique=True, help_text="Letters, digits, _ . - (the URL path segment)"
    )
    url = models.URLField(max_length=500, help_text="The upstream's streamable HTTP endpoint")
    headers_env = models.JSONField(
        default=dict,
        blank=True,
        help_text="Headers sent upstream, each read from an environment variable: "
        '{"Authorization": "FILES_MCP_TOKEN"}. Secrets never enter the database.',
    )
    services = models.ManyToManyField(
        Service, blank=True, related_name="mcp_upstreams", help_text="Who may use this gateway"
    )
    tool_overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per tool: {"delete_file": {"irreversible": true, "risk": "high"}}; '
        "keys irreversible, risk, read_only. Applied when a tool is first seen and on apply.",
    )
    reviewer_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Given to the action types of tools seen from now on",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP upstream"

    def __str__(self) -> str:
        return self.name


class Tool(models.Model):
    """A tool an upstream offered, and the action type Gatehouse keeps for it."""

    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=128)
    action_type = models.OneToOneField(
        ActionType, on_delete=models.PROTECT, related_name="mcp_tool"
    )
    description = models.TextField(blank=True)
    annotations = models.JSONField(default=dict, blank=True, help_text="As the upstream sent them")
    read_only = models.BooleanField(
        default=False, help_text="Passed through (recorded, approved by its rule) when true"
    )
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["upstream", "name"]
        constraints = [
            models.UniqueConstraint(fields=["upstream", "name"], name="mcp_tool_unique_name")
        ]
        verbose_name = "MCP tool"

    def __str__(self) -> str:
        return f"{self.upstream.name}.{self.name}"


class Call(models.Model):
    """The forward of one approved tool call to its upstream: at most one per proposal.

    Created when a gateway request wins the approved → executing compare-and-set, so its
    existence means the call was (being) sent; finished with the upstream's result or error.
    """

    class Status(models.TextChoices):
        FORWARDING = "forwarding"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    proposal = models.OneToOneField(
        Proposal, on_delete=models.PROTECT, primary_key=True, related_name="mcp_call"
    )
    upstream = models.ForeignKey(Upstream, on_delete=models.PROTECT, related_name="calls")
    tool = models.CharField(max_length=128)
    arguments = models.JSONField(help_text="What was sent: the approved (possibly edited) payload")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.FORWARDING)
    result = models.JSONField(null=True, blank=True, help_text="The upstream's CallToolResult")
    is_error = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "MCP call"

    def __str__(self) -> str:
        return f"{self.upstream_id}.{self.tool} for {self.proposal_id} ({self.status})"
