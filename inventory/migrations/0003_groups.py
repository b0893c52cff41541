"""Admin groups. Merchandisers run the catalog and adjust stock (through the services' admin
form); Operations watch stock and the ledger (channel health and dead letters are added by the
channels app). Nobody can change or delete ledger rows: the admin forbids it and so does the
database trigger."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUPS = {
    "Merchandisers": [
        "inventory.add_location", "inventory.change_location", "inventory.view_location",
        "inventory.add_sku", "inventory.change_sku", "inventory.view_sku",
        "inventory.view_stockposition", "inventory.change_stockposition",  # the "adjust stock" form
        "inventory.view_stockmovement",
    ],
    "Operations": [
        "inventory.view_location", "inventory.view_sku", "inventory.view_stockposition",
        "inventory.view_stockmovement", "inventory.view_stocksnapshot",
    ],
}


def create_groups(apps, schema_editor):
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
        ("inventory", "0002_ledger_append_only"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
