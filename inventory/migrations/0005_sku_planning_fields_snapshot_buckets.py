"""SKU planning fields (lead time, reorder point, dynamic safety stock) and bucketed snapshots:
one row per position and 5-minute bucket, the runs that claim each bucket, each position's last
snapshotted version, and the hourly rollup (docs/analytics.md).

Existing snapshot rows are kept: each is given the bucket of its `taken_at` and its position's SKU
and location; where one bucket holds several rows of a position (beat ran twice), the newest
stays. Runs and marks are rebuilt from what remains."""

import django.db.models.deletion
from django.db import migrations, models

FILL_EXISTING = """
UPDATE inventory_stocksnapshot s
SET bucket = to_timestamp(floor(extract(epoch FROM s.taken_at) / 300) * 300),
    sku_id = p.sku_id, location_id = p.location_id
FROM inventory_stockposition p WHERE p.id = s.position_id;

DELETE FROM inventory_stocksnapshot s
USING inventory_stocksnapshot newer
WHERE newer.position_id = s.position_id AND newer.bucket = s.bucket
  AND (newer.taken_at, newer.id) > (s.taken_at, s.id);

INSERT INTO inventory_snapshotrun (bucket, taken_at, baseline, positions, duration_ms, rolled_up)
SELECT bucket, MAX(taken_at), false, COUNT(*), 0, false
FROM inventory_stocksnapshot GROUP BY bucket;

INSERT INTO inventory_snapshotmark (position_id, version, bucket, hourly_version)
SELECT DISTINCT ON (position_id) position_id, version, bucket, NULL
FROM inventory_stocksnapshot ORDER BY position_id, bucket DESC;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0004_stockmovement_reservation'),
    ]

    operations = [
        migrations.AddField(
            model_name='sku',
            name='lead_time_days',
            field=models.PositiveIntegerField(default=7),
        ),
        migrations.AddField(
            model_name='sku',
            name='reorder_point',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='sku',
            name='dynamic_safety_stock',
            field=models.BooleanField(default=False),
        ),
        migrations.CreateModel(
            name='SnapshotMark',
            fields=[
                ('position', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='inventory.stockposition')),
                ('version', models.BigIntegerField()),
                ('bucket', models.DateTimeField()),
                ('hourly_version', models.BigIntegerField(null=True)),
            ],
        ),
        migrations.CreateModel(
            name='SnapshotRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('bucket', models.DateTimeField(unique=True)),
                ('taken_at', models.DateTimeField()),
                ('baseline', models.BooleanField(default=False)),
                ('positions', models.PositiveIntegerField(default=0)),
                ('duration_ms', models.FloatField(default=0)),
                ('rolled_up', models.BooleanField(default=False)),
            ],
            options={
                'indexes': [models.Index(condition=models.Q(('rolled_up', False)), fields=['bucket'], name='snapshotrun_unrolled')],
            },
        ),
        migrations.CreateModel(
            name='StockSnapshotHourly',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.DateTimeField()),
                ('bucket', models.DateTimeField()),
                ('on_hand', models.BigIntegerField()),
                ('reserved', models.BigIntegerField()),
                ('version', models.BigIntegerField()),
                ('location', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='inventory.location')),
                ('position', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='inventory.stockposition')),
                ('sku', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='inventory.sku')),
            ],
            options={
                'verbose_name': 'hourly stock snapshot',
                'indexes': [models.Index(fields=['sku', 'hour'], name='snapshothourly_sku_hour'), models.Index(fields=['hour'], name='snapshothourly_hour')],
                'constraints': [models.UniqueConstraint(fields=('position', 'hour'), name='snapshothourly_unique_position_hour')],
            },
        ),
        migrations.RemoveIndex(
            model_name='stocksnapshot',
            name='snapshot_position_newest',
        ),
        migrations.AlterField(
            model_name='stocksnapshot',
            name='taken_at',
            field=models.DateTimeField(),
        ),
        migrations.AlterField(
            model_name='stocksnapshot',
            name='position',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='snapshots', to='inventory.stockposition'),
        ),
        migrations.AddField(
            model_name='stocksnapshot',
            name='baseline',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='stocksnapshot',
            name='bucket',
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name='stocksnapshot',
            name='location',
            field=models.ForeignKey(db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='inventory.location'),
        ),
        migrations.AddField(
            model_name='stocksnapshot',
            name='sku',
            field=models.ForeignKey(db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='inventory.sku'),
        ),
        migrations.RunSQL(FILL_EXISTING, migrations.RunSQL.noop),
        migrations.AlterField(
            model_name='stocksnapshot',
            name='bucket',
            field=models.DateTimeField(),
        ),
        migrations.AlterField(
            model_name='stocksnapshot',
            name='location',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='inventory.location'),
        ),
        migrations.AlterField(
            model_name='stocksnapshot',
            name='sku',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='inventory.sku'),
        ),
        migrations.AddConstraint(
            model_name='stocksnapshot',
            constraint=models.UniqueConstraint(fields=('position', 'bucket'), name='snapshot_unique_position_bucket'),
        ),
        migrations.AddIndex(
            model_name='stocksnapshot',
            index=models.Index(fields=['sku', 'bucket'], name='snapshot_sku_bucket'),
        ),
        migrations.AddIndex(
            model_name='stocksnapshot',
            index=models.Index(fields=['bucket'], name='snapshot_bucket'),
        ),
    ]
