from django.core.management.base import BaseCommand

from inventory.demo import demo_seed


class Command(BaseCommand):
    help = "Create the demo catalog, locations, stock and simulator-backed channels (idempotent)."

    def handle(self, *args, **options):
        summary = demo_seed()
        self.stdout.write(f"demo catalog ready: {summary}")
