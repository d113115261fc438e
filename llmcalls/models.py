from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from foundation import ids


class Provider(models.Model):
    """An OpenAI-compatible endpoint. The key itself stays in the environment, never here."""

    name = models.SlugField(max_length=100, unique=True)
    base_url = models.URLField(max_length=500, help_text="e.g. https://api.openai.com/v1")
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the API key (blank: no key)",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Route(models.Model):
    """What a feature calls: an ordered list of provider/model targets and the rules around it."""

    class OverBudget(models.TextChoices):
        REFUSE = "refuse", "refuse with an error"
        NEXT_MODEL = "next-model", "continue on the next (cheaper) model"

    feature = models.CharField(max_length=200, unique=True)
    deadline = models.DurationField(
        default=timedelta(seconds=30), help_text="Total time for all attempts and fallbacks"
    )
    attempt_timeout = models.DurationField(
        null=True,
        blank=True,
        help_text="Most one attempt may take (for a stream: until its first token, and any "
        "pause between chunks); a hung model is then retried or left for the next one. "
        "Blank: each attempt may use what is left of the deadline",
    )
    cache_ttl = models.DurationField(
        null=True, blank=True, help_text="Exact cache lifetime; blank: no cache"
    )
    daily_budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Cost cap per UTC day; blank: no cap",
    )
    over_budget = models.CharField(
        max_length=20, choices=OverBudget.choices, default=OverBudget.REFUSE
    )
    params = models.JSONField(
        default=dict, blank=True, help_text='Request parameters, e.g. {"temperature": 0}'
    )
    semantic_cache = models.JSONField(
        null=True,
        blank=True,
        help_text='Semantic cache (docs/llmcalls.md), e.g. {"embedding_route": "embeddings", '
        '"threshold": 0.95, "ttl": "7d", "serve": "approved_only"}; blank: none',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["feature"]

    def __str__(self) -> str:
        return self.feature


class RouteTarget(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="targets")
    position = models.PositiveSmallIntegerField(default=0)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="targets")
    model = models.CharField(max_length=200)

    class Meta:
        ordering = ["route", "position", "id"]

    def __str__(self) -> str:
        return f"{self.provider.name}/{self.model}"


class FeatureGrant(models.Model):
    """A service may call this feature through the proxy (/llm/v1), and no feature without one.

    Its calls are shown to the reviewers of `action_types` — those of them the service may
    propose; blank: every action type the service may propose (llmcalls.selectors).
    """

    service = models.ForeignKey(
        "approvals.Service", on_delete=models.CASCADE, related_name="llm_feature_grants"
    )
    feature = models.CharField(
        max_length=200, help_text="Sent as X-Gatehouse-Feature (default: the service's name)"
    )
    action_types = models.ManyToManyField(
        "approvals.ActionType",
        blank=True,
        related_name="+",
        help_text="Whose reviewers see these calls (only types the service may propose count); "
        "blank: the reviewers of every type the service may propose",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["service", "feature"]
        constraints = [
            models.UniqueConstraint(fields=["service", "feature"], name="featuregrant_unique")
        ]

    def __str__(self) -> str:
        return f"{self.service} → {self.feature}"


class ModelPrice(models.Model):
    """USD per million tokens, valid from a date. Blank provider: the price for any provider."""

    model = models.CharField(max_length=200)
    provider = models.CharField(
        max_length=100, blank=True, help_text="Provider name; blank applies to every provider"
    )
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_mtok = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Blank: cached input tokens cost the full input price",
    )
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    effective_from = models.DateField(default=timezone.localdate)
    source = models.CharField(max_length=300, blank=True, help_text="Where the price comes from")

    class Meta:
        ordering = ["model", "provider", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "provider", "effective_from"], name="modelprice_unique_dated"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from}"


