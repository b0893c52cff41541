"""Drop the database's foreign-key constraint of inbound events on their channel (the model keeps
the relation and PROTECT). Its check at every intake's commit share-locked the channel's row, and
concurrent webhook acks of one channel made PostgreSQL build a multixact per ack (docs/ingestion.md,
session 11). Channels are never deleted."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('channels', '0006_listing_attribute_indexes'),
        ('ingestion', '0006_inbound_redundant_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='inboundevent',
            name='channel',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='inbound_events', to='channels.channel'),
        ),
    ]
