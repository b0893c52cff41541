"""The ledger is append-only, enforced by PostgreSQL itself: any UPDATE or DELETE of a ledger row
raises, whoever sends it (ORM, admin, raw SQL, a psql session)."""

from django.db import migrations

SQL = """
CREATE OR REPLACE FUNCTION inventory_ledger_reject_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'inventory_stockmovement is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER inventory_ledger_append_only
    BEFORE UPDATE OR DELETE ON inventory_stockmovement
    FOR EACH ROW EXECUTE FUNCTION inventory_ledger_reject_change();
"""

REVERSE = """
DROP TRIGGER IF EXISTS inventory_ledger_append_only ON inventory_stockmovement;
DROP FUNCTION IF EXISTS inventory_ledger_reject_change();
"""


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]
    operations = [migrations.RunSQL(SQL, REVERSE)]
