"""The combined checkout statement probes the rows it wants (docs/performance.md, session 10).

Its plan, as PostgreSQL runs it once the connection has prepared it (a generic plan), on 1,100
SKUs with a position each: the SKUs are found by code and the positions by SKU through their
indexes. With PostgreSQL's default random_page_cost (4) the planner priced those probes as disk
seeks and hashed every SKU and every position instead, for each batch of checkouts; the
application's connections run with DB_RANDOM_PAGE_COST (1.1), the usual value for data in memory.
The plan is read from auto_explain, sent to this connection as a notice.
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from inventory.models import Location, Sku, StockPosition
from inventory.services import MovementContext
from reservations.group_commit import Request, _run

pytestmark = pytest.mark.django_db


def _request(code: str) -> Request:
    return Request(code=code, quantity=1, channel=None, order_ref="", ttl=60, created_by=None,
                   context=MovementContext(source="api"), request_key=None, claim=None)


def test_the_combined_checkout_finds_its_skus_and_positions_through_their_indexes():
    location = Location.objects.create(code="wh", name="wh")
    skus = Sku.objects.bulk_create([Sku(code=f"PLAN-{n:04d}", name=f"plan {n}") for n in range(1100)])
    StockPosition.objects.bulk_create([StockPosition(sku=s, location=location, on_hand=1000) for s in skus])
    notices: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE inventory_sku; ANALYZE inventory_stockposition")
        try:
            with transaction.atomic():
                cursor.execute("LOAD 'auto_explain'")
        except DatabaseError:  # an external PostgreSQL whose role may not load it
            pytest.skip("LOAD 'auto_explain' needs a superuser role (the embedded server's is one)")
        cursor.execute("SET plan_cache_mode = force_generic_plan")
    raw = connection.connection
    raw.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    try:
        for n in range(7):  # psycopg prepares it on its sixth run (DB_PREPARE_THRESHOLD)
            if n == 6:
                with connection.cursor() as cursor:
                    cursor.execute("SET auto_explain.log_min_duration = 0; SET auto_explain.log_level = 'notice'")
            _run([_request(f"PLAN-{(n * 8 + k) * 13 % 1100:04d}") for k in range(8)])
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET auto_explain.log_min_duration; RESET auto_explain.log_level; RESET plan_cache_mode")
    plan = "\n".join(text for text in notices if "Insert on reservations_reservation" in text)
    assert plan, notices
    assert "Seq Scan on inventory_sku" not in plan, plan
    assert "Seq Scan on inventory_stockposition" not in plan, plan
    assert StockPosition.objects.filter(reserved=1).count() == 56  # every checkout was held
