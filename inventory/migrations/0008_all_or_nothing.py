"""stockline_all_or_nothing(ok): the guard of one-statement stock changes (inventory.one_statement).

Raises SQLSTATE SL001 unless `ok` is true, which undoes everything the calling statement did."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION stockline_all_or_nothing(ok boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'stock changed underneath a one-statement change' USING ERRCODE = 'SL001';
    END IF;
    RETURN true;
END
$$
"""


class Migration(migrations.Migration):

    dependencies = [
        ("inventory", "0007_bundles"),
    ]

    operations = [
        migrations.RunSQL(CREATE, reverse_sql="DROP FUNCTION IF EXISTS stockline_all_or_nothing(boolean)"),
    ]
