"""`stats.approved_sum` reads its whole minutes index-only (issue 16, item 4; bench/README.md,
growth.py).

With 100,000 approvals in a 24-hour window the read of ApprovedSum took ~5 ms: 1,415 minute
rows on 1,355 heap pages, one page per minute. On PostgreSQL the unique constraint the trigger's
`ON CONFLICT` arbitrates on now carries `total` (`INCLUDE`): the same key columns, so the same
arbiter and the same uniqueness, and the read is an Index Only Scan.

- `total` in an index makes each approval's update of its minute row non-HOT (a new entry in
  this index and the primary key's); the table keeps fillfactor 50 so the new version stays on
  its page. bench/README.md has the submit measured before and after.
- An index-only scan goes to the heap for a page the visibility map does not mark all-visible,
  i.e. every page updated since the table's last vacuum. At the default thresholds (20 % of
  the rows dead) a table of 500,000 minutes would be vacuumed about once a day, and the whole
  day's window read through the heap again; vacuumed every 1,000 changed rows it stays within
  the last minutes (such a vacuum skips the all-visible pages, and its index pass too while
  under 2 % of the pages hold dead rows).

Elsewhere (SQLite) nothing changes: no trigger writes the table there, and the model keeps its
plain UniqueConstraint (an `include` in Meta warns models.W040 on SQLite at each start).
"""

from django.db import migrations

FORWARD = """
ALTER TABLE approvals_approvedsum
    DROP CONSTRAINT approvedsum_minute,
    ADD CONSTRAINT approvedsum_minute
        UNIQUE (service_id, action_type_id, field, minute) INCLUDE (total);
ALTER TABLE approvals_approvedsum SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000
);
"""

BACKWARD = """
ALTER TABLE approvals_approvedsum RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold
);
ALTER TABLE approvals_approvedsum
    DROP CONSTRAINT approvedsum_minute,
    ADD CONSTRAINT approvedsum_minute UNIQUE (service_id, action_type_id, field, minute);
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0015_verdicts_index_only")]

    operations = [migrations.RunPython(forward, backward)]
