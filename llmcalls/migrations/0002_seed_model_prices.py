"""Public list prices (USD per million tokens) of a handful of common models.

Each row is dated with the day the price took effect and names where it was published. Prices
change: check the source and add a newer row in the admin (rows are never overwritten, so old
calls keep the price they were made at).
"""

from decimal import Decimal

from django.db import migrations

OPENAI = "https://openai.com/api/pricing/"
ANTHROPIC = "https://www.anthropic.com/pricing#api"

# model, input, cached input, output, effective from, source
PRICES = [
    ("gpt-4o-mini", "0.15", "0.075", "0.60", "2024-07-18", OPENAI),
    ("gpt-4o", "2.50", "1.25", "10.00", "2024-10-01", OPENAI),
    ("gpt-4.1", "2.00", "0.50", "8.00", "2025-04-14", OPENAI),
    ("gpt-4.1-mini", "0.40", "0.10", "1.60", "2025-04-14", OPENAI),
    ("gpt-4.1-nano", "0.10", "0.025", "0.40", "2025-04-14", OPENAI),
    ("o4-mini", "1.10", "0.275", "4.40", "2025-04-16", OPENAI),
    ("gpt-5", "1.25", "0.125", "10.00", "2025-08-07", OPENAI),
    ("gpt-5-mini", "0.25", "0.025", "2.00", "2025-08-07", OPENAI),
    ("gpt-5-nano", "0.05", "0.005", "0.40", "2025-08-07", OPENAI),
    ("claude-sonnet-4-20250514", "3.00", "0.30", "15.00", "2025-05-22", ANTHROPIC),
    ("claude-3-5-haiku-20241022", "0.80", "0.08", "4.00", "2024-11-04", ANTHROPIC),
]


def seed(apps, schema_editor):
    ModelPrice = apps.get_model("llmcalls", "ModelPrice")
    for model, input_, cached, output, since, source in PRICES:
        ModelPrice.objects.get_or_create(
            model=model,
            provider="",
            effective_from=since,
            defaults={
                "input_per_mtok": Decimal(input_),
                "cached_input_per_mtok": Decimal(cached),
                "output_per_mtok": Decimal(output),
                "source": source,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("llmcalls", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
