"""Indexes for a database of a million proposals (issue 16, item 4; bench/README.md, growth.py).

History by state, type, who decided, ?mine=1 and ?q=; the queue due first; insights' reviewer
verdicts and version markers. proposal_state_created (state, created_at) gives way to
(state, updated_at): the queue pages on the partial proposal_pending_created, history on
updated_at. The action type's own index gives way to proposal_type_versions, which leads with it.

On PostgreSQL only: a trigram index on the upper-cased summary for history's ?q= (Django's
icontains is UPPER(summary) LIKE UPPER(%q%)), with the pg_trgm extension; elsewhere that search
scans, as before.
"""

import django.db.models.deletion
import django.db.models.functions.comparison
from django.conf import settings
from django.db import migrations, models


TRIGRAMS = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX IF NOT EXISTS proposal_summary_trgm ON approvals_proposal
    USING gin ((UPPER(summary::text)) gin_trgm_ops);
"""


def summary_trigrams(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGRAMS)


def no_summary_trigrams(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS proposal_summary_trgm")


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0013_approved_sum_minutes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(summary_trigrams, no_summary_trigrams),
        migrations.RemoveIndex(
            model_name="proposal",
            name="proposal_state_created",
        ),
        migrations.AlterField(
            model_name="proposal",
            name="action_type",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="proposals",
                to="approvals.actiontype",
            ),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(fields=["state", "updated_at", "id"], name="proposal_state_updated"),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                condition=models.Q(
                    (
                        "state__in",
                        [
                            "approved",
                            "rejected",
                            "cancelled",
                            "expired",
                            "executing",
                            "executed",
                            "failed",
                        ],
                    )
                ),
                fields=["action_type", "updated_at", "id"],
                name="proposal_history_type",
            ),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                condition=models.Q(
                    (
                        "state__in",
                        [
                            "approved",
                            "rejected",
                            "cancelled",
                            "expired",
                            "executing",
                            "executed",
                            "failed",
                        ],
                    )
                ),
                fields=["decided_by", "updated_at", "id"],
                name="proposal_history_by",
            ),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                condition=models.Q(
                    ("decided_by", "reviewer"),
                    ("state__in", ["cancelled", "expired"]),
                    _connector="OR",
                ),
                fields=["updated_at", "id"],
                name="proposal_reviewed_updated",
            ),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                condition=models.Q(("external_id", ""), _negated=True),
                fields=["external_id"],
                name="proposal_external_id",
            ),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                django.db.models.functions.comparison.Coalesce(
                    "review_due_at", "expires_at", "created_at"
                ),
                models.F("id"),
                condition=models.Q(("state", "pending_review")),
                name="proposal_pending_due",
            ),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                fields=["action_type", "model", "prompt_version", "created_at"],
                name="proposal_type_versions",
            ),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                condition=models.Q(("decided_by", "reviewer")),
                fields=["created_at", "action_type"],
                name="proposal_reviewer_verdicts",
            ),
        ),
    ]
