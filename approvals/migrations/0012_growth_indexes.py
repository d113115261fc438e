"""Indexes the growth benchmark's plans asked for (issue 16; bench/README.md "Growth"):
history's search (a trigram index on the summary, the external id), reviewers' verdicts by
type and time (partial: reviewer-decided rows only), the queue's due order (partial: pending
rows only) and the first proposal of each model and prompt version of a type. The latter leads
with action_type, so the foreign key's own index goes: a submit that ends in review writes three
more index entries than before, one that a rule decides two.
"""

import django.contrib.postgres.indexes
import django.db.models.deletion
import django.db.models.functions.comparison
import django.db.models.functions.text
from django.conf import settings
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0011_growth_approved_sums"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        TrigramExtension(),
        # Django writes this index's expression in parentheses PostgreSQL refuses around an
        # operator class (without django.contrib.postgres installed), hence the SQL by hand.
        migrations.RunSQL(
            'CREATE INDEX "proposal_summary_trgm" ON "approvals_proposal" '
            'USING gin ((UPPER("summary"::text)) gin_trgm_ops)',
            'DROP INDEX IF EXISTS "proposal_summary_trgm"',
            state_operations=[
                migrations.AddIndex(
                    model_name="proposal",
                    index=django.contrib.postgres.indexes.GinIndex(
                        django.contrib.postgres.indexes.OpClass(
                            django.db.models.functions.text.Upper("summary"), name="gin_trgm_ops"
                        ),
                        name="proposal_summary_trgm",
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(fields=["external_id"], name="proposal_external_id"),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                condition=models.Q(("decided_by", "reviewer")),
                fields=["action_type", "created_at"],
                name="proposal_reviewer_verdicts",
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
                django.db.models.functions.comparison.Coalesce(
                    "review_due_at", "expires_at", "created_at"
                ),
                models.F("id"),
                condition=models.Q(("state", "pending_review")),
                name="proposal_pending_due",
            ),
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
    ]
