"""Drop indexes that only cost writes (docs/performance.md, session 7).

- Single-column foreign-key indexes that a composite index already leads with: PostgreSQL
  uses the composite for the same lookups (and for the PROTECT/CASCADE checks).
- The `varchar_pattern_ops` index Django adds beside the unique index of `request_key`, for
  LIKE 'prefix%' queries, which nothing runs on it. Django's model state does not track it,
  hence RunSQL with its generated name (an AlterField of the column would create it again).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0009_ledger_redundant_indexes'),
        ('reservations', '0004_bundles'),
    ]

    operations = [
        migrations.AlterField(
            model_name='reservationline',
            name='sku',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='reservation_lines', to='inventory.sku'),
        ),
        # Django's LIKE index beside the unique index of request_key (see above).
        migrations.RunSQL(
            'DROP INDEX IF EXISTS "reservations_reservation_request_key_ee1c2c0d_like"',
            reverse_sql='CREATE INDEX IF NOT EXISTS "reservations_reservation_request_key_ee1c2c0d_like" ON "reservations_reservation" '
                        '("request_key" varchar_pattern_ops)'),
    ]
