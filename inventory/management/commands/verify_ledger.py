from django.core.management.base import BaseCommand

from inventory.selectors import ledger_drift


class Command(BaseCommand):
    help = "Check that every position equals the sums of its ledger rows. Reports drift; repairs nothing."

    def handle(self, *args, **options):
        drift = ledger_drift()
        if not drift:
            self.stdout.write("ledger ok: every position matches its ledger")
            return
        for row in drift:
            self.stdout.write(
                f"DRIFT position {row['position_id']} {row['sku']}@{row['location']}: "
                f"on_hand {row['on_hand']} vs ledger {row['ledger_on_hand']}, "
                f"reserved {row['reserved']} vs ledger {row['ledger_reserved']}, "
                f"version {row['version']} vs {row['ledger_rows']} rows"
            )
        raise SystemExit(1)
