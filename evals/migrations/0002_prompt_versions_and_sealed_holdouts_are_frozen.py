"""On PostgreSQL the database itself keeps two promises of evals.services:

- a prompt version never changes (UPDATE of its content is refused);
- the cases of a sealed holdout never change: UPDATE and DELETE of such a row, and INSERT or
  UPDATE that would put a row into a sealed holdout, are refused. Unsealing is refused too.

The services and the admin refuse these first, with a readable message; the triggers are the
backstop for anything that goes around them (a shell, a bulk update, a future bug).
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION evals_promptversion_is_immutable() RETURNS trigger AS $$
BEGIN
    IF NEW.template IS DISTINCT FROM OLD.template OR NEW.route IS DISTINCT FROM OLD.route
       OR NEW.params IS DISTINCT FROM OLD.params OR NEW.version IS DISTINCT FROM OLD.version
       OR NEW.prompt_id IS DISTINCT FROM OLD.prompt_id THEN
        RAISE EXCEPTION USING
            MESSAGE = 'prompt versions are immutable: declare a new version',
            ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER evals_promptversion_no_update
    BEFORE UPDATE ON evals_promptversion
    FOR EACH ROW EXECUTE FUNCTION evals_promptversion_is_immutable();

CREATE OR REPLACE FUNCTION evals_sealed_holdout_is_frozen() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.split = 'holdout' AND EXISTS (
        SELECT 1 FROM evals_evalset s WHERE s.id = OLD.eval_set_id AND s.holdout_sealed_at IS NOT NULL
    ) THEN
        RAISE EXCEPTION USING
            MESSAGE = 'the holdout of this eval set is sealed: ' || TG_OP || ' refused',
            ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.split = 'holdout' AND EXISTS (
        SELECT 1 FROM evals_evalset s WHERE s.id = NEW.eval_set_id AND s.holdout_sealed_at IS NOT NULL
    ) THEN
        RAISE EXCEPTION USING
            MESSAGE = 'the holdout of this eval set is sealed: no new cases',
            ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER evals_evalcase_sealed_holdout
    BEFORE INSERT OR UPDATE OR DELETE ON evals_evalcase
    FOR EACH ROW EXECUTE FUNCTION evals_sealed_holdout_is_frozen();

CREATE OR REPLACE FUNCTION evals_seal_is_final() RETURNS trigger AS $$
BEGIN
    IF OLD.holdout_sealed_at IS NOT NULL AND NEW.holdout_sealed_at IS DISTINCT FROM OLD.holdout_sealed_at THEN
        RAISE EXCEPTION USING
            MESSAGE = 'a sealed holdout cannot be unsealed',
            ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER evals_evalset_seal_is_final
    BEFORE UPDATE ON evals_evalset
    FOR EACH ROW EXECUTE FUNCTION evals_seal_is_final();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS evals_evalset_seal_is_final ON evals_evalset;
DROP FUNCTION IF EXISTS evals_seal_is_final();
DROP TRIGGER IF EXISTS evals_evalcase_sealed_holdout ON evals_evalcase;
DROP FUNCTION IF EXISTS evals_sealed_holdout_is_frozen();
DROP TRIGGER IF EXISTS evals_promptversion_no_update ON evals_promptversion;
DROP FUNCTION IF EXISTS evals_promptversion_is_immutable();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("evals", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
