"""The whole hours and minutes of a sum, read with a plan made once per connection (issue 16,
item 4).

The spend cap's submit reads, under its lock, the whole hours and minutes of its window from
ApprovedHourSum and ApprovedSum in three subqueries, planned on every submit: 197-220 µs of
planning a submit against 94-239 µs of execution (pg_stat_statements under growth.py's submit
rounds; bench/README.md). gatehouse_whole_sums(service, type, field, first, hour, last_hour,
last) sums the whole hours [hour, last_hour) and the whole minutes [first, hour) and
[last_hour, last) in a plpgsql function whose statement PostgreSQL plans once per connection
(`force_generic_plan`, as 0019's gatehouse_approved_rows_sum). The conditions are the unique
indexes' columns in order, three equalities and a range, so a plan made without the values has
one right way: each unique index bound on every column, the minutes' read from the index alone
(it carries `total`, 0016). A test reads the plan on empty tables and on grown ones. An open
window (the cap's) passes a `last` that no minute reaches.

PostgreSQL only: elsewhere the trigger's tables are empty and velocity sums the proposals.
"""

from django.db import migrations

from approvals.migrations._operations import PostgresFunction

SELECT = """
SELECT
    (SELECT COALESCE(SUM(h.total), 0) FROM approvals_approvedhoursum h
     WHERE h.service_id = $1 AND h.action_type_id = $2 AND h.field = $3
       AND h.hour >= $5 AND h.hour < $6)
  + (SELECT COALESCE(SUM(m.total), 0) FROM approvals_approvedsum m
     WHERE m.service_id = $1 AND m.action_type_id = $2 AND m.field = $3
       AND m.minute >= $4 AND m.minute < $5)
  + (SELECT COALESCE(SUM(m.total), 0) FROM approvals_approvedsum m
     WHERE m.service_id = $1 AND m.action_type_id = $2 AND m.field = $3
       AND m.minute >= $6 AND m.minute < $7)
"""


class Migration(migrations.Migration):
    dependencies = [("approvals", "0020_queue_pending_arrival")]

    operations = [
        PostgresFunction(
            "gatehouse_whole_sums("
            "bigint, bigint, text, timestamptz, timestamptz, timestamptz, timestamptz)",
            SELECT,
        )
    ]
