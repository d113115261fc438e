"""On PostgreSQL the audit table refuses UPDATE, DELETE and TRUNCATE.

A session may lift the refusal with `SET gatehouse.audit_maintenance = 'on'`; only the test
suite does, to empty tables between transactional tests. Production should also grant the
application role INSERT and SELECT only (docs/operations.md).
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION gatehouse_audit_is_append_only() RETURNS trigger AS $$
BEGIN
    IF current_setting('gatehouse.audit_maintenance', true) = 'on' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = 'approvals_auditevent is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER approvals_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON approvals_auditevent
    FOR EACH ROW EXECUTE FUNCTION gatehouse_audit_is_append_only();

CREATE TRIGGER approvals_auditevent_no_truncate
    BEFORE TRUNCATE ON approvals_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_audit_is_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS approvals_auditevent_no_truncate ON approvals_auditevent;
DROP TRIGGER IF EXISTS approvals_auditevent_no_update_delete ON approvals_auditevent;
DROP FUNCTION IF EXISTS gatehouse_audit_is_append_only();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
