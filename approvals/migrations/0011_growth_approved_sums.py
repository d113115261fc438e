"""Per-minute sums of approved payloads, kept by triggers, for `stats.approved_sum` (issue 16).

With 100,000 approvals in a 24-hour window the sum read every one of them (tens of ms, under the
per-service-and-type lock of every submit with a cap). Now an approval adds each numeric field
of its payload (the reviewer's edit where there is one) to its minute's row in
approvals_approvedsum, in the same transaction, from an AFTER trigger on approvals_proposal:
every path that approves, edits or moves a proposal (the services, bulk updates, a fill by SQL)
keeps the sums right without remembering to. A change that makes a proposal stop counting, or
count with another payload or minute, takes the old contribution back first. The rows of one
minute are upserted in (path) order, so concurrent decisions wait for each other's row rather
than deadlock.

`gatehouse_approved_sum_rebuild()` recomputes the table from the proposals (this migration runs
it once; bench/growth.py after a fill by SQL with the triggers off). `total` is an unconstrained
numeric: exact sums of decimal amounts, and no overflow to fail an approval on.
"""

import django.db.models.deletion
from django.db import migrations, models

# Payloads with more numeric fields than this are counted on the empty path instead, and a
# window holding one is summed from the proposals (approvals.velocity).
MAX_FIELDS = 64

