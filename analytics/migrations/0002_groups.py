"""Admin groups read what analytics adds: merchandisers the safety-stock history and daily sales
behind velocities, operations those plus the snapshot runs and hourly rollups. Nobody changes
these rows by hand (read-only admins)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUPS = {
    "Merchandisers": [
        "analytics.view_safetystockchange", "analytics.view_dailysales",
        "inventory.view_stocksnapshot", "inventory.view_stocksnapshothourly",
    ],
    "Operations": [
        "analytics.view_safetystockchange", "analytics.view_dailysales", "analytics.view_jobmark",
        "inventory.view_stocksnapshothourly", "inventory.view_snapshotrun",
    ],
}


def grant(apps, schema_editor):
    for config in apps.get_app_configs():
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0001_initial"),
        ("inventory", "0005_sku_planning_fields_snapshot_buckets"),
        ("inventory", "0003_groups"),
    ]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
