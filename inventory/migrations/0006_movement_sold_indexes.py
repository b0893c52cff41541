"""Partial, covering indexes over the rows that count as units sold (analytics): built CONCURRENTLY, so a
large ledger keeps taking writes while they build (hence a non-atomic migration)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('inventory', '0005_sku_planning_fields_snapshot_buckets'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='stockmovement',
            index=models.Index(condition=models.Q(('type__in', ('sale', 'reservation_commit'))), fields=['sku', 'occurred_at'], include=['on_hand_delta', 'recorded_at'], name='movement_sold_sku_occurred'),
        ),
        AddIndexConcurrently(
            model_name='stockmovement',
            index=models.Index(condition=models.Q(('type__in', ('sale', 'reservation_commit'))), fields=['occurred_at'], include=['sku', 'on_hand_delta', 'recorded_at'], name='movement_sold_occurred'),
        ),
    ]
