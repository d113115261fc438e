"""Insights' reviewer verdicts read index-only (issue 16, item 4; bench/README.md, growth.py).

proposal_reviewer_verdicts (created_at, action_type) gives way to two partial indexes holding
every column a verdict shows, by type and time: one for the proposals a reviewer left as
proposed or rejected, one for the edited. No row of the submit enters either (only a
reviewer's decision adds one entry, as before).
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('approvals', '0014_history_and_insights_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='proposal',
            name='proposal_reviewer_verdicts',
        ),
        migrations.AddIndex(
            model_name='proposal',
            index=models.Index(condition=models.Q(('decided_by', 'reviewer'), ('final_payload__isnull', True)), fields=['action_type', 'created_at', 'model', 'prompt_version', 'confidence', 'decision_outcome', 'id'], name='proposal_verdicts_unedited'),
        ),
        migrations.AddIndex(
            model_name='proposal',
            index=models.Index(condition=models.Q(('decided_by', 'reviewer'), ('final_payload__isnull', False)), fields=['action_type', 'created_at', 'model', 'prompt_version', 'confidence', 'decision_outcome', 'id'], name='proposal_verdicts_edited'),
        ),
    ]
