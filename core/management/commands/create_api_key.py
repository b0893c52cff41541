from django.core.management.base import BaseCommand, CommandError

from core.auth import api_key_create
from core.models import SCOPES


class Command(BaseCommand):
    help = "Create an API key; the key is printed alone on the last line and cannot be shown again."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--scopes", default="", help=f"comma-separated: {','.join(SCOPES)}")

    def handle(self, *args, name, scopes, **options):
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        try:
            key, plaintext = api_key_create(name=name, scopes=wanted)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"Created API key '{key.name}' with scopes {key.scopes or '(none)'}; store it now:")
        self.stdout.write(plaintext)
