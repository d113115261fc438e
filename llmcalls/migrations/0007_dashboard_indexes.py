"""/llm/ on a million calls (issue 16, item 4; bench/README.md, growth.py): one index holding
every column the dashboard's reads use (index-only scans), in place of the created_at index it
leads with, and the slowest and most expensive calls walked from the top.

On PostgreSQL also statistics on (feature, day of created_at in UTC), the cost chart's groups:
without them the planner expects a group per row, sorts 145,000 rows on disk rather than hashing
56 groups (195 ms; 89 ms with them).
"""

import django.utils.timezone
from django.db import migrations, models


FEATURE_DAY = """
CREATE STATISTICS IF NOT EXISTS llmcall_feature_day (ndistinct)
    ON feature, ((created_at AT TIME ZONE 'UTC')::date) FROM llmcalls_llmcall;
"""


def feature_day_statistics(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FEATURE_DAY)


def no_feature_day_statistics(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP STATISTICS IF EXISTS llmcall_feature_day")


class Migration(migrations.Migration):
    dependencies = [
        ("llmcalls", "0006_semantic_cache"),
    ]

    operations = [
        migrations.RunPython(feature_day_statistics, no_feature_day_statistics),
        migrations.AlterField(
            model_name="llmcall",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddIndex(
            model_name="llmcall",
            index=models.Index(
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
                    "id",
                ],
                name="llmcall_dashboard",
            ),
        ),
        migrations.AddIndex(
            model_name="llmcall",
            index=models.Index(fields=["latency_ms"], name="llmcall_latency"),
        ),
        migrations.AddIndex(
            model_name="llmcall",
            index=models.Index(fields=["cost_usd"], name="llmcall_cost"),
        ),
    ]
