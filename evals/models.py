from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class Split(models.TextChoices):
    DEV = "dev"
    HOLDOUT = "holdout"


class EvalSet(models.Model):
    """A named collection of cases for one feature, scored one way.

    `holdout_sealed_at` is set once and never cleared: from then on the holdout cases are frozen
    and only their aggregate scores are shown (evals.services.holdout_seal).
    """

    name = models.SlugField(max_length=100, unique=True)
    feature = models.CharField(max_length=200, blank=True, help_text="The feature it measures")
    description = models.TextField(blank=True)
    scorer = models.CharField(max_length=40, default="exact", help_text="See evals.scorers")
    scorer_config = models.JSONField(default=dict, blank=True)
    holdout_sealed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_sealed(self) -> bool:
        return self.holdout_sealed_at is not None


class EvalCase(models.Model):
    class Source(models.TextChoices):
        IMPORTED = "imported"
        HARVESTED = "harvested"

    eval_set = models.ForeignKey(EvalSet, on_delete=models.CASCADE, related_name="cases")
    input = models.JSONField(
        help_text="A list of chat messages, or a mapping of template variables"
    )
    ideal = models.JSONField(help_text="The expected output")
    tags = models.JSONField(default=list, blank=True)
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.DEV)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.IMPORTED)
    proposal = models.ForeignKey(
        "approvals.Proposal",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="eval_cases",
        help_text="The decided proposal this case was harvested from",
    )
    fingerprint = models.CharField(max_length=64, help_text="Hash of input and ideal")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["eval_set", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["eval_set", "fingerprint"], name="evalcase_unique_content"
            ),
            models.UniqueConstraint(
                fields=["eval_set", "proposal"],
                condition=models.Q(proposal__isnull=False),
                name="evalcase_unique_proposal",
            ),
        ]
        indexes = [models.Index(fields=["eval_set", "split"], name="evalcase_set_split")]

    def __str__(self) -> str:
        return f"{self.eval_set_id}#{self.pk} ({self.split})"

    @property
    def is_sealed(self) -> bool:
        return self.split == Split.HOLDOUT and self.eval_set.is_sealed


class Prompt(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PromptVersion(models.Model):
    """Immutable once created: a change is a new version (evals.services.prompt_version_create)."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    template = models.JSONField(help_text='Chat messages; "{{name}}" is replaced by a variable')
    route = models.CharField(max_length=200, help_text="The llmcalls route (feature) it calls")
    params = models.JSONField(default=dict, blank=True, help_text='e.g. {"temperature": 0}')
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["prompt", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "version"], name="promptversion_unique")
        ]

    def __str__(self) -> str:
        return f"{self.prompt.name}@{self.version}"


class PromptLabel(models.Model):
    """A movable name (production, staging …) pointing at one version of a prompt."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="labels")
    name = models.SlugField(max_length=50)
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="labels")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["prompt", "name"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "name"], name="promptlabel_unique")
        ]

    def __str__(self) -> str:
        return f"{self.prompt.name}:{self.name}"


class PromptLabelMove(models.Model):
    """History of label moves: which version was `production` when."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="label_moves")
    label = models.SlugField(max_length=50)
    from_version = models.PositiveIntegerField(null=True, blank=True)
    to_version = models.PositiveIntegerField()
    actor = models.CharField(max_length=200, blank=True)
    moved_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-moved_at", "-id"]

    def __str__(self) -> str:
        return f"{self.prompt_id}:{self.label} {self.from_version}→{self.to_version}"


class EvalRun(models.Model):
    """One prompt version on one route over one split of a set, each case `repeat` times.

    `totals` holds the summary written when the run finishes:
    {"total": {"n", "correct", "accuracy", "low", "high"}, "tags": {tag: {…}}, "flaky": n,
     "errors": n, "latency_p50_ms", "latency_p95_ms", "cost_usd", "cost_unknown": n}
    """

    class Status(models.TextChoices):
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    eval_set = models.ForeignKey(EvalSet, on_delete=models.PROTECT, related_name="runs")
    prompt_version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="runs")
    route = models.CharField(max_length=200)
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.DEV)
    repeat = models.PositiveSmallIntegerField(default=1)
    scorer = models.CharField(max_length=40)
    model_graded = models.BooleanField(default=False)
    baseline = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    batch = models.UUIDField(default=uuid.uuid4, help_text="Runs started by one command share it")
    label = models.CharField(max_length=200, blank=True, help_text="e.g. a commit or CI job")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    n_cases = models.PositiveIntegerField(default=0)
    n_correct = models.PositiveIntegerField(default=0)
    accuracy = models.FloatField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    totals = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["eval_set", "split", "started_at"], name="evalrun_set")]

    def __str__(self) -> str:
        return f"run {self.pk} {self.eval_set_id} {self.prompt_version} on {self.route}"

    @property
    def tag_totals(self) -> dict[str, Any]:
        return dict(self.totals.get("tags") or {})


class EvalResult(models.Model):
    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(EvalCase, on_delete=models.CASCADE, related_name="results")
    attempt = models.PositiveSmallIntegerField(default=0, help_text="0 … repeat-1")
    output = models.TextField(blank=True)
    score = models.FloatField(default=0.0)
    passed = models.BooleanField(default=False)
    detail = models.TextField(blank=True, help_text="What the scorer said")
    error = models.TextField(blank=True, help_text="Why there is no output")
    latency_ms = models.FloatField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    # The call log row is written by llmcalls on its own terms (it survives rollbacks and may,
    # rarely, only reach the log file), so no database constraint ties the two.
    llm_call = models.ForeignKey(
        "llmcalls.LLMCall",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    grader_call = models.ForeignKey(
        "llmcalls.LLMCall",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        help_text="The model-graded scorer's own call, if any",
    )

    class Meta:
        ordering = ["run", "case", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["run", "case", "attempt"], name="evalresult_unique")
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} case {self.case_id}.{self.attempt}: {self.score}"
