"""Admin groups read alerts; operations also see subscriptions and deliveries (and retry dead
deliveries, an admin action) and may remove a subscription."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUPS = {
    "Merchandisers": ["analytics.view_alert"],
    "Operations": ["analytics.view_alert", "analytics.view_alertsubscription", "analytics.delete_alertsubscription",
                   "analytics.view_alertdelivery"],
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
    dependencies = [("analytics", "0003_alerts"), ("analytics", "0002_groups")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
