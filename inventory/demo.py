"""The demo catalog `seed_demo` creates: a few locations and SKUs with stock, through services.

Idempotent: existing rows are kept; initial stock is received once, keyed by event key. Other
apps add their part (channels pointed at the simulator) in `demo_seed_extensions`.
"""

from __future__ import annotations

from inventory import services
from inventory.models import Location, Sku

LOCATIONS = [
    ("wh-main", "Main warehouse", "warehouse", 10),
    ("store-soho", "SoHo store", "store", 20),
    ("3pl-east", "East coast 3PL", "3pl", 30),
]
SKUS = [
    ("TSHIRT-BLK-M", "T-shirt black M", 2, {"wh-main": 120, "store-soho": 15}),
    ("TSHIRT-BLK-L", "T-shirt black L", 2, {"wh-main": 80, "store-soho": 10}),
    ("HOODIE-GRY-M", "Hoodie grey M", 1, {"wh-main": 40, "3pl-east": 25}),
    ("MUG-LOGO", "Logo mug", 5, {"wh-main": 300}),
    ("SNEAKER-42", "Limited sneaker size 42", 0, {"wh-main": 12}),
]


def demo_seed() -> dict:
    for code, name, kind, priority in LOCATIONS:
        Location.objects.get_or_create(code=code, defaults={"name": name, "kind": kind, "priority": priority})
    for code, name, safety, stock in SKUS:
        if not Sku.objects.filter(code=code).exists():
            services.sku_create(code=code, name=name, safety_stock=safety)
        for location, quantity in stock.items():
            services.stock_receive(
                sku=code, location=location, quantity=quantity,
                context=services.MovementContext(source="demo", reference="initial stock",
                                                 event_key=f"demo:initial:{code}:{location}"),
            )
    summary = {"locations": Location.objects.count(), "skus": Sku.objects.count()}
    for extension in demo_seed_extensions():
        summary.update(extension() or {})
    return summary


def demo_seed_extensions():
    """Other apps' demo parts, in the order settings.DEMO_SEED_EXTENSIONS names them (inventory
    never imports the apps above it)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    return [import_string(path) for path in getattr(settings, "DEMO_SEED_EXTENSIONS", ())]
