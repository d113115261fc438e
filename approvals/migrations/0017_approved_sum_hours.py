"""Hour roll-ups of the per-minute approved sums (issue 16, item 4; bench/README.md, growth.py).

A spend cap's submits are decided one at a time under a per-service-and-type advisory lock, and
the `stats.approved_sum` read is inside it: over a day's window that read took 1,440 minute
rows of ApprovedSum (3.3 ms on a million proposals), so the cap's submit rate fell as the
window filled. On PostgreSQL the trigger of 0013 now also keeps ApprovedHourSum, the same sums
per hour, in the same call; velocity reads the whole hours there and only the minutes of the
two partial hours from ApprovedSum (at most 24 + 118 rows for a day).

- Hours are written before minutes, each in key order: a transaction takes an hour's row
  before any minute row in it, so a transaction that approves one proposal (it locks one hour,
  then one minute) cannot deadlock with one that approves many in a statement.
- Both tables add the same deltas: a value a float8 sum cannot hold turns its hour into NaN as
  it does its minute, and velocity then sums that window from the rows.
- The hours are summed once from the minutes, with proposals locked against writes.

Elsewhere (SQLite) the table is created and nothing writes it; velocity sums the rows there.
"""

import django.db.models.deletion
from django.db import migrations, models

# The rows a proposal's write adds to (+) or takes from (-), one per key, in key order: the
# minutes' upsert and the hours' read the same; two statements, so the hours are locked first.
DELTAS = """    FROM (
        SELECT * FROM gatehouse_approved_sum_deltas(OLD.service_id, OLD.action_type_id,
            OLD.decided_at, COALESCE(OLD.final_payload, OLD.payload), -1) WHERE old_counts
        UNION ALL
        SELECT * FROM gatehouse_approved_sum_deltas(NEW.service_id, NEW.action_type_id,
            NEW.decided_at, COALESCE(NEW.final_payload, NEW.payload), 1) WHERE new_counts
    ) AS d
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4"""

# 0013's trigger function, with {hours} run before the minutes' upsert.
FUNCTION = """
CREATE OR REPLACE FUNCTION gatehouse_approved_sums() RETURNS trigger AS $$
DECLARE
    old_counts boolean := false;
    new_counts boolean := false;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_counts := COALESCE(OLD.decision_outcome = 'approve' AND OLD.decided_at IS NOT NULL
            AND OLD.state IN ('approved', 'executing', 'executed', 'failed'), false);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_counts := COALESCE(NEW.decision_outcome = 'approve' AND NEW.decided_at IS NOT NULL
            AND NEW.state IN ('approved', 'executing', 'executed', 'failed'), false);
    END IF;
    IF old_counts AND new_counts
        AND OLD.service_id = NEW.service_id AND OLD.action_type_id = NEW.action_type_id
        AND date_trunc('minute', OLD.decided_at, 'UTC') = date_trunc('minute', NEW.decided_at, 'UTC')
        AND COALESCE(OLD.final_payload, OLD.payload) = COALESCE(NEW.final_payload, NEW.payload) THEN
        RETURN NULL;
    END IF;
    IF NOT (old_counts OR new_counts) THEN
        RETURN NULL;
    END IF;{hours}
    INSERT INTO approvals_approvedsum AS s (service_id, action_type_id, field, minute, total)
    SELECT d.service_id, d.action_type_id, d.field, d.minute, sum(d.delta)
{deltas}
    ON CONFLICT (service_id, action_type_id, field, minute)
    DO UPDATE SET total = s.total + EXCLUDED.total;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""

HOURS = """
    INSERT INTO approvals_approvedhoursum AS h (service_id, action_type_id, field, hour, total)
    SELECT d.service_id, d.action_type_id, d.field, date_trunc('hour', d.minute, 'UTC'),
        sum(d.delta)
{deltas}
    ON CONFLICT (service_id, action_type_id, field, hour)
    DO UPDATE SET total = h.total + EXCLUDED.total;"""

FORWARD = """
LOCK TABLE approvals_proposal IN SHARE ROW EXCLUSIVE MODE;
-- Each approval rewrites its hour's row: room on the page keeps those updates HOT, and a
-- vacuum every 1,000 changes (as 0016 does for the minutes) keeps the dead versions a window's
-- read steps over to those of the last minutes.
ALTER TABLE approvals_approvedhoursum SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000
);
INSERT INTO approvals_approvedhoursum (service_id, action_type_id, field, hour, total)
SELECT service_id, action_type_id, field, date_trunc('hour', minute, 'UTC'), sum(total)
FROM approvals_approvedsum
GROUP BY 1, 2, 3, 4;
"""


def trigger(hours: str) -> str:
    """0013's trigger function with `hours` run before the minutes' upsert."""
    return FUNCTION.format(hours=hours, deltas=DELTAS)


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD + trigger(HOURS.format(deltas=DELTAS)))


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(trigger(""))


class Migration(migrations.Migration):
    dependencies = [("approvals", "0016_approved_sum_index_only")]

    operations = [
        migrations.CreateModel(
            name="ApprovedHourSum",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("field", models.CharField(max_length=200)),
                ("hour", models.DateTimeField()),
                ("total", models.FloatField(default=0)),
                (
                    "action_type",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="approvals.actiontype",
                    ),
                ),
                (
                    "service",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="approvals.service",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("service", "action_type", "field", "hour"),
                        name="approvedhoursum_hour",
                    )
                ],
            },
        ),
        migrations.RunPython(forward, backward),
    ]
