"""Per-minute sums of approved payload fields, for `stats.approved_sum` (issue 16, item 4).

On a database of a million proposals, a spend cap with 100,000 approvals in its 24-hour window
read 100,000 rows on every submit (1,067 ms). On PostgreSQL a trigger now keeps, per service,
action type, top-level numeric payload field and minute, the sum over approved proposals
decided in that minute (ApprovedSum), in the transaction that writes the proposal; velocity
reads whole minutes there and only the two partial minutes at the window's ends from the
proposals. Elsewhere (SQLite) nothing is created and velocity sums the plain way.

- One statement per proposal write, its rows in key order, `INSERT … ON CONFLICT DO UPDATE`:
  concurrent approvals of one service and type in one minute wait for each other's row, never
  fail on a duplicate key.
- A row counts while it is approved (approved, executing, executed, failed, outcome approve,
  decided_at set), with its executed payload (the reviewer's edit if any): an edit, a move of
  decided_at, a state change out of those or a DELETE subtracts what the row had added. Moving
  between approved states adds nothing and writes nothing.
- A value the sum cannot hold exactly as float8 (|x| ≥ 1e12, or so small it underflows) turns
  its minute into NaN, and velocity then sums that window the plain way.
- The rows already there are summed once, with the table locked against writes.
"""

import django.db.models.deletion
from django.db import migrations, models

FORWARD = """
LOCK TABLE approvals_proposal IN SHARE ROW EXCLUSIVE MODE;

-- Each approval rewrites its minute's row: room on the page keeps those updates HOT.
ALTER TABLE approvals_approvedsum SET (fillfactor = 50);

CREATE OR REPLACE FUNCTION gatehouse_approved_sum_deltas(
    service bigint, action_type bigint, decided timestamptz, body jsonb, sign float8
) RETURNS TABLE (service_id bigint, action_type_id bigint, field text, minute timestamptz,
                 delta float8) AS $$
    SELECT service, action_type, e.key, date_trunc('minute', decided, 'UTC'),
        CASE WHEN abs((e.value)::numeric) < 1e12
                  AND ((e.value)::numeric = 0 OR abs((e.value)::numeric) > 1e-300)
             THEN sign * (e.value)::float8 ELSE 'NaN'::float8 END
    FROM jsonb_each(CASE WHEN jsonb_typeof(body) = 'object' THEN body ELSE '{}'::jsonb END) AS e
    WHERE jsonb_typeof(e.value) = 'number' AND length(e.key) <= 200
$$ LANGUAGE sql IMMUTABLE;

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
    END IF;
    INSERT INTO approvals_approvedsum AS s (service_id, action_type_id, field, minute, total)
    SELECT d.service_id, d.action_type_id, d.field, d.minute, sum(d.delta)
    FROM (
        SELECT * FROM gatehouse_approved_sum_deltas(OLD.service_id, OLD.action_type_id,
            OLD.decided_at, COALESCE(OLD.final_payload, OLD.payload), -1) WHERE old_counts
        UNION ALL
        SELECT * FROM gatehouse_approved_sum_deltas(NEW.service_id, NEW.action_type_id,
            NEW.decided_at, COALESCE(NEW.final_payload, NEW.payload), 1) WHERE new_counts
    ) AS d
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (service_id, action_type_id, field, minute)
    DO UPDATE SET total = s.total + EXCLUDED.total;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

INSERT INTO approvals_approvedsum (service_id, action_type_id, field, minute, total)
SELECT d.service_id, d.action_type_id, d.field, d.minute, sum(d.delta)
FROM approvals_proposal AS p,
    gatehouse_approved_sum_deltas(p.service_id, p.action_type_id, p.decided_at,
        COALESCE(p.final_payload, p.payload), 1) AS d
WHERE p.decision_outcome = 'approve' AND p.decided_at IS NOT NULL AND p.state IN ('approved', 'executing', 'executed', 'failed')
GROUP BY 1, 2, 3, 4;

CREATE TRIGGER approvals_proposal_approved_sum_insert
    AFTER INSERT ON approvals_proposal
    FOR EACH ROW WHEN (NEW.decision_outcome = 'approve')
    EXECUTE FUNCTION gatehouse_approved_sums();

CREATE TRIGGER approvals_proposal_approved_sum_update
    AFTER UPDATE OF state, decision_outcome, decided_at, payload, final_payload, service_id,
        action_type_id ON approvals_proposal
    FOR EACH ROW WHEN (OLD.decision_outcome = 'approve' OR NEW.decision_outcome = 'approve')
    EXECUTE FUNCTION gatehouse_approved_sums();

CREATE TRIGGER approvals_proposal_approved_sum_delete
    AFTER DELETE ON approvals_proposal
    FOR EACH ROW WHEN (OLD.decision_outcome = 'approve')
    EXECUTE FUNCTION gatehouse_approved_sums();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS approvals_proposal_approved_sum_delete ON approvals_proposal;
DROP TRIGGER IF EXISTS approvals_proposal_approved_sum_update ON approvals_proposal;
DROP TRIGGER IF EXISTS approvals_proposal_approved_sum_insert ON approvals_proposal;
DROP FUNCTION IF EXISTS gatehouse_approved_sums();
DROP FUNCTION IF EXISTS gatehouse_approved_sum_deltas(bigint, bigint, timestamptz, jsonb, float8);
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0012_outbox_without_proposal")]

    operations = [
        migrations.CreateModel(
            name="ApprovedSum",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("field", models.CharField(max_length=200)),
                ("minute", models.DateTimeField()),
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
                        fields=("service", "action_type", "field", "minute"),
                        name="approvedsum_minute",
                    )
                ],
            },
        ),
        migrations.RunPython(forward, backward),
    ]
