"""First-start setup for `./dev up`: the admin user and the demo catalog. Idempotent."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the admin user (password from DJANGO_SUPERUSER_PASSWORD or generated once) and the demo."

    def handle(self, *args, **options):
        import os

        User = get_user_model()
        password_file = settings.DATA_DIR / "admin-password"
        wanted = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        user = User.objects.filter(username="admin").first()
        if user is None:
            password = wanted or secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@example.com", password)
            if not wanted:
                # Shown by `./dev up` at every start; readable only by this user.
                password_file.write_text(password)
                password_file.chmod(0o600)
            call_command("seed_demo")
        elif wanted and not user.check_password(wanted):
            user.set_password(wanted)
            user.save(update_fields=["password"])