class LLMCall(models.Model):
    """One logical model call: every attempt and fallback it took, and what it cost."""

    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"
        REFUSED = "refused"

    # Time-ordered (foundation.ids): new calls share the index pages of their moment.
    id = models.UUIDField(primary_key=True, default=ids.uuid7, editable=False)
    created_at = models.DateTimeField(default=timezone.now)  # indexed by llmcall_dashboard
    feature = models.CharField(max_length=200)
    route = models.CharField(max_length=200, blank=True, help_text="The route that served it")
    service = models.CharField(max_length=100, blank=True, help_text="Calling service (proxy)")
    provider = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200, blank=True)
    stream = models.BooleanField(default=False)

    messages = models.JSONField(default=list)
    params = models.JSONField(default=dict, blank=True)

    response_text = models.TextField(blank=True)
    tool_calls = models.JSONField(null=True, blank=True)
    finish_reason = models.CharField(max_length=40, blank=True)

    status = models.CharField(max_length=10, choices=Status.choices)
    error_class = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)

    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)
    fallback_path = models.JSONField(default=list, blank=True, help_text="provider/model tried")
    fell_back = models.BooleanField(default=False)
    cache_hit = models.BooleanField(default=False)
    # A semantic cache hit: how close the question was, the call whose answer was served, and
    # what that call had cost (saved by this one).
    cache_similarity = models.FloatField(null=True, blank=True)
    cache_source = models.UUIDField(null=True, blank=True)
    cache_saved_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    over_budget = models.BooleanField(default=False)

    latency_ms = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    price_missing = models.BooleanField(default=False)
    provider_request_id = models.CharField(max_length=200, blank=True)
    # When the prompt and response text were emptied after LLMCALLS_LOG_RETENTION.
    text_purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Serves spend per service and feature today (budgets).
            models.Index(
                fields=["feature", "service", "created_at"], name="llmcall_feature_service"
            ),
            # What the retention purge still has to read: calls whose text is kept.
            models.Index(
                fields=["created_at"],
                condition=models.Q(text_purged_at__isnull=True),
                name="llmcall_text_kept",
            ),
            # /llm/ (llmcalls/selectors.py) reads a week or two of calls for its figures: this
            # index holds every column those reads use, so they scan it alone and never the
            # table (index-only; on a million calls the cost per day went from 520 ms to the
            # figure in bench/README.md, growth.py). It also serves every created_at range.
            models.Index(
                fields=[
                    "created_at",
                    "feature",
                    "service",
                    "status",
                    "cache_hit",
                    "fell_back",
                    "price_missing",
                    "cost_usd",
                    "cache_saved_usd",
                    "cache_source",
                    "provider",
                    "model",
                    "latency_ms",
                    "id",  # what Count("id") reads
                ],
                name="llmcall_dashboard",
            ),
            # The slowest and the most expensive calls of the week: walked from the top.
            models.Index(fields=["latency_ms"], name="llmcall_latency"),
            models.Index(fields=["cost_usd"], name="llmcall_cost"),
        ]

    def __str__(self) -> str:
        return f"{self.feature} {self.model} {self.status}"

    @property
    def prompt_for_display(self) -> list[tuple[str, str]]:
        """(role, text) per message; structured content (parts, tool calls) as JSON."""
        import json

        shown = []
        for message in self.messages if isinstance(self.messages, list) else []:
            if not isinstance(message, dict):
                shown.append(("?", json.dumps(message, ensure_ascii=False)))
                continue
            content = message.get("content")
            text = content if isinstance(content, str) else json.dumps(content, indent=2)
            if message.get("tool_calls"):
                text += "\n" + json.dumps(message["tool_calls"], indent=2, ensure_ascii=False)
            shown.append((str(message.get("role", "?")), text))
        return shown

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)


class SemanticCacheEntry(models.Model):
    """One answer the semantic cache may serve (llmcalls.semcache).

    Found by `key` (a hash of everything but the last user message's text: service, feature,
    model, system prompt, tools, parameters) and the cosine similarity of `embedding` (unit
    length, float16 bytes). With `serve: approved_only` it is served only once `approved_at` is
    set (a proposal linked to `call_id` was approved as proposed); `evicted_at` ends it for good.
    `changed_at` (clock time of the last write) is how each process's index catches up.
    """

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=64)
    call_id = models.UUIDField(unique=True, help_text="The LLMCall whose answer this is")
    service = models.CharField(max_length=100, blank=True)
    feature = models.CharField(max_length=200)
    embedding = models.BinaryField()
    response = models.JSONField(help_text="The chat.completion as the provider sent it")
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    approved_at = models.DateTimeField(null=True, blank=True)
    evicted_at = models.DateTimeField(null=True, blank=True)
    evicted_because = models.CharField(max_length=200, blank=True)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["changed_at"], name="semcache_changed"),
            models.Index(fields=["key"], name="semcache_key"),
        ]

    def __str__(self) -> str:
        return f"{self.feature} {self.call_id}"
