"""The approved rows of a sum, read with a plan made once per connection (issue 16, item 4).

The spend cap's submit reads, under its lock, the approvals of the window's first partial minute
from the proposals (velocity.lock_and_sum). Planning that statement cost more than running it:
approvals_proposal has 18 indexes, and on a filled table the planner prices each against its
statistics, on every submit (31–35 % of the backend's CPU; bench/README.md, growth.py).

- gatehouse_approved_rows_sum(service, type, path, since, until) sums the approved proposals
  decided in [since, until), a plpgsql function whose statement PostgreSQL plans once per
  connection: `plan_cache_mode = force_generic_plan` (in auto mode it would go on planning
  anew, the generic plan priced with default selectivities for the range).
- A generic plan does not see the values, so it must have one right way to go: the index
  proposal_outcome_decided (service, type, decision_outcome, decided_at) where decided_at is set
  takes the place of proposal_velocity (service, type, state, decided_at). Its columns are the
  statement's conditions in order with nothing between the equalities and the range, where
  proposal_velocity's `state IN (…)` let a plan made on a small table bound only service and
  type and read every entry of them (bench/README.md, the eighth session). The state stays a
  filter of the heap rows the range finds. A proposal not yet decided has no entry: a submit
  sent to review writes one index entry fewer.

On PostgreSQL the index is built and the old one dropped CONCURRENTLY (the migration is not
atomic), so submits go on meanwhile; elsewhere the function does not exist and velocity sums
the rows in Python.
"""

from django.db import migrations, models

from approvals.migrations._operations import PostgresFunction, ReplaceIndex

NEW_INDEX = models.Index(
    fields=["service", "action_type", "decision_outcome", "decided_at"],
    condition=models.Q(decided_at__isnull=False),
    name="proposal_outcome_decided",
)
OLD_INDEX = models.Index(
    fields=["service", "action_type", "state", "decided_at"], name="proposal_velocity"
)

# $1 service, $2 action type, $3 the field's path, [$4, $5) the decision times. The states are
# those the trigger of 0013 counts.
SELECT = """
SELECT COALESCE(SUM(CASE
    WHEN jsonb_typeof(COALESCE(final_payload, payload) #> $3) = 'number'
    THEN (COALESCE(final_payload, payload) #>> $3)::float8 ELSE 0 END), 0)
FROM approvals_proposal
WHERE service_id = $1 AND action_type_id = $2 AND decision_outcome = 'approve'
  AND decided_at >= $4 AND decided_at < $5
  AND state IN ('approved', 'executing', 'executed', 'failed')
"""


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("approvals", "0018_proposal_id_uuid7")]

    operations = [
        ReplaceIndex("proposal", drop=OLD_INDEX, build=NEW_INDEX),
        PostgresFunction(
            "gatehouse_approved_rows_sum(bigint, bigint, text[], timestamptz, timestamptz)", SELECT
        ),
    ]
