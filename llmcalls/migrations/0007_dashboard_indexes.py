"""/llm/ on a million calls (issue 16, item 4; bench/README.md, growth.py): one index holding
every column the dashboard's reads use (index-only scans), in place of the created_at index it
leads with, and the slowest and most expensive calls walked from the top."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("llmcalls", "0006_semantic_cache"),
    ]

    operations = [
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
