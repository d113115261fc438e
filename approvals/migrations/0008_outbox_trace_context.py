from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("approvals", "0007_rule_approvals_required")]

    operations = [
        migrations.AddField(
            model_name="outboxmessage",
            name="trace_context",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
