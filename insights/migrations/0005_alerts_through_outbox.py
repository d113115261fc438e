# Alert webhooks move into approvals' outbox: each alert that had one gets its outbox row.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def alert_webhooks_into_outbox(apps, schema_editor):
    """Every alert whose webhook was queued, in flight or finished gets an outbox row with the
    same webhook-id (`insight_<id>`), so a receiver that saw it before deduplicates a resend.

    In flight (a next attempt was due): a pending row with the attempts made so far, due when
    the old retry was; the outbox's reconciler sends it (no task is published from here). With
    INSIGHTS_WEBHOOK_URL no longer set it fails at once, as the old delivery would have.
    Finished: delivered (a 2xx status) or failed with the old status as its error, completed
    at the alert's time (the old columns kept none), for the alert list; nothing is sent again.
    """
    if schema_editor.connection.vendor == "postgresql":
        # Check the new foreign keys now: rows left with pending trigger events would stop the
        # columns being dropped below in this same transaction.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    Alert = apps.get_model("insights", "Alert")
    OutboxMessage = apps.get_model("approvals", "OutboxMessage")
    url = settings.INSIGHTS_WEBHOOK_URL
    had = Alert.objects.exclude(webhook_status="", webhook_next_at=None).select_related(
        "action_type"
    )
    for alert in had.order_by("pk").iterator():
        # "500; attempt 2 at 10:04:05 UTC": the outbox keeps the error, and the time apart.
        status, error, completed = "pending", alert.webhook_status.split("; attempt ")[0], None
        if alert.webhook_next_at is None:
            code = alert.webhook_status
            delivered = code.isdigit() and 200 <= int(code) < 300
            status, error = ("delivered", "") if delivered else ("failed", code)
            completed = alert.created_at
        elif not url:
            status, error = "failed", "not sent: INSIGHTS_WEBHOOK_URL is no longer set"
            completed = alert.created_at
        message = OutboxMessage.objects.create(
            kind="webhook",
            event=f"insight.{alert.kind}",
            webhook_id=f"insight_{alert.pk}",
            target=url,
            body={
                "type": f"insight.{alert.kind}",
                "timestamp": alert.created_at.isoformat(),
                "data": {
                    "alert": alert.pk,
                    "action_type": alert.action_type.key,
                    "model": alert.model,
                    "prompt_version": alert.prompt_version,
                    "title": alert.title,
                    **alert.data,
                },
            },
            status=status,
            attempts=alert.webhook_attempts,
            max_attempts=settings.INSIGHTS_WEBHOOK_MAX_ATTEMPTS,
            next_attempt_at=alert.webhook_next_at or alert.created_at,
            last_error=error,
            created_at=alert.created_at,
            completed_at=completed,
        )
        Alert.objects.filter(pk=alert.pk).update(webhook=message)


class Migration(migrations.Migration):

    dependencies = [
        ('approvals', '0012_outbox_without_proposal'),
        ('insights', '0004_alert_open_index'),
    ]

    operations = [
        migrations.AddField(
            model_name='alert',
            name='webhook',
            field=models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='approvals.outboxmessage'),
        ),
        migrations.RunPython(alert_webhooks_into_outbox, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='alert',
            name='webhook_attempts',
        ),
        migrations.RemoveField(
            model_name='alert',
            name='webhook_next_at',
        ),
        migrations.RemoveField(
            model_name='alert',
            name='webhook_status',
        ),
    ]
