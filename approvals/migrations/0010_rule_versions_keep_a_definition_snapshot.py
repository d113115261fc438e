"""Rule versions keep one JSON snapshot of the rule's definition instead of a column per
attribute (approvals/ruledef.py): a new rule attribute then needs no column here.

Existing versions are copied into snapshots (the immutability trigger is lifted for this
transaction only). Reversible: the columns come back, filled from the snapshots.
"""

from django.db import migrations, models

COLUMNS = [
    "name",
    "description",
    "priority",
    "action_type_key",
    "when",
    "outcome",
    "reason",
    "allows_irreversible",
    "approvals_required",
    "mode",
    "enabled",
]

# The columns without a default (NOT NULL), as they were, with one for the way back.
DEFAULTS_FOR_REVERSAL = {
    "name": models.CharField(max_length=200, default=""),
    "priority": models.IntegerField(default=100),
    "when": models.TextField(default=""),
    "outcome": models.CharField(max_length=10, default="review"),
    "allows_irreversible": models.BooleanField(default=False),
    "mode": models.CharField(max_length=10, default="enforce"),
    "enabled": models.BooleanField(default=True),
}


def _lift_immutability(schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL gatehouse.audit_maintenance = 'on'")


def columns_to_snapshots(apps, schema_editor):
    _lift_immutability(schema_editor)
    RuleVersion = apps.get_model("approvals", "RuleVersion")
    for version in RuleVersion.objects.all():
        snapshot = {name: getattr(version, name) for name in COLUMNS}
        snapshot["action_type"] = snapshot.pop("action_type_key") or None
        version.snapshot = snapshot
        version.save(update_fields=["snapshot"])


def snapshots_to_columns(apps, schema_editor):
    _lift_immutability(schema_editor)
    RuleVersion = apps.get_model("approvals", "RuleVersion")
    for version in RuleVersion.objects.all():
        snapshot = {"action_type_key": version.snapshot.get("action_type") or "", **version.snapshot}
        for name in COLUMNS:
            if name in snapshot:
                setattr(version, name, snapshot[name])
        version.save(update_fields=COLUMNS)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0009_outbox_trace_context")]

    operations = [
        migrations.AddField(
            model_name="ruleversion",
            name="snapshot",
            field=models.JSONField(
                default=dict, help_text="RuleDefinition.snapshot(): the rule's attributes"
            ),
            preserve_default=False,
        ),
        migrations.RunPython(columns_to_snapshots, snapshots_to_columns),
        # Defaults only so that reversing can add the columns back to a table holding rows.
        *[
            migrations.AlterField(model_name="ruleversion", name=name, field=field)
            for name, field in DEFAULTS_FOR_REVERSAL.items()
        ],
        *[migrations.RemoveField(model_name="ruleversion", name=name) for name in COLUMNS],
    ]
