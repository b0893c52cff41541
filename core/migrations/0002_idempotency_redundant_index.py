"""Drop the single-column api_key index: idempotency_unique_key (api_key, key) leads with it and
serves the same lookups; every Idempotency-Key claim paid for both (docs/performance.md, session 7)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
    ]

    operations = [
        migrations.AlterField(
            model_name='idempotencyrecord',
            name='api_key',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, to='core.apikey'),
        ),
    ]
