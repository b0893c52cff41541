"""Drop indexes that only cost writes (docs/performance.md, session 7).

- Single-column foreign-key indexes that a composite index already leads with: PostgreSQL
  uses the composite for the same lookups (and for the PROTECT/CASCADE checks).
- The `varchar_pattern_ops` index Django adds beside the unique index of `event_key`, for
  LIKE 'prefix%' queries, which nothing runs on it. Django's model state does not track it,
  hence RunSQL with its generated name (an AlterField of the column would create it again).

Measured with pgbench on the benchmark database (877,000 ledger rows), alternating: inserting
80 ledger rows took 1.74-1.86 ms with the ledger's 12 indexes, 1.28-1.44 ms without these 3.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0008_all_or_nothing'),
    ]

    operations = [
        migrations.AlterField(
            model_name='stockmovement',
            name='position',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='movements', to='inventory.stockposition'),
        ),
        migrations.AlterField(
            model_name='stockmovement',
            name='sku',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='movements', to='inventory.sku'),
        ),
        # Django's LIKE index beside the unique index of event_key (see above).
        migrations.RunSQL(
            'DROP INDEX IF EXISTS "inventory_stockmovement_event_key_50e4f798_like"',
            reverse_sql='CREATE INDEX IF NOT EXISTS "inventory_stockmovement_event_key_50e4f798_like" ON "inventory_stockmovement" '
                        '("event_key" varchar_pattern_ops)'),
    ]