FORWARD = f"""
ALTER TABLE approvals_approvedsum ALTER COLUMN total TYPE numeric;

-- The numeric leaves of a payload reachable through objects only (arrays are summed from the
-- proposals), as dotted paths; keys that a dotted path cannot name (empty, or with a dot) are
-- left out, as the query by path could never reach them.
CREATE OR REPLACE FUNCTION gatehouse_approved_sum_leaves(doc jsonb)
RETURNS TABLE (path text, amount numeric) AS $$
    WITH RECURSIVE walk(path, value) AS (
        SELECT e.key, e.value
        FROM jsonb_each(CASE WHEN jsonb_typeof(doc) = 'object' THEN doc ELSE '{{}}' END) e
        WHERE e.key <> '' AND position('.' IN e.key) = 0
        UNION ALL
        SELECT walk.path || '.' || e.key, e.value
        FROM walk, jsonb_each(walk.value) e
        WHERE jsonb_typeof(walk.value) = 'object' AND e.key <> '' AND position('.' IN e.key) = 0
    )
    SELECT path, value::text::numeric FROM walk WHERE jsonb_typeof(value) = 'number'
$$ LANGUAGE sql IMMUTABLE;

-- Does the proposal count in stats.approved_sum (velocity._STATES['approve'])?
CREATE OR REPLACE FUNCTION gatehouse_approved_sum_counts(p approvals_proposal) RETURNS boolean AS $$
    SELECT p.decision_outcome = 'approve' AND p.decided_at IS NOT NULL
        AND p.state IN ('approved', 'executing', 'executed', 'failed')
$$ LANGUAGE sql IMMUTABLE;

-- What a payload adds to its minute: each numeric field, or, past MAX_FIELDS of them, a count
-- of 1 on the empty path.
CREATE OR REPLACE FUNCTION gatehouse_approved_sum_entries(doc jsonb)
RETURNS TABLE (path text, amount numeric) AS $$
    WITH leaves AS (SELECT * FROM gatehouse_approved_sum_leaves(doc))
    SELECT path, amount FROM leaves WHERE (SELECT count(*) FROM leaves) <= {MAX_FIELDS}
    UNION ALL
    SELECT '', 1 WHERE (SELECT count(*) FROM leaves) > {MAX_FIELDS}
$$ LANGUAGE sql IMMUTABLE;

CREATE OR REPLACE FUNCTION gatehouse_approved_sum_add(p approvals_proposal, sign integer)
RETURNS void AS $$
    INSERT INTO approvals_approvedsum (service_id, action_type_id, path, minute, total)
    SELECT p.service_id, p.action_type_id, e.path, date_trunc('minute', p.decided_at, 'UTC'),
        sign * e.amount
    FROM gatehouse_approved_sum_entries(COALESCE(p.final_payload, p.payload)) e
    ORDER BY e.path
    ON CONFLICT (service_id, action_type_id, path, minute)
    DO UPDATE SET total = approvals_approvedsum.total + EXCLUDED.total;
$$ LANGUAGE sql;

CREATE OR REPLACE FUNCTION gatehouse_approved_sum_track() RETURNS trigger AS $$
DECLARE
    was boolean := TG_OP = 'UPDATE' AND gatehouse_approved_sum_counts(OLD);
    now_counts boolean := gatehouse_approved_sum_counts(NEW);
BEGIN
    IF was AND now_counts
        AND OLD.service_id = NEW.service_id AND OLD.action_type_id = NEW.action_type_id
        AND date_trunc('minute', OLD.decided_at, 'UTC') = date_trunc('minute', NEW.decided_at, 'UTC')
        AND COALESCE(OLD.final_payload, OLD.payload) = COALESCE(NEW.final_payload, NEW.payload)
    THEN
        RETURN NULL;  -- approved → executing → executed: the same contribution
    END IF;
    IF was THEN
        PERFORM gatehouse_approved_sum_add(OLD, -1);
    END IF;
    IF now_counts THEN
        PERFORM gatehouse_approved_sum_add(NEW, 1);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER approvals_proposal_approved_sum_insert
    AFTER INSERT ON approvals_proposal FOR EACH ROW
    WHEN (NEW.decision_outcome = 'approve')
    EXECUTE FUNCTION gatehouse_approved_sum_track();

CREATE TRIGGER approvals_proposal_approved_sum_update
    AFTER UPDATE ON approvals_proposal FOR EACH ROW
    WHEN (OLD.decision_outcome = 'approve' OR NEW.decision_outcome = 'approve')
    EXECUTE FUNCTION gatehouse_approved_sum_track();

CREATE OR REPLACE FUNCTION gatehouse_approved_sum_rebuild() RETURNS void AS $$
    DELETE FROM approvals_approvedsum;
    INSERT INTO approvals_approvedsum (service_id, action_type_id, path, minute, total)
    SELECT p.service_id, p.action_type_id, e.path, date_trunc('minute', p.decided_at, 'UTC'),
        sum(e.amount)
    FROM approvals_proposal p
    CROSS JOIN LATERAL gatehouse_approved_sum_entries(COALESCE(p.final_payload, p.payload)) e
    WHERE gatehouse_approved_sum_counts(p)
    GROUP BY 1, 2, 3, 4;
$$ LANGUAGE sql;

SELECT gatehouse_approved_sum_rebuild();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS approvals_proposal_approved_sum_update ON approvals_proposal;
DROP TRIGGER IF EXISTS approvals_proposal_approved_sum_insert ON approvals_proposal;
DROP FUNCTION IF EXISTS gatehouse_approved_sum_rebuild();
DROP FUNCTION IF EXISTS gatehouse_approved_sum_track();
DROP FUNCTION IF EXISTS gatehouse_approved_sum_add(approvals_proposal, integer);
DROP FUNCTION IF EXISTS gatehouse_approved_sum_counts(approvals_proposal);
DROP FUNCTION IF EXISTS gatehouse_approved_sum_entries(jsonb);
DROP FUNCTION IF EXISTS gatehouse_approved_sum_leaves(jsonb);
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0010_rule_versions_keep_a_definition_snapshot"),
    ]

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
                ("path", models.CharField(blank=True, max_length=200)),
                ("minute", models.DateTimeField()),
                ("total", models.DecimalField(decimal_places=20, max_digits=60)),
                (
                    "action_type",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="approvals.actiontype",
                    ),
                ),
                (
                    "service",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="approvals.service",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("service", "action_type", "path", "minute"),
                        include=("total",),
                        name="approvedsum_bucket",
                    )
                ],
            },
        ),
        migrations.RunPython(forward, backward),
    ]
