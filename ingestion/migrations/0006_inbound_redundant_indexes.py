"""Drop indexes that only cost writes (docs/performance.md, session 7).

- Single-column foreign-key indexes that a composite index already leads with: PostgreSQL
  uses the composite for the same lookups (and for the PROTECT/CASCADE checks).
- The `varchar_pattern_ops` index Django adds beside the unique index of `dedup_key`, for
  LIKE 'prefix%' queries, which nothing runs on it. Django's model state does not track it,
  hence RunSQL with its generated name (an AlterField of the column would create it again).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('channels', '0006_listing_attribute_indexes'),
        ('ingestion', '0005_inboundevent_autovacuum'),
    ]

    operations = [
        migrations.AlterField(
            model_name='inboundevent',
            name='channel',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='inbound_events', to='channels.channel'),
        ),
        # Django's LIKE index beside the unique index of dedup_key (see above).
        migrations.RunSQL(
            'DROP INDEX IF EXISTS "ingestion_inboundevent_dedup_key_e87e5285_like"',
            reverse_sql='CREATE INDEX IF NOT EXISTS "ingestion_inboundevent_dedup_key_e87e5285_like" ON "ingestion_inboundevent" '
                        '("dedup_key" varchar_pattern_ops)'),
    ]
