from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("approvals", "0008_review_sla")]

    operations = [
        migrations.AddField(
            model_name="outboxmessage",
            name="trace_context",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
